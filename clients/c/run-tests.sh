#!/usr/bin/env bash
# Tests of the C library against the real keyseat binary.
#
#   bash clients/c/run-tests.sh            # from anywhere
#
# 1. `cargo test -p keyseat-c`: the crate's unit tests, and the check that
#    include/keyseat.h is what cbindgen makes of the sources now;
# 2. builds libkeyseat_c (.so and .a) and, unless KEYSEAT_BIN names one,
#    the server;
# 3. compiles tests/keyseat_test.c and harness.c with gcc (-Wall -Wextra -Werror) twice:
#    linked to the static library, and to the shared one; compiles the
#    example (examples/hold_a_seat.c) and checks that the header also
#    compiles as C++;
# 4. runs the static build, then the shared build once under valgrind
#    (--error-exitcode=1 --leak-check=full; the one suppression, for a
#    block Rust's standard library keeps per C thread, is explained in
#    tests/valgrind.supp).
# Set KEYSEAT_C_VALGRIND=0 to skip the valgrind run (CI never does).
# Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
lib="$target/debug"

# docs/clients.md shows examples/hold_a_seat.c (less its first comment).
if ! diff <(sed -n '/^### Example/,/^### Tests/p' docs/clients.md | sed -n '/^```c$/,/^```$/p' | sed '1d;$d') \
  <(sed '1,3d' "$here/examples/hold_a_seat.c") >/dev/null; then
  echo "docs/clients.md's C example is not clients/c/examples/hold_a_seat.c" >&2
  exit 1
fi

echo "== cargo test -p keyseat-c (unit tests, header up to date)"
cargo test --locked -p keyseat-c

echo "== cargo build -p keyseat-c (libkeyseat_c.so, libkeyseat_c.a)"
cargo build --locked -p keyseat-c
if [ -z "${KEYSEAT_BIN:-}" ]; then
  echo "== cargo build --locked (the server)"
  cargo build --locked --bin keyseat
  KEYSEAT_BIN="$lib/keyseat"
fi
export KEYSEAT_BIN

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
flags=(-std=c11 -Wall -Wextra -Werror -g -I"$here/include")
echo "== gcc: the C tests against the static and the shared library"
# The static library's system dependencies, as rustc lists them
# (`--print native-static-libs`).
sources=("$here/tests/keyseat_test.c" "$here/tests/harness.c")
gcc "${flags[@]}" "${sources[@]}" -o "$out/keyseat_test_static" \
  "$lib/libkeyseat_c.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl
gcc "${flags[@]}" "${sources[@]}" -o "$out/keyseat_test_shared" \
  -L"$lib" -lkeyseat_c -Wl,-rpath,"$lib" -pthread
# The example docs/clients.md shows compiles and links too.
gcc "${flags[@]}" "$here/examples/hold_a_seat.c" -o "$out/hold_a_seat" \
  -L"$lib" -lkeyseat_c -Wl,-rpath,"$lib"
if command -v g++ >/dev/null 2>&1; then
  echo '#include "keyseat.h"' | g++ -x c++ -fsyntax-only -Wall -Werror -I"$here/include" -
fi

echo "== the C tests (static library)"
"$out/keyseat_test_static"

if [ "${KEYSEAT_C_VALGRIND:-1}" = 0 ]; then
  echo "== valgrind skipped (KEYSEAT_C_VALGRIND=0)"
  exit 0
fi
if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind not found: install Debian's valgrind package (.ci/run does)" >&2
  exit 1
fi
echo "== the C tests under valgrind (shared library)"
# Only this process is checked (the servers it starts are not traced). A
# memory error or a leak (definite or possible) fails the run.
if ! KEYSEAT_C_UNDER_VALGRIND=1 valgrind --error-exitcode=1 --leak-check=full --log-file="$out/valgrind.log" \
  --suppressions="$here/tests/valgrind.supp" \
  "$out/keyseat_test_shared"; then
  cat "$out/valgrind.log" >&2
  echo "valgrind found errors (above)" >&2
  exit 1
fi
grep -E "definitely lost|indirectly lost|possibly lost|suppressed:|ERROR SUMMARY" "$out/valgrind.log" | sed 's/^==[0-9]*== */valgrind: /'
