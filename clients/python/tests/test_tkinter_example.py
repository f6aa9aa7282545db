"""The Tkinter example: it compiles everywhere; where a display is available
(``DISPLAY`` set, or ``Xvfb`` installed) it is driven for real: device A's
window starts a session and reports device B's takeover."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from keyseat_client import Client

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tkinter_app.py"


def test_the_example_compiles():
    py_compile.compile(str(EXAMPLE), doraise=True)


@pytest.fixture
def display():
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no display and no Xvfb")
    for n in range(91, 120):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            break
    proc = subprocess.Popen(
        [xvfb, f":{n}", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not os.path.exists(f"/tmp/.X11-unix/X{n}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip("Xvfb did not start")
        time.sleep(0.05)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{n}"
    try:
        yield f":{n}"
    finally:
        if old is None:
            del os.environ["DISPLAY"]
        else:
            os.environ["DISPLAY"] = old
        proc.terminate()
        proc.wait(5)


def test_the_example_reports_a_takeover(server, key, display, measure):
    tk = pytest.importorskip("tkinter")
    spec = importlib.util.spec_from_file_location("tkinter_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    shown = []
    # Modal dialogs would block the test: record them instead.
    for name in ("showinfo", "showwarning", "showerror"):
        setattr(example.messagebox, name, lambda title, text, _n=name: shown.append((_n, text)))
    root = tk.Tk()
    try:
        app = example.LicensedApp(root, server.url, key, "Laptop A")

        def run_until(condition, limit):
            """Runs Tk's real main loop (so callbacks from the heartbeat
            thread go through root.after as in the app) until `condition`."""
            deadline = time.monotonic() + limit

            def check():
                if condition() or time.monotonic() > deadline:
                    root.quit()
                else:
                    root.after(10, check)

            root.after(10, check)
            root.mainloop()
            assert condition(), app.status.get()

        app.start()
        run_until(lambda: app.session is not None, 5)
        assert app.status.get().startswith("Licensed")
        b = Client(server.url, key, device_name="Laptop B").start()
        taken_at = time.monotonic()
        run_until(lambda: shown, 3)
        measure(
            f"Tkinter example: takeover shown in A's window {time.monotonic() - taken_at:.3f} s "
            "after B's start (interval 1 s)"
        )
        assert shown == [
            ("showwarning", 'Device "Laptop B" started with your license; this window stopped.')
        ]
        assert "Laptop B" in app.status.get()
        assert app.session is None and str(app.start_button.cget("state")) == "normal"
        assert b.end() is True
    finally:
        root.destroy()
