#!/usr/bin/env bash
# Tests of the TypeScript/Node client against the real keyseat binary.
#
#   bash clients/typescript/run-tests.sh            # from anywhere
#
# Installs the pinned dev dependencies (TypeScript, Node's types) with
# `npm ci`, builds the package (ESM + CommonJS + declarations), builds the
# server with `cargo build --locked` unless KEYSEAT_BIN names a binary,
# runs the tests with Node's own runner (node --test), then packs the
# package with `npm pack` and installs the tarball into a scratch project
# that loads it with require() and with import, and type-checks a
# TypeScript consumer against the installed declarations. Without node or
# npm it skips, except under CI (CI set), where that fails.
# Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ -n "${CI:-}" ]; then
    echo "node and npm (Node 18+) are needed for the TypeScript client's tests" >&2
    exit 1
  fi
  echo "== node or npm not found: skipping the TypeScript client's tests"
  exit 0
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
  echo "Node 18+ is needed (found $(node --version))" >&2
  exit 1
fi

cd "$here"
echo "== npm ci (clients/typescript: typescript and @types/node, pinned)"
npm ci --no-audit --no-fund --loglevel=error

echo "== npm run build"
npm run --silent build

if [ -z "${KEYSEAT_BIN:-}" ]; then
  echo "== cargo build --locked"
  (cd "$repo" && cargo build --locked)
  export KEYSEAT_BIN="$repo/target/debug/keyseat"
fi
if [ ! -x "$KEYSEAT_BIN" ]; then
  echo "keyseat binary not found at $KEYSEAT_BIN" >&2
  exit 2
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "== npm pack, and the tarball installed into a scratch project"
tarball="$(npm pack --silent --pack-destination "$scratch" | tail -1)"
echo "packed $tarball"
tar -tzf "$scratch/$tarball" | sort > "$scratch/files.txt"
for f in package/dist/esm/index.js package/dist/esm/index.d.ts package/dist/cjs/index.js package/dist/cjs/index.d.ts package/README.md; do
  grep -qx "$f" "$scratch/files.txt" || { echo "the tarball lacks $f" >&2; exit 1; }
done
if grep -q '^package/\(src\|test\|node_modules\)/' "$scratch/files.txt"; then
  echo "the tarball carries sources, tests or node_modules" >&2
  exit 1
fi
mkdir "$scratch/app"
(
  cd "$scratch/app"
  printf '{"name":"scratch-app","version":"1.0.0","private":true}\n' > package.json
  npm install --no-audit --no-fund --loglevel=error "$scratch/$tarball"
  node -e '
    const ks = require("keyseat-client");
    if (typeof ks.Client !== "function" || !ks.isAccessKey("ks_Rp7Jc4afS8V51Ng4i88Z0Msy6bpALhDm2k5E6F")) process.exit(1);
    try { new ks.Client("http://127.0.0.1:9", "ks_typo"); process.exit(1); } catch (e) { if (!(e instanceof ks.InvalidKeyFormat)) process.exit(1); }
    console.log("require(\"keyseat-client\"): ok (CommonJS)");
  '
  node --input-type=module -e '
    import { Client, isAccessKey, KeyseatError } from "keyseat-client";
    if (typeof Client !== "function" || isAccessKey("nope") || typeof KeyseatError !== "function") process.exit(1);
    console.log("import from \"keyseat-client\": ok (ES module)");
  '
  cat > consumer.ts <<'TS'
import { Client, LostInfo, SeatsFull, type SessionState } from "keyseat-client";
const client = new Client("http://127.0.0.1:9", "ks_Rp7Jc4afS8V51Ng4i88Z0Msy6bpALhDm2k5E6F", { deviceName: "ts" });
export async function run(): Promise<SessionState> {
  const session = await client.start();
  session.onLost((info: LostInfo) => console.log(info.reason, info.deviceName));
  return session.state;
}
export const isFull = (e: unknown): boolean => e instanceof SeatsFull && e.maxSessions === 1;
TS
  for mod in NodeNext:NodeNext CommonJS:Node10; do
    node "$here/node_modules/typescript/bin/tsc" --noEmit --strict --target ES2022 --types node --typeRoots "$here/node_modules/@types" \
      --module "${mod%%:*}" --moduleResolution "${mod##*:}" consumer.ts
  done
  echo "a TypeScript consumer type-checks against the installed declarations (NodeNext and CommonJS)"
)

echo "== the Electron example's syntax (node --check; Electron itself is not installed)"
for f in examples/electron/*.js; do node --check "$f"; done

echo "== node --test (server: $KEYSEAT_BIN)"
node --test test/*.test.mjs
