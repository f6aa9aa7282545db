"""Fixtures: a real ``keyseat serve`` process (port 0, temp database, short
intervals), keys made through its admin API, and a summary of the timings
measured by the tests. No mocks of the server anywhere."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[3]
ADMIN_TOKEN = "python-client-tests-admin-token-0123456789"

# Loopback never goes through a proxy, whatever the environment says.
os.environ["NO_PROXY"] = ",".join(
    x for x in (os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost") if x
)
os.environ["no_proxy"] = os.environ["NO_PROXY"]

_measurements: List[str] = []


def b64url(data: bytes) -> str:
    """base64url without padding (JWS, JWK and the pinned key's text)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def keyseat_bin() -> str:
    path = os.environ.get("KEYSEAT_BIN") or str(REPO / "target" / "debug" / "keyseat")
    if not os.path.isfile(path):
        pytest.exit(
            f"keyseat binary not found at {path}: run `cargo build` in {REPO} "
            "or set KEYSEAT_BIN",
            returncode=2,
        )
    return path


def clean_env() -> Dict[str, str]:
    """The environment without KEYSEAT_* (so the flags alone decide)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYSEAT_")}


class Server:
    """One `keyseat serve` process on a temp database; restartable on the
    same file and port."""

    def __init__(self, directory: Path, interval: int = 1, timeout: int = 3) -> None:
        self.db = directory / "k.db"
        self.interval = interval
        self.timeout = timeout
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.url = ""
        self.log: List[str] = []

    def start(self, port: int = 0) -> "Server":
        args = [
            keyseat_bin(),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--database",
            str(self.db),
            "--admin-token",
            ADMIN_TOKEN,
            "--heartbeat-interval-seconds",
            str(self.interval),
            "--session-timeout-seconds",
            str(self.timeout),
            "--rate-limits",
            "off",
        ]
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=clean_env(),
            text=True,
        )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def drain() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.log.append(line.rstrip("\n"))
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + 20
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                proc.kill()
                raise RuntimeError("keyseat serve did not get ready:\n" + "\n".join(self.log))
            if line is None:
                proc.wait()
                raise RuntimeError(
                    f"keyseat serve exited with {proc.returncode}:\n" + "\n".join(self.log)
                )
            m = re.search(r"listening on (http://[0-9.]+:(\d+))", line)
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
                break
        self.proc = proc
        return self

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def restart(self) -> None:
        self.stop()
        self.start(self.port)

    # -- HTTP helpers (plain urllib, independent of the package under test) --

    def call(
        self, method: str, path: str, body: Optional[Dict[str, Any]] = None, admin: bool = False
    ) -> Tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if admin:
            req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def create_key(self, **fields: Any) -> Dict[str, Any]:
        """POST /api/admin/keys; the answer (with `access_key`)."""
        status, body = self.call("POST", "/api/admin/keys", fields, admin=True)
        assert status == 201, body
        return body

    def key(self, **fields: Any) -> str:
        return self.create_key(**fields)["access_key"]

    def pinned_key(self) -> str:
        """What `keyseat signing-key show --pin` prints for this database."""
        out = subprocess.run(
            [keyseat_bin(), "--database", str(self.db), "signing-key", "show", "--pin"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def live_sessions(self, access_key: str) -> List[Dict[str, Any]]:
        status, body = self.call("POST", "/api/session/status", {"access_key": access_key})
        assert status == 200, body
        return body["sessions"]

    def wait_live(self, access_key: str, n: int, limit: float = 5.0) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + limit
        while True:
            live = self.live_sessions(access_key)
            if len(live) == n:
                return live
            assert time.monotonic() < deadline, f"never reached {n} live session(s): {live}"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Shared server: heartbeat every 1 s, timeout 3 s."""
    s = Server(tmp_path_factory.mktemp("shared")).start()
    yield s
    s.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """A factory for a server of the test's own (stopped at the end)."""
    made: List[Server] = []

    def make(interval: int = 1, timeout: int = 3) -> Server:
        d = tmp_path / f"server{len(made)}"
        d.mkdir()
        s = Server(d, interval, timeout).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def key(server: Server) -> str:
    """A fresh key on the shared server (one seat, takeover)."""
    return server.key(label="python client test")


@pytest.fixture
def measure() -> Any:
    """Records a line for the end-of-run summary (shown even with -q)."""
    return _measurements.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _measurements:
        terminalreporter.section("keyseat client timings")
        for line in _measurements:
            terminalreporter.write_line(line)


@pytest.fixture
def python() -> str:
    return sys.executable
