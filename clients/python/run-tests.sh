#!/usr/bin/env bash
# Tests of the Python client against the real keyseat binary.
#
#   bash clients/python/run-tests.sh            # from anywhere
#
# Creates (or reuses) a virtual environment in clients/python/.venv (set
# KEYSEAT_PY_VENV to use another directory, PYTHON to pick the interpreter),
# installs the package the way a user would (pip install ./clients/python)
# plus pytest and PyJWT, checks that a wheel builds, builds the server with
# `cargo build --locked` unless KEYSEAT_BIN names a binary, and runs pytest.
# Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
venv="${KEYSEAT_PY_VENV:-$here/.venv}"

if ! "$venv/bin/python" -c 'import sys; assert sys.version_info >= (3, 9)' >/dev/null 2>&1; then
  echo "== creating a virtual environment in $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"

echo "== pip install ./clients/python[verify] pytest PyJWT"
# Pinned, so a new pytest, cryptography or PyJWT release cannot change what
# CI runs; installing the [verify] extra beside the pin checks that its range
# admits the pinned version. PyJWT is a test dependency only: the
# independent check of the lease token (tests/test_lease_pyjwt.py).
"$py" -m pip install --quiet --disable-pip-version-check "pytest==9.0.2" "cryptography==51.0.1" "PyJWT==2.15.1" "$here[verify]"
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$here"

echo "== building a wheel"
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$wheels" "$here"
ls "$wheels"/keyseat_client-*.whl >/dev/null
echo "built $(basename "$wheels"/keyseat_client-*.whl)"

if [ -z "${KEYSEAT_BIN:-}" ]; then
  echo "== cargo build --locked"
  (cd "$repo" && cargo build --locked)
  export KEYSEAT_BIN="$repo/target/debug/keyseat"
fi

# CI must run the Node verifier and the PyJWT checks, not skip them
# (tests/test_signing.py, tests/test_lease_pyjwt.py).
if [ -n "${CI:-}" ]; then
  export KEYSEAT_REQUIRE_NODE="${KEYSEAT_REQUIRE_NODE:-1}"
  export KEYSEAT_REQUIRE_PYJWT="${KEYSEAT_REQUIRE_PYJWT:-1}"
fi

# The lease-token check in Node (clients/node-verify/lease.mjs) uses npm's
# jose, pinned in its package-lock.json: `npm ci` when the installed copy is
# not the pinned one (as .ci/e2e.sh does for playwright-core). Without node
# the test skips, or fails under CI (KEYSEAT_REQUIRE_NODE).
node_verify="$repo/clients/node-verify"
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  pinned_jose=$(cd "$node_verify" && node -p "require('./package-lock.json').packages['node_modules/jose'].version")
  installed_jose=$(cd "$node_verify" && node -p "try { require('./node_modules/jose/package.json').version } catch (e) { '' }")
  if [ "$pinned_jose" != "$installed_jose" ]; then
    echo "== npm ci (clients/node-verify: jose $pinned_jose)"
    (cd "$node_verify" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

echo "== pytest (server: $KEYSEAT_BIN)"
cd "$here"
"$py" -m pytest -q -p no:cacheprovider tests
