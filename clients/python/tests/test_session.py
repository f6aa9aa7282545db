"""The library's promises against a real server: start/heartbeat/end; a
takeover reaches the evicted app within one interval with the other device's
name; restarts are survived; a server gone for good is reported as
unreachable after the lease and not before; end() and exit are prompt."""

from __future__ import annotations

import queue
import subprocess
import sys
import textwrap
import threading
import time

from keyseat_client import (
    Client,
    HeartbeatFailed,
    HeartbeatRecovered,
    LostReason,
    SessionLost,
    SessionState,
)


def test_start_heartbeat_end(server, key):
    session = Client(server.url, key, device_name="Device A").start()
    assert session.state is SessionState.ACTIVE and session.is_usable
    assert session.previous_session_terminated is False and session.terminated == ()
    assert session.heartbeat_interval == 1 and session.session_timeout == 3
    assert session.fence >= 1
    [live] = server.live_sessions(key)
    assert live["session_id"] == session.session_id
    assert live["device_name"] == "Device A"
    first_heartbeat = live["last_heartbeat"]
    # Heartbeats keep it alive past the 3 s timeout and move last_heartbeat.
    time.sleep(3.3)
    [live] = server.live_sessions(key)
    assert live["session_id"] == session.session_id
    assert live["last_heartbeat"] > first_heartbeat
    assert session.state is SessionState.ACTIVE and session.lease_left > 1.5
    assert session.wait_lost(0) is None
    assert session.end() is True
    assert session.state is SessionState.ENDED
    assert server.live_sessions(key) == []
    assert session.end() is False, "ending twice is harmless"
    assert session.wait_lost(0) is None


def test_takeover_is_told_with_the_other_device(
    server, key, measure
):
    a = Client(server.url, key, device_name="Device A").start()
    told: "queue.Queue[tuple]" = queue.Queue()
    a.on_lost(lambda reason, other: told.put((reason, other, threading.current_thread().name)))

    b = Client(server.url, key, device_name="Device B").start()
    superseded_at = time.monotonic()
    assert b.previous_session_terminated
    assert [t.device_name for t in b.terminated] == ["Device A"]
    assert b.terminated[0].session_id == a.session_id
    assert b.fence == a.fence + 1

    reason, other, thread = told.get(timeout=3)
    delay = time.monotonic() - superseded_at
    measure(f"takeover noticed by device A {delay:.3f} s after B's start (interval 1 s)")
    print(f"takeover noticed after {delay:.3f} s")
    assert delay <= 1.5, delay
    assert reason is LostReason.SUPERSEDED and other == "Device B"
    assert thread == "keyseat-heartbeat"
    assert a.wait_lost(0) is LostReason.SUPERSEDED
    assert a.state is SessionState.LOST and not a.is_usable
    assert a.lost is not None and a.lost.device_name == "Device B"
    assert str(a.lost) == 'superseded: device "Device B" started with the same access key'
    # A callback registered after the loss is called at once, here.
    late = []
    a.on_lost(lambda reason, other: late.append((reason, other)))
    assert late == [(LostReason.SUPERSEDED, "Device B")]
    # Called once only.
    time.sleep(0.2)
    assert told.empty()
    assert b.is_usable
    # Ending a superseded session is harmless and says it was not live.
    assert a.end() is False
    assert a.state is SessionState.LOST
    assert b.end() is True


def test_a_restart_is_survived(make_server, measure):
    srv = make_server(interval=1, timeout=4)
    key = srv.key()
    events: "queue.Queue[object]" = queue.Queue()
    session = Client(srv.url, key, on_event=events.put).start()
    lost = []
    session.on_lost(lambda *a: lost.append(a))
    time.sleep(0.2)
    stopped = time.monotonic()
    assert srv.stop() == 0, "SIGTERM stops the server cleanly"
    # Wait until the client has noticed.
    event = events.get(timeout=3)
    assert isinstance(event, HeartbeatFailed), event
    assert event.lease_left > 0 and "unreachable" in event.error
    assert session.state is SessionState.RETRYING and session.is_usable
    assert session.failed_attempts >= 1
    time.sleep(0.8)
    srv.start(srv.port)  # same database, same port
    while True:
        event = events.get(timeout=4)
        assert not isinstance(event, SessionLost), f"lost during a short outage: {event}"
        if isinstance(event, HeartbeatRecovered):
            break
    took = time.monotonic() - stopped
    measure(
        f"server restart: heartbeats recovered {took:.2f} s after the stop "
        f"({event.failed_attempts} failed attempt(s), timeout 4 s)"
    )
    assert session.state is SessionState.ACTIVE and session.failed_attempts == 0
    assert [s["session_id"] for s in srv.live_sessions(key)] == [session.session_id]
    assert lost == []
    assert session.end() is True


def test_a_server_gone_for_good_is_lost_after_the_lease_not_before(
    make_server, measure
):
    srv = make_server(interval=1, timeout=3)
    key = srv.key()
    events: "queue.Queue[tuple]" = queue.Queue()
    holder = []

    def on_event(e):
        # Seen from the heartbeat thread, as the event happens.
        events.put((time.monotonic(), e, holder[0].is_usable))

    session = Client(srv.url, key, on_event=on_event).start()
    holder.append(session)
    told: "queue.Queue[tuple]" = queue.Queue()
    session.on_lost(lambda reason, other: told.put((time.monotonic(), reason, other)))
    time.sleep(0.5)
    stopped = time.monotonic()
    srv.stop()
    # No heartbeat can succeed from now on: the lease is fixed.
    deadline = time.monotonic() + session.lease_left
    assert deadline - stopped > 3 - 1 - 0.2, "granted at most one interval before the stop"
    failures = 0
    while True:
        at, event, usable = events.get(timeout=6)
        if isinstance(event, SessionLost):
            assert not usable
            break
        assert isinstance(event, HeartbeatFailed)
        failures += 1
        assert at < deadline and usable, "usable until the lease runs out"
    lost_at, reason, other = told.get(timeout=1)
    measure(
        f"server gone: lost as unreachable {lost_at - stopped:.2f} s after the stop, "
        f"{lost_at - deadline:+.3f} s from the lease's end, after {failures} retries "
        "(timeout 3 s)"
    )
    assert reason is LostReason.UNREACHABLE and other is None
    assert lost_at >= deadline - 0.01, "not before the lease ran out"
    assert lost_at <= deadline + 0.5, "promptly after the lease ran out"
    assert failures >= 2, "retried with backoff while the lease lasted"
    assert session.state is SessionState.LOST
    assert session.lost is not None and session.lost.reason is LostReason.UNREACHABLE
    t = time.monotonic()
    assert session.end(1.0) is False, "never raises for a lost session"
    assert time.monotonic() - t < 1.5


def test_end_is_prompt_with_a_long_interval(make_server, measure):
    srv = make_server(interval=30, timeout=60)
    key = srv.key(max_sessions=2)
    client = Client(srv.url, key)
    a = client.start()
    b = client.start()
    assert a.heartbeat_interval == 30
    assert len(srv.live_sessions(key)) == 2
    time.sleep(0.2)  # both heartbeat threads are now waiting out the interval
    t = time.monotonic()
    assert a.end() is True
    end_took = time.monotonic() - t
    t = time.monotonic()
    with b:
        pass
    exit_took = time.monotonic() - t
    measure(f"end() took {end_took * 1000:.0f} ms, leaving a with block {exit_took * 1000:.0f} ms (interval 30 s)")
    assert end_took < 1.0 and exit_took < 1.0
    assert srv.live_sessions(key) == []
    assert a.state is SessionState.ENDED and b.state is SessionState.ENDED
    assert a.wait_lost(0) is None


def test_interpreter_exit_is_prompt_and_ends_the_session(make_server, measure):
    srv = make_server(interval=30, timeout=60)
    key = srv.key()
    script = textwrap.dedent(
        f"""
        from keyseat_client import Client
        s = Client({srv.url!r}, {key!r}, device_name="exiting").start()
        print(s.session_id, flush=True)
        """
    )
    t = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
    )
    took = time.monotonic() - t
    assert out.returncode == 0, out.stderr
    measure(f"a script that starts a session and exits ran in {took:.2f} s (interval 30 s)")
    assert took < 5
    assert srv.live_sessions(key) == [], "the session was ended at exit"


def test_an_admin_kick_is_told_as_revoked(server):
    # An admin kicks the session: revoked.
    key = server.create_key()
    session = Client(server.url, key["access_key"], device_name="kicked").start()
    status, _ = server.call("DELETE", f"/api/admin/sessions/{session.session_id}", admin=True)
    assert status in (200, 204)
    assert session.wait_lost(3) is LostReason.REVOKED
    assert str(session.lost) == "revoked by an administrator"

    # The key is suspended under a live session: the key is refused.
    session = Client(server.url, key["access_key"]).start()
    status, _ = server.call(
        "PATCH", f"/api/admin/keys/{key['key_id']}", {"status": "suspended"}, admin=True
    )
    assert status == 200
    reasons = []
    session.on_lost(lambda reason, other: reasons.append(reason))
    assert session.wait_lost(3) in (LostReason.KEY_REFUSED, LostReason.REVOKED)
    assert reasons == [session.lost.reason]
    assert session.end() is False
