#!/usr/bin/env bash
# Property-based API test: schemathesis generates requests from the OpenAPI
# document the server serves at /openapi.json and fails on any 5xx, any
# status, content type, header or body that the document does not allow.
#
#   KEYSEAT_BIN=target/debug/keyseat .ci/schemathesis.sh
#
# Environment (all optional):
#   KEYSEAT_BIN                the server binary [target/debug/keyseat]
#   SCHEMATHESIS_VENV          where to install schemathesis [target/schemathesis-venv]
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase [40]
#   SCHEMATHESIS_SEED          random seed, for a reproducible run [20261130]
#   SCHEMATHESIS_REPORT_DIR    where the JUnit report goes [target/schemathesis-report]
#
# The server runs on a free port with a throw-away database, an admin token
# and rate limits off. Before the run this script creates keys and sessions
# and writes their real secrets and ids into a copy of the served document as
# examples (a static document cannot know them), so the happy paths are hit
# as well as the failures.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${KEYSEAT_BIN:-target/debug/keyseat}
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-40}
SEED=${SCHEMATHESIS_SEED:-20261130}
REPORT_DIR=${SCHEMATHESIS_REPORT_DIR:-$PWD/target/schemathesis-report}
VERSION=4.32.5

[ -x "$BIN" ] || { echo "schemathesis.sh: no keyseat binary at $BIN (cargo build first)" >&2; exit 2; }

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi
PY="$VENV/bin/python"

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN="schemathesis-admin-token-$RANDOM$RANDOM"
KEYSEAT_DATABASE="$WORK/keyseat.db" \
KEYSEAT_LISTEN=127.0.0.1:0 \
KEYSEAT_ADMIN_TOKEN="$TOKEN" \
KEYSEAT_RATE_LIMITS=off \
KEYSEAT_LOG=warn,keyseat=info \
    "$BIN" serve 2>"$WORK/server.log" &
SERVER_PID=$!

# The ready line names the real address: "listening on http://127.0.0.1:PORT".
BASE=
for _ in $(seq 1 100); do
    BASE=$(grep -o 'listening on http://[0-9.:]*' "$WORK/server.log" | head -1 | sed 's/listening on //') || true
    [ -n "$BASE" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$BASE" ] || { echo "schemathesis.sh: the server did not get ready" >&2; cat "$WORK/server.log" >&2; exit 1; }
echo "server: $BASE"

# Keys, sessions, and the served document with their values as examples.
"$PY" - "$BASE" "$TOKEN" "$WORK/openapi.json" <<'EOF'
import json, sys, urllib.request

base, token, out = sys.argv[1:]

def call(method, path, body=None, admin=False):
    req = urllib.request.Request(base + path, method=method)
    if admin:
        req.add_header("Authorization", "Bearer " + token)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data) as resp:
        return json.load(resp)

takeover = call("POST", "/api/admin/keys", {"label": "schemathesis takeover", "max_sessions": 2}, admin=True)
reject = call("POST", "/api/admin/keys", {"label": "schemathesis reject", "on_conflict": "reject"}, admin=True)
kickable = call("POST", "/api/admin/keys", {"label": "schemathesis kicks"}, admin=True)
secret = takeover["access_key"]
call("POST", "/api/session/start", {"access_key": secret, "session_id": "schemathesis-live-1", "device": {"name": "fuzz-pc"}})
call("POST", "/api/session/start", {"access_key": reject["access_key"], "session_id": "schemathesis-reject-1"})
call("POST", "/api/session/start", {"access_key": kickable["access_key"], "session_id": "schemathesis-kick-1"})

doc = call("GET", "/openapi.json")
schemas = doc["components"]["schemas"]

def example(prop, value):
    prop["example"] = value
    prop["examples"] = [value]

for name in ("StartBody", "SessionBody", "StatusBody"):
    example(schemas[name]["properties"]["access_key"], secret)
example(schemas["SessionBody"]["properties"]["session_id"], "schemathesis-live-1")
for path, item in doc["paths"].items():
    for op in item.values():
        for p in op.get("parameters", []):
            if p["name"] == "key_id":
                example(p, takeover["key_id"])
            elif p["name"] == "session_id" and p["in"] == "path":
                example(p, "schemathesis-kick-1")
json.dump(doc, open(out, "w"), indent=1)
print("keys:", takeover["prefix"], reject["prefix"], kickable["prefix"])
EOF

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
# Run from the temp dir: schemathesis keeps a cache (.schemathesis/) in
# its working directory.
VENV=$(cd "$VENV" && pwd)
set +e
(cd "$WORK" && "$VENV/bin/schemathesis" run "$WORK/openapi.json" \
    --url "$BASE" \
    --header "Authorization: Bearer $TOKEN" \
    --checks "$CHECKS" \
    --phases "${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}" \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 2 \
    --request-timeout 10 \
    --suppress-health-check all \
    --report junit --report-dir "$REPORT_DIR" \
    --no-color)
STATUS=$?
set -e

if grep -q ' ERROR \| panicked' "$WORK/server.log"; then
    echo "schemathesis.sh: the server logged errors:" >&2
    grep ' ERROR \| panicked' "$WORK/server.log" | head -20 >&2
    STATUS=1
fi
exit $STATUS
