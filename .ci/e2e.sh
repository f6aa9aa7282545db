#!/usr/bin/env bash
# End-to-end browser test of the dashboard (/admin) in Debian's headless
# chromium, driven by playwright-core from npm (tests/e2e/).
#
#   KEYSEAT_BIN=$PWD/target/debug/keyseat bash .ci/e2e.sh                # the test
#   KEYSEAT_BIN=$PWD/target/debug/keyseat bash .ci/e2e.sh --screenshots  # the test, and refresh docs/screenshots/*.png
#
# It builds nothing: the server binary comes from KEYSEAT_BIN [target/debug/keyseat].
# E2E_TIMEOUT [600] bounds the whole browser run, in seconds.
# It installs what is missing: chromium and chromium-driver with apt-get when
# CHROMIUM [/usr/bin/chromium] is absent, and tests/e2e's pinned npm packages
# (`npm ci`, never playwright's own browsers) when they are not installed.
#
# The server runs on a free port with a throw-away database, a random admin
# token and rate limits off, and is stopped however the test ends. The exit
# status is the test's (non-zero on any failed step), or 1 when the server
# logged an error or panicked.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=test
case "${1:-}" in
    "") ;;
    --screenshots) MODE=screenshots ;;
    *) echo "usage: $0 [--screenshots]" >&2; exit 2 ;;
esac

BIN=${KEYSEAT_BIN:-target/debug/keyseat}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$BIN" ] || { echo "e2e.sh: no keyseat binary at $BIN (cargo build first)" >&2; exit 2; }
command -v node >/dev/null 2>&1 || { echo "e2e.sh: node (18 or newer) and npm are needed" >&2; exit 2; }

if [ ! -x "$CHROMIUM" ]; then
    if [ "$CHROMIUM" != /usr/bin/chromium ]; then
        echo "e2e.sh: no browser at CHROMIUM=$CHROMIUM" >&2
        exit 2
    fi
    echo "== installing chromium and chromium-driver (apt-get)"
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
    [ -x "$CHROMIUM" ] || { echo "e2e.sh: apt-get did not install $CHROMIUM" >&2; exit 2; }
fi

PINNED=$(node -p "require('./tests/e2e/package-lock.json').packages['node_modules/playwright-core'].version")
INSTALLED=$(node -p "try { require('./tests/e2e/node_modules/playwright-core/package.json').version } catch (e) { '' }")
if [ "$PINNED" != "$INSTALLED" ]; then
    echo "== npm ci (tests/e2e: playwright-core $PINNED)"
    (cd tests/e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A long session timeout: a loaded machine must not expire the test's
# sessions halfway through.
TOKEN="e2e-admin-token-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
KEYSEAT_DATABASE="$WORK/keyseat.db" \
KEYSEAT_LISTEN=127.0.0.1:0 \
KEYSEAT_ADMIN_TOKEN="$TOKEN" \
KEYSEAT_RATE_LIMITS=off \
KEYSEAT_SESSION_TIMEOUT_SECONDS=900 \
KEYSEAT_LOG=warn,keyseat=info \
    env -u KEYSEAT_BIN "$BIN" serve 2>"$WORK/server.log" &
SERVER_PID=$!

# The ready line names the real address: "listening on http://127.0.0.1:PORT".
BASE=
for _ in $(seq 1 150); do
    BASE=$(grep -so 'listening on http://[0-9.:]*' "$WORK/server.log" | head -1 | sed 's/listening on //') || true
    [ -n "$BASE" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "e2e.sh: the server exited:" >&2; cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$BASE" ] || { echo "e2e.sh: the server did not start listening" >&2; cat "$WORK/server.log" >&2; exit 1; }
HEALTHY=
for _ in $(seq 1 100); do
    if node -e 'fetch(process.argv[1] + "/health").then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$BASE"; then
        HEALTHY=1
        break
    fi
    sleep 0.1
done
[ -n "$HEALTHY" ] || { echo "e2e.sh: $BASE/health never answered 200" >&2; cat "$WORK/server.log" >&2; exit 1; }
echo "== server: $BASE"

SHOTS=
[ "$MODE" = screenshots ] && SHOTS="$PWD/docs/screenshots"

set +e
KEYSEAT_URL="$BASE" \
KEYSEAT_ADMIN_TOKEN="$TOKEN" \
CHROMIUM="$CHROMIUM" \
E2E_SCREENSHOTS="$SHOTS" \
    timeout "${E2E_TIMEOUT:-600}" node tests/e2e/dashboard.test.js
STATUS=$?
[ "$STATUS" -eq 124 ] && echo "e2e.sh: the test took longer than ${E2E_TIMEOUT:-600} s" >&2
set -e

if grep -q ' ERROR \|panicked' "$WORK/server.log"; then
    echo "e2e.sh: the server logged errors:" >&2
    grep ' ERROR \|panicked' "$WORK/server.log" | head -20 >&2
    STATUS=1
fi
if [ "$STATUS" -ne 0 ]; then
    echo "e2e.sh: FAILED; the server log's last lines:" >&2
    tail -40 "$WORK/server.log" >&2
fi
exit $STATUS
