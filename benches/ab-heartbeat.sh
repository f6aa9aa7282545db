#!/usr/bin/env bash
# Heartbeat throughput of two keyseat release binaries, alternated in one
# run, so a change's cost is a ratio measured under the same machine load:
#   bash benches/ab-heartbeat.sh BEFORE_BIN AFTER_BIN [ROUNDS]
# Each round starts each binary on a fresh database with default settings,
# creates a key, starts one session and drives its heartbeat with wrk
# (Debian's wrk package; 1 thread, 32 connections, 4 s). Needs curl, python3.
set -euo pipefail
before=$1; after=$2; rounds=${3:-3}
tok=bench-admin-token-0123456789
one() {
  local bin=$1 dir; dir=$(mktemp -d)
  local port; port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  KEYSEAT_ADMIN_TOKEN=$tok KEYSEAT_LOG=warn "$bin" serve --database "$dir/k.db" --listen 127.0.0.1:$port 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/health >/dev/null && break; sleep 0.05; done
  local key; key=$(curl -s -H "Authorization: Bearer $tok" -H 'content-type: application/json' -d '{}' http://127.0.0.1:$port/api/admin/keys | python3 -c 'import sys,json;print(json.load(sys.stdin)["access_key"])')
  local sid; sid=$(curl -s -H 'content-type: application/json' -d "{\"access_key\":\"$key\",\"device\":{\"name\":\"bench\"}}" http://127.0.0.1:$port/api/session/start | python3 -c 'import sys,json;print(json.load(sys.stdin)["session_id"])')
  cat > "$dir/hb.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"access_key":"$key","session_id":"$sid"}'
LUA
  local rps; rps=$(wrk -t1 -c32 -d4s -s "$dir/hb.lua" http://127.0.0.1:$port/api/session/heartbeat | awk '/Requests\/sec/ {print $2}')
  kill -TERM $pid; wait $pid 2>/dev/null || true
  rm -rf "$dir"
  echo "$rps"
}
for r in $(seq "$rounds"); do
  b=$(one "$before"); a=$(one "$after")
  echo "round $r: before $b req/s, after $a req/s, after/before $(python3 -c "print(round($a/$b,3))")"
done
