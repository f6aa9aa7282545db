#!/usr/bin/env bash
# Heartbeat and start throughput of two keyseat release binaries, alternated
# in one run, so a change's cost is a ratio measured under the same machine
# load:
#   bash benches/ab-heartbeat.sh BEFORE_BIN AFTER_BIN [ROUNDS]
# Each round starts each binary on a fresh database with default settings
# (rate limits off, so starts are not refused), creates a key, and drives
# with wrk (Debian's wrk package; 1 thread, 32 connections, 4 s each):
#   - heartbeats of one live session (answered from memory);
#   - starts with a new session id each (every one a takeover written
#     through the database writer, the costliest request).
# Needs curl, python3.
set -euo pipefail
before=$1; after=$2; rounds=${3:-3}
tok=bench-admin-token-0123456789
one() {
  local bin=$1 dir; dir=$(mktemp -d)
  local port; port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  KEYSEAT_ADMIN_TOKEN=$tok KEYSEAT_LOG=warn KEYSEAT_RATE_LIMITS=off "$bin" serve --database "$dir/k.db" --listen 127.0.0.1:$port 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/health >/dev/null && break; sleep 0.05; done
  local key; key=$(curl -s -H "Authorization: Bearer $tok" -H 'content-type: application/json' -d '{}' http://127.0.0.1:$port/api/admin/keys | python3 -c 'import sys,json;print(json.load(sys.stdin)["access_key"])')
  local sid; sid=$(curl -s -H 'content-type: application/json' -d "{\"access_key\":\"$key\",\"device\":{\"name\":\"bench\"}}" http://127.0.0.1:$port/api/session/start | python3 -c 'import sys,json;print(json.load(sys.stdin)["session_id"])')
  cat > "$dir/hb.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"access_key":"$key","session_id":"$sid"}'
LUA
  cat > "$dir/start.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format('{"access_key":"$key","session_id":"bench-%d-%08d","device":{"name":"bench"}}', math.random(1, 1e9), n))
end
LUA
  local hb st
  hb=$(rate "$dir/hb.lua" http://127.0.0.1:$port/api/session/heartbeat)
  st=$(rate "$dir/start.lua" http://127.0.0.1:$port/api/session/start)
  kill -TERM $pid; wait $pid 2>/dev/null || true
  rm -rf "$dir"
  echo "$hb $st"
}
# Requests per second of a 4 s wrk run; a run with error answers (not 2xx)
# is no measurement of the route, so it stops the benchmark.
rate() {
  local out; out=$(wrk -t1 -c32 -d4s -s "$1" "$2")
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "ab-heartbeat.sh: error answers from $2:" >&2; echo "$out" >&2; exit 1
  fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
ratio() { python3 -c "print(round($2/$1,3))"; }
for r in $(seq "$rounds"); do
  read -r bh bs < <(one "$before")
  read -r ah as < <(one "$after")
  [ -n "${bs:-}" ] && [ -n "${as:-}" ] || { echo "ab-heartbeat.sh: a run failed (see above)" >&2; exit 1; }
  echo "round $r: heartbeat before $bh after $ah req/s (after/before $(ratio "$bh" "$ah")); start before $bs after $as req/s (after/before $(ratio "$bs" "$as"))"
done
