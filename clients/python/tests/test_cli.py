"""`python -m keyseat_client`: the same lines and exit codes as
`keyseat client` (0 SIGTERM, 3 superseded, 4 expired, 5 revoked, 6 key
refused, 7 unreachable, 8 seats full)."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

import pytest

from conftest import clean_env


class Proc:
    """The entry point in a subprocess, its stdout read line by line."""

    def __init__(
        self,
        url: str,
        key: str,
        device: Optional[str] = None,
        extra: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        args = [sys.executable, "-m", "keyseat_client", "--server", url, "--key", key]
        if device is not None:
            args += ["--device-name", device]
        self.p = subprocess.Popen(
            args + list(extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env() if env is None else env,
            text=True,
        )
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.out: List[str] = []
        self.err = ""
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read_out(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.out.append(line.rstrip("\n"))
            self.lines.put(line)
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.p.stderr is not None
        self.err = self.p.stderr.read()

    def wait_line(self, text: str, limit: float = 5.0) -> str:
        deadline = time.monotonic() + limit
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} within {limit} s: {self.out}")
            if line is None:
                pytest.fail(f"exited before a line with {text!r}: {self.text()}")
            if text in line:
                return line

    def wait_exit(self, limit: float = 5.0) -> int:
        try:
            self.p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            pytest.fail(f"did not exit within {limit} s: {self.out}")
        for t in self._readers:
            t.join(timeout=2)
        return self.p.returncode

    def text(self) -> str:
        return "\n".join(self.out) + "\n" + self.err

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_superseded_exits_3_and_sigterm_exits_0(server, key):
    a = Proc(server.url, key, "Device A")
    a.wait_line("started session")
    b = Proc(server.url, key, "Device B")
    b.wait_line("started session")
    warning = b.wait_line("warning:")
    assert 'previous session on another device was disconnected: "Device A"' in warning
    assert a.wait_exit() == 3, a.text()
    assert 'lost: superseded: device "Device B" started with the same access key' in a.out
    [live] = server.live_sessions(key)
    assert live["device_name"] == "Device B"
    # SIGTERM: B ends its session and exits 0.
    b.p.send_signal(signal.SIGTERM)
    assert b.wait_exit() == 0, b.text()
    assert b.out[-1] == "ended by user"
    assert re.fullmatch(
        r'started session [0-9a-f-]{36} \(fence \d+\) as "Device B"; '
        r"heartbeat every 1 s, timeout 3 s",
        b.out[0],
    ), b.out[0]
    assert server.live_sessions(key) == []


def test_ctrl_c_exits_0_and_ends_the_session(server, key):
    p = Proc(server.url, key, "ctrl-c")
    p.wait_line("started session")
    p.p.send_signal(signal.SIGINT)
    assert p.wait_exit() == 0, p.text()
    assert "ended by user" in p.out
    assert server.live_sessions(key) == []


def test_revoked_exits_5(server, key):
    p = Proc(server.url, key, "kicked")
    line = p.wait_line("started session")
    session_id = line.split()[2]
    status, _ = server.call("DELETE", f"/api/admin/sessions/{session_id}", admin=True)
    assert status in (200, 204)
    assert p.wait_exit() == 5, p.text()
    assert "lost: revoked by an administrator" in p.out


def test_expired_exits_4(server, key):
    # A frozen process misses its heartbeats; when it thaws, the server says
    # the session expired.
    p = Proc(server.url, key, "frozen")
    p.wait_line("started session")
    p.p.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 6
        while server.live_sessions(key):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        p.p.send_signal(signal.SIGCONT)
    assert p.wait_exit() == 4, p.text()
    assert "lost: expired: the server missed this device's heartbeats" in p.out


def test_refusals_at_start_exit_6_7_8(server, key):
    from keyseat_client.keys import checksum_of

    unknown = "ks_" + "q" * 32
    unknown += checksum_of(unknown)
    reject = server.key(on_conflict="reject")
    holder = Proc(server.url, reject, "holder")
    typo = Proc(server.url, key[:-1] + ("A" if key[-1] != "A" else "B"), "typo")
    unknown_p = Proc(server.url, unknown, "unknown")
    unreachable = Proc(f"http://127.0.0.1:{closed_port()}", key, "nowhere")
    bad_url = Proc("ftp://example.com", key, "x")
    try:
        holder.wait_line("started session")
        late = Proc(server.url, reject, "late")
        assert late.wait_exit() == 8, late.text()
        assert "409 seats_full" in late.err
    finally:
        holder.p.send_signal(signal.SIGTERM)
        assert holder.wait_exit() == 0

    assert typo.wait_exit() == 6, typo.text()
    assert typo.err.startswith("keyseat: cannot start a session: the access key is not valid:")
    assert unknown_p.wait_exit() == 6, unknown_p.text()
    assert "401 invalid_key" in unknown_p.err
    assert unreachable.wait_exit(10) == 7, unreachable.text()
    assert "server unreachable" in unreachable.err
    assert bad_url.wait_exit() == 1, bad_url.text()
    assert "http:// or https://" in bad_url.err


def test_a_public_key_beginning_with_a_dash_is_taken_as_the_value():
    # One base64url key in 64 begins with "-", which argparse alone would
    # take for an unknown option.
    from keyseat_client import cli

    key = "-" + "A" * 42
    args = cli._parse_args(["--server", "http://x", "--key", "ks_x", "--public-key", key])
    assert args.public_key == key
    args = cli._parse_args(["--server", "http://x", "--key", "ks_x", f"--public-key={key}"])
    assert args.public_key == key


def test_the_cli_exit_codes_are_the_documented_ones(server, key):
    """docs/clients.md's exit-code table is what the entry point returns:
    the constants against the table here (the Rust side checks the same
    table against ``keyseat client``), the cheap codes run here, the
    others in their own tests: 0/3 ``test_superseded_exits_3_and_sigterm_exits_0``,
    4 ``test_expired_exits_4``, 5 ``test_revoked_exits_5``, 6/7/8
    ``test_refusals_at_start_exit_6_7_8``, 9 ``test_the_cli_exits_9_for_an_impostor``,
    10 ``test_the_cli_exits_10_when_the_key_refuses_the_borrow``, 11
    ``test_cli_ca_file_ssl_cert_file_and_refusals``."""
    import pathlib

    from keyseat_client import cli

    docs = pathlib.Path(__file__).resolve().parents[3] / "docs" / "clients.md"
    table = dict(
        (m.group(2), int(m.group(1)))
        for m in re.finditer(r"^\| (\d+) \| `(\w+)` \|", docs.read_text(), re.M)
    )
    assert table, "no exit-code table in docs/clients.md"
    assert {name: getattr(cli, name) for name in table} == table
    typo = Proc(server.url, key[:-1] + ("A" if key[-1] != "A" else "B"), "typo")
    assert typo.wait_exit() == table["KEY_REFUSED"], typo.text()
    nowhere = Proc(f"http://127.0.0.1:{closed_port()}", key, "nowhere")
    assert nowhere.wait_exit(10) == table["UNREACHABLE"], nowhere.text()


def test_a_sigterm_while_starting_ends_the_session(server, key):
    # Like tests/client.rs `a_sigterm_while_starting_ends_the_session`: a
    # proxy holds the start's connection until the signal has been sent, so
    # the signal comes while the session is still starting. The start is
    # finished, then the session it got is ended: the seat is free at once.
    upstream = ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)
    url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    accepted = threading.Event()
    release = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def serve() -> None:
        while True:
            try:
                device, _ = proxy.accept()
            except OSError:
                return
            accepted.set()
            release.wait()
            up = socket.create_connection(upstream)
            threading.Thread(target=pipe, args=(device, up), daemon=True).start()
            threading.Thread(target=pipe, args=(up, device), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    p = Proc(url, key, "starting")
    try:
        assert accepted.wait(10), "the start connected"
        time.sleep(0.2)  # the request is sent and waiting for its answer
        p.p.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        release.set()
        assert p.wait_exit(10) == 0, p.text()
        assert "ended by user" in p.out, p.text()
        assert server.live_sessions(key) == [], "the seat is free at once"
    finally:
        p.kill()
        proxy.close()


def test_a_second_signal_while_starting_gives_up_at_once(key):
    # A server that never answers must not hold Ctrl-C hostage: the first
    # signal waits for the start, a second one gives up at once with
    # 128 + its number (Python only; the Rust client waits for the start).
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)
    held: List[socket.socket] = []
    accepted = threading.Event()

    def serve() -> None:
        while True:
            try:
                device, _ = proxy.accept()
            except OSError:
                return
            held.append(device)
            accepted.set()

    threading.Thread(target=serve, daemon=True).start()
    p = Proc(f"http://127.0.0.1:{proxy.getsockname()[1]}", key, "hung")
    try:
        assert accepted.wait(10), "the start connected"
        time.sleep(0.2)
        p.p.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert p.p.poll() is None, "a first signal waits for the start"
        p.p.send_signal(signal.SIGTERM)
        assert p.wait_exit(3) == 128 + signal.SIGTERM, p.text()
        assert "ended by user" not in p.out
    finally:
        p.kill()
        proxy.close()
        for s in held:
            s.close()
