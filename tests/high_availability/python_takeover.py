"""A takeover across servers with the Python client, run by
tests/high_availability/main.rs against nginx in front of three keyseat servers
(KEYSEAT_HA_URL, a one-seat key in KEYSEAT_HA_KEY): device A starts,
device B starts on the same key (round robin puts it on another server),
and A's on_lost callback must hear "superseded" naming B. Prints one JSON
line: what A's client reported and how long after B's start."""

import json
import os
import queue
import sys
import time

from keyseat_client import Client, LostReason

url = os.environ["KEYSEAT_HA_URL"]
key = os.environ["KEYSEAT_HA_KEY"]

a = Client(url, key, device_name="Python A").start()
told = queue.Queue()
a.on_lost(lambda reason, other: told.put((reason, other, time.monotonic())))

b = Client(url, key, device_name="Python B").start()
b_started = time.monotonic()
if not b.previous_session_terminated or [t.device_name for t in b.terminated] != ["Python A"]:
    sys.exit(f"B's start did not end A's session: {b.terminated!r}")

try:
    reason, other, at = told.get(timeout=5)
except queue.Empty:
    sys.exit(f"A never learnt it was superseded (state {a.state!r})")
if a.wait_lost(0) is not LostReason.SUPERSEDED:
    sys.exit(f"A's state after the callback: {a.state!r}")
print(
    json.dumps(
        {
            "reason": reason.value,
            "by_device": other,
            "message": str(a.lost),
            "latency_s": round(at - b_started, 3),
        }
    )
)
a.end()
if b.end() is not True:
    sys.exit("B was not live at the end")
