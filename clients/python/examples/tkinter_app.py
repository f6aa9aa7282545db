"""A Tkinter desktop app licensed with keyseat.

Run it against your server (after ``pip install ./clients/python``)::

    python examples/tkinter_app.py --server http://127.0.0.1:8080 --key ks_... --device-name "Laptop A"

then start a second copy (or ``python -m keyseat_client``) with the same key
and another device name: the first window reports that device B took over.

How the news reaches the UI: the library calls back from its heartbeat
thread, and Tk may only be touched from the thread running ``mainloop``.
So every callback only puts a message on a ``queue.Queue`` and asks Tk to
drain it with ``root.after(0, ...)``; the draining, and every widget
update, happens on the Tk thread. (A slow poll of the same queue backs this
up for Tcl builds without thread support.)
"""

from __future__ import annotations

import argparse
import queue
import socket
import sys
import threading
from typing import Any, Optional, Tuple

try:
    import tkinter as tk
    from tkinter import messagebox
except ImportError:  # pragma: no cover - depends on the Python build
    sys.exit(
        "This example needs Tkinter, which this Python lacks.\n"
        "  Debian/Ubuntu: sudo apt install python3-tk\n"
        "  Fedora:        sudo dnf install python3-tkinter\n"
        "  macOS (Homebrew): brew install python-tk\n"
        "Or try the terminal client: python -m keyseat_client --server URL --key KEY"
    )

from keyseat_client import (
    Client,
    HeartbeatFailed,
    HeartbeatRecovered,
    KeyseatError,
    LostReason,
    SeatsFull,
    Session,
    SessionEvent,
)

Message = Tuple[str, Any]


class LicensedApp:
    """One window: key, device name, Start/Stop, and what the license is
    doing."""

    def __init__(self, root: tk.Tk, server: str, key: str, device: str) -> None:
        self.root = root
        self.session: Optional[Session] = None
        self.inbox: "queue.Queue[Message]" = queue.Queue()

        root.title("Solver (licensed with keyseat)")
        root.protocol("WM_DELETE_WINDOW", self.quit)
        frame = tk.Frame(root, padx=12, pady=12)
        frame.pack(fill="both", expand=True)

        self.server = tk.StringVar(value=server)
        self.key = tk.StringVar(value=key)
        self.device = tk.StringVar(value=device)
        for row, (label, var, show) in enumerate(
            [
                ("Server", self.server, ""),
                ("Access key", self.key, "\u2022"),
                ("Device name", self.device, ""),
            ]
        ):
            tk.Label(frame, text=label).grid(row=row, column=0, sticky="w")
            tk.Entry(frame, textvariable=var, width=48, show=show).grid(
                row=row, column=1, sticky="we", pady=2
            )

        buttons = tk.Frame(frame)
        buttons.grid(row=3, column=0, columnspan=2, pady=(8, 4), sticky="w")
        self.start_button = tk.Button(buttons, text="Start", width=10, command=self.start)
        self.start_button.pack(side="left")
        self.stop_button = tk.Button(
            buttons, text="Stop", width=10, command=self.stop, state="disabled"
        )
        self.stop_button.pack(side="left", padx=6)

        self.status = tk.StringVar(value="Not licensed: press Start.")
        tk.Label(frame, textvariable=self.status, fg="#333", wraplength=420, justify="left").grid(
            row=4, column=0, columnspan=2, sticky="w", pady=(8, 0)
        )
        self._poll()

    # -- from any thread: only the queue and root.after ---------------------

    def post(self, kind: str, payload: Any = None) -> None:
        """Called on the heartbeat (or start) thread: hand over to Tk."""
        self.inbox.put((kind, payload))
        try:
            self.root.after(0, self._drain)
        except (RuntimeError, tk.TclError):
            pass  # Tk is gone or not in its main loop: _poll picks it up.

    # -- on the Tk thread ----------------------------------------------------

    def _poll(self) -> None:
        self._drain()
        self.root.after(500, self._poll)

    def _drain(self) -> None:
        while True:
            try:
                kind, payload = self.inbox.get_nowait()
            except queue.Empty:
                return
            getattr(self, "_on_" + kind)(payload)

    def start(self) -> None:
        self.start_button.config(state="disabled")
        self.status.set("Starting\u2026")
        server, key, device = self.server.get(), self.key.get(), self.device.get()

        def work() -> None:  # the network call stays off the Tk thread
            try:
                client = Client(
                    server,
                    key,
                    device_name=device or None,
                    on_event=lambda event: self.post("event", event),
                )
                self.post("started", client.start())
            except KeyseatError as e:
                self.post("start_failed", e)

        threading.Thread(target=work, daemon=True).start()

    def _on_started(self, session: Session) -> None:
        self.session = session
        self.stop_button.config(state="normal")
        self.status.set(f"Licensed (session {session.session_id[:8]}\u2026, fence {session.fence}).")
        session.on_lost(lambda reason, other: self.post("lost", (reason, other)))
        if session.previous_session_terminated:
            names = ", ".join(f'"{t.device_name or "unnamed device"}"' for t in session.terminated)
            messagebox.showinfo(
                "License",
                f"The previous session on another device ({names}) was disconnected.",
            )

    def _on_start_failed(self, error: KeyseatError) -> None:
        self.start_button.config(state="normal")
        if isinstance(error, SeatsFull):
            text = "Every seat of this license is in use on other devices."
        else:
            text = f"Could not start: {error}"
        self.status.set(text)
        messagebox.showerror("License", text)

    def _on_event(self, event: SessionEvent) -> None:
        if isinstance(event, HeartbeatFailed):
            self.status.set(
                f"License server unreachable (attempt {event.attempt}); "
                f"still licensed for {int(event.lease_left)} s."
            )
        elif isinstance(event, HeartbeatRecovered):
            self.status.set("Licensed (connection to the license server restored).")

    def _on_lost(self, payload: Tuple[LostReason, Optional[str]]) -> None:
        reason, other = payload
        lost = self.session.lost if self.session is not None else None
        self.session = None
        self.stop_button.config(state="disabled")
        self.start_button.config(state="normal")
        if reason is LostReason.SUPERSEDED:
            text = f'Device "{other or "another device"}" started with your license; this window stopped.'
        else:
            text = f"License lost: {lost or reason}"
        self.status.set(text)
        messagebox.showwarning("License", text)

    def stop(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                session.end(2.0)
            except KeyseatError as e:
                self.status.set(f"Stopped (the server was not told: {e}).")
            else:
                self.status.set("Stopped. Not licensed: press Start.")
        self.stop_button.config(state="disabled")
        self.start_button.config(state="normal")

    def quit(self) -> None:
        self.stop()
        self.root.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--key", default="")
    parser.add_argument("--device-name", default=socket.gethostname())
    args = parser.parse_args()
    try:
        root = tk.Tk()
    except tk.TclError as e:
        sys.exit(f"Cannot open a window ({e}); is there a display?")
    LicensedApp(root, args.server, args.key, args.device_name)
    root.mainloop()


if __name__ == "__main__":
    main()
