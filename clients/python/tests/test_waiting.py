"""Waiting heartbeats (``wait_seconds``), the default: the server holds each
heartbeat until the next is due and answers at once when the session ends,
so a takeover reaches the evicted app within milliseconds; end() stays
prompt while one is held; a server that answers at once (one before the
waiting heartbeat) gets one heartbeat per interval, never a tight loop."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from keyseat_client import Client, LostReason, SessionLost, SessionState
from keyseat_client.session import HeartbeatFailed, HeartbeatRecovered
from keyseat_client.session import held_for, hold_for, next_wait


def test_the_timing_rules_match_the_other_clients():
    assert held_for(30) == 25
    assert held_for(60) == 50
    assert held_for(12) == 10
    assert held_for(2) == 1
    assert held_for(1) == 0
    assert held_for(1.5) == 0
    # After a held answer: at once; after a quick one (a server ignoring the
    # field) or a plain one: an interval.
    assert next_wait(25, 25.0, 30) == 0
    assert next_wait(25, 12.5, 30) == 0
    assert next_wait(25, 0.04, 30) == 30
    # A hold leaves room for its call and one retry: 25 s, 15 s after a held
    # one (60 s lease, 10 s calls); a short lease holds nothing.
    assert hold_for(30, 60, 10) == 25
    assert hold_for(30, 35, 10) == 15
    assert hold_for(10, 15, 10) == 0
    assert hold_for(2, 10, 3) == 1
    assert next_wait(0, 0.04, 30) == 30


class Relay:
    """A tiny HTTP proxy in front of the real server that records every
    heartbeat body (and when it came) and, with ``strip``, removes
    ``wait_seconds`` before forwarding: a server that answers at once."""

    def __init__(self, upstream: str, strip: bool = False, refuse: int = 0) -> None:
        self.upstream = upstream
        self.strip = strip
        # The first ``refuse`` heartbeats are answered 429 with Retry-After: 1.
        self.refuse = refuse
        self.heartbeats: List[Tuple[float, Dict[str, Any]]] = []
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/session/heartbeat":
                    body = json.loads(raw)
                    relay.heartbeats.append((time.monotonic(), dict(body)))
                    if relay.refuse > 0:
                        relay.refuse -= 1
                        busy = json.dumps({"error": {"code": "rate_limited",
                                                     "message": "too many requests; retry in 1 s"}}).encode()
                        self.send_response(429)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Retry-After", "1")
                        self.send_header("Content-Length", str(len(busy)))
                        self.end_headers()
                        self.wfile.write(busy)
                        return
                    if relay.strip and "wait_seconds" in body:
                        del body["wait_seconds"]
                        raw = json.dumps(body).encode()
                status, signature, answer = relay.forward(self.path, raw)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                if signature is not None:
                    self.send_header("Keyseat-Signature", signature)
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def forward(self, path: str, raw: bytes) -> Tuple[int, Optional[str], bytes]:
        req = urllib.request.Request(self.upstream + path, data=raw, method="POST")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=70) as resp:
                return resp.status, resp.headers.get("Keyseat-Signature"), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Keyseat-Signature"), e.read()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def relay() -> Iterator[Any]:
    made: List[Relay] = []

    def make(upstream: str, strip: bool = False, refuse: int = 0) -> Relay:
        r = Relay(upstream, strip, refuse)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_takeover_is_told_within_100_ms_with_a_30_s_interval(
    make_server, measure
):
    server = make_server(interval=30, timeout=60)
    key = server.key(label="waiting takeover")
    a = Client(server.url, key, device_name="Device A").start()
    assert a.heartbeat_interval == 30
    told: "queue.Queue[Tuple[float, LostReason, Optional[str], str]]" = queue.Queue()
    a.on_lost(
        lambda reason, other: told.put(
            (time.monotonic(), reason, other, threading.current_thread().name)
        )
    )
    # A's first heartbeat goes at once after the start and is held.
    time.sleep(0.5)
    assert a.state is SessionState.ACTIVE

    sent_at = time.monotonic()
    b = Client(server.url, key, device_name="Device B").start()
    assert b.previous_session_terminated
    told_at, reason, other, thread = told.get(timeout=10)
    delay = told_at - sent_at
    measure(
        f"takeover noticed by device A {delay * 1000:.1f} ms after B's start was sent "
        "(interval 30 s, waiting heartbeats)"
    )
    print(f"takeover noticed after {delay * 1000:.1f} ms")
    assert reason is LostReason.SUPERSEDED and other == "Device B"
    assert thread == "keyseat-heartbeat"
    assert delay < 0.1, delay
    assert a.state is SessionState.LOST
    b.end()


def test_end_is_prompt_while_a_heartbeat_is_held(make_server):
    server = make_server(interval=30, timeout=60)
    key = server.key(label="waiting end")
    events: List[Any] = []
    lost: List[Any] = []
    a = Client(server.url, key, device_name="Device A", on_event=events.append).start()
    a.on_lost(lambda reason, other: lost.append(reason))
    time.sleep(0.5)  # the first heartbeat is held now
    thread = a._thread
    assert thread is not None and thread.is_alive()

    t0 = time.monotonic()
    assert a.end() is True
    took = time.monotonic() - t0
    assert took < 1.0, took
    assert a.state is SessionState.ENDED and a.lost is None
    # The server wakes the held heartbeat with 410 session_ended: the thread
    # ends at once (not 25 s later) and reports nothing.
    thread.join(timeout=2)
    assert not thread.is_alive(), "the held heartbeat was not woken by the end"
    assert a.state is SessionState.ENDED and a.lost is None
    assert a.wait_lost(0) is None
    assert lost == [] and not any(isinstance(e, SessionLost) for e in events)
    assert server.live_sessions(key) == []


def test_held_heartbeats_follow_each_other_and_carry_wait_seconds(make_server, relay):
    # A lease long enough to hold within (hold_for: 10 s lease, 3 s calls -> 1).
    server = make_server(interval=2, timeout=10)
    key = server.key(label="waiting chain")
    r = relay(server.url)
    a = Client(r.url, key, timeout=3).start()
    time.sleep(5.2)
    a.end()
    beats = list(r.heartbeats)
    assert beats, "no heartbeat"
    asking = sum(b.get("wait_seconds") == 1 for _, b in beats)
    assert asking >= len(beats) - 1, beats
    # Held 1 s each and sent again at once: about five in 5 s (one per
    # interval would be two or three).
    assert 4 <= len(beats) <= 7, [round(t, 2) for t, _ in beats]
    gaps = [t2 - t1 for (t1, _), (t2, _) in zip(beats, beats[1:])]
    assert all(0.9 <= g < 1.6 for g in gaps), gaps


def test_a_server_answering_at_once_gets_one_heartbeat_per_interval(
    make_server, relay, measure
):
    server = make_server(interval=2, timeout=10)
    key = server.key(label="waiting fallback")
    r = relay(server.url, strip=True)
    a = Client(r.url, key, timeout=3).start()
    time.sleep(5.0)
    assert a.state is SessionState.ACTIVE
    a.end()
    beats = list(r.heartbeats)
    times = [round(t - beats[0][0], 2) for t, _ in beats]
    measure(f"heartbeats in 5 s against a server answering at once (interval 2 s): {times}")
    # It still asks each time (a retry after a slow answer on a loaded
    # machine may be a plain one: at most one here).
    asking = sum(b.get("wait_seconds") == 1 for _, b in beats)
    assert asking >= len(beats) - 1, "still asks"
    assert 2 <= len(beats) <= 4, times
    gaps = [t2 - t1 for (t1, _), (t2, _) in zip(beats, beats[1:])]
    assert all(g >= 1.8 for g in gaps), gaps


def test_waiting_heartbeats_off_sends_plain_ones_an_interval_apart(make_server, relay):
    server = make_server(interval=2, timeout=6)
    key = server.key(label="waiting off")
    r = relay(server.url)
    client = Client(r.url, key, waiting_heartbeats=False)
    assert client.waiting_heartbeats is False
    start = time.monotonic()
    a = client.start()
    time.sleep(4.6)
    a.end()
    beats = list(r.heartbeats)
    assert all("wait_seconds" not in b for _, b in beats), beats
    assert len(beats) == 2, [round(t - start, 2) for t, _ in beats]
    assert beats[0][0] - start >= 1.8, "the first plain heartbeat waits an interval"


def test_a_held_heartbeats_call_budget_is_the_hold_plus_the_timeout(make_server):
    # With a 1 s client timeout, a 2 s hold must not time out client-side.
    server = make_server(interval=30, timeout=60)
    key = server.key(label="waiting budget")
    api = Client(server.url, key, timeout=1.0).api
    session = Client(server.url, key, timeout=1.0, waiting_heartbeats=False).start()
    t0 = time.monotonic()
    body = api.heartbeat(key, session.session_id, wait_seconds=2)
    took = time.monotonic() - t0
    assert 1.9 <= took < 3.0, took
    assert body["session_id"] == session.session_id
    session.end()


def test_a_429_is_retried_after_its_retry_after_within_the_lease(make_server, relay):
    server = make_server(interval=1, timeout=6)
    r = relay(server.url, refuse=2)
    events: List[Any] = []
    a = Client(r.url, server.key(label="429"), on_event=events.append).start()
    deadline = time.monotonic() + 8
    while not any(isinstance(e, HeartbeatRecovered) for e in events):
        assert time.monotonic() < deadline, events
        time.sleep(0.05)
    failed = [e for e in events if isinstance(e, HeartbeatFailed)]
    assert len(failed) == 2, events
    assert "429" in str(failed[0].error), failed[0].error
    # Each retry waited at least the server's Retry-After (1 s).
    times = [t for t, _ in r.heartbeats[:3]]
    assert all(b - a >= 0.99 for a, b in zip(times, times[1:])), times
    assert a.state is SessionState.ACTIVE
    assert a.end() is True
