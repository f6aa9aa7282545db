#!/usr/bin/env bash
# The Debian package end to end, as root on Debian (.ci/run calls it after
# the benchmark run has built target/release/keyseat):
#   build it (packaging/build-deb), list its files and size;
#   install it with dpkg (policy-rc.d keeps a running systemd from starting
#   it on port 8080); check the user, the state directory, the conffiles,
#   the man pages and completions;
#   check the unit with `systemd-analyze verify` and its exposure score with
#   `systemd-analyze security --offline=true` (skipped, with the reason,
#   where systemd-analyze cannot run);
#   start the installed binary with the installed config and environment
#   file as the keyseat user, without capabilities and with no_new_privs
#   (setpriv, as the unit would); check /health with `keyseat health`, a
#   key creation with the installed CLI (through the server's control
#   socket), the admin API with the token from the environment file, and a
#   session round trip with `keyseat check`;
#   `dpkg -r`: the binary goes, the config and the database stay; install
#   again: the key is still there; `dpkg --purge`: the config goes, the
#   database still stays.
#
#   bash .ci/deb.sh [--no-build]   (the flag is passed to packaging/build-deb)
#
# Everything it makes is marked (/var/lib/keyseat/.ci-deb-test) and
# removed at the end; it refuses to run where a keyseat it did not install
# is present.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

if [ "$(id -u)" -ne 0 ] || ! command -v dpkg >/dev/null 2>&1; then
  echo "deb.sh: needs root and dpkg (Debian), as in CI" >&2
  exit 1
fi

STATE=/var/lib/keyseat
MARK=$STATE/.ci-deb-test
CONFIG=/etc/keyseat/keyseat.toml
UNIT=/usr/lib/systemd/system/keyseat.service

fail() {
  echo "deb.sh: FAIL: $*" >&2
  exit 1
}

# Leaves the machine as it was: the package purged, the test's database
# and the keyseat user removed (only when this script made them).
cleanup() {
  [ -z "${server_pid:-}" ] || kill "$server_pid" 2>/dev/null || true
  [ -z "${policy_made:-}" ] || rm -f /usr/sbin/policy-rc.d
  if [ -e "$MARK" ] || [ -n "${installed_here:-}" ]; then
    dpkg --purge keyseat >/dev/null 2>&1 || true
    rm -rf "$STATE" /etc/keyseat
    userdel keyseat 2>/dev/null || true
  fi
}
trap cleanup EXIT

if dpkg -s keyseat >/dev/null 2>&1 || [ -e "$STATE" ]; then
  [ -e "$MARK" ] || fail "keyseat is installed here (or $STATE exists) and not by this test; not touching it"
  echo "== removing what an earlier run of this test left"
  cleanup
fi

echo "== building the package (packaging/build-deb $*)"
bash packaging/build-deb "$@"
deb=$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/keyseat_*.deb | head -1)
echo "== $deb: $(stat -c %s "$deb") bytes ($(du -h "$deb" | cut -f1)); its files:"
dpkg-deb -c "$deb" | awk '{printf "    %s %9s %s\n", $1, $3, $6}'

# dpkg -i, with a policy-rc.d (when there is none) so that a running
# systemd does not start the service on port 8080.
install_deb() {
  policy_made=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_made=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" || rc=$?
  [ -z "$policy_made" ] || rm -f /usr/sbin/policy-rc.d
  policy_made=
  [ "$rc" -eq 0 ] || fail "dpkg -i exited $rc"
}

echo "== dpkg -i"
installed_here=1
install_deb
touch "$MARK"

getent passwd keyseat >/dev/null || fail "no keyseat user"
[ "$(stat -c '%U:%G %a' "$STATE")" = "keyseat:keyseat 750" ] || fail "$STATE is $(stat -c '%U:%G %a' "$STATE")"
[ "$(stat -c '%a' /etc/keyseat/keyseat.env)" = 600 ] || fail "keyseat.env is not 0600"
conffiles=$(dpkg-query -W -f='${Conffiles}' keyseat)
for f in $CONFIG /etc/keyseat/keyseat.env; do
  grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile: $conffiles"
done
grep -q '^database = "/var/lib/keyseat/keyseat.db"$' $CONFIG || fail "$CONFIG does not point at $STATE"
for f in /usr/share/man/man1/keyseat.1.gz /usr/share/man/man1/keyseat-keys-create.1.gz \
  /usr/share/bash-completion/completions/keyseat /usr/share/zsh/vendor-completions/_keyseat \
  /usr/share/fish/vendor_completions.d/keyseat.fish "$UNIT"; do
  [ -s "$f" ] || fail "$f is missing"
done
zcat /usr/share/man/man1/keyseat.1.gz | grep -q '^\.TH keyseat 1' || fail "keyseat.1.gz is not a man page"
/usr/bin/keyseat --version

echo "== systemd-analyze"
if ! command -v systemd-analyze >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "   installing Debian's systemd package for systemd-analyze"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1 || true
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "   SKIPPED: systemd-analyze is not installed and could not be (Debian's systemd package)"
else
  # Documentation= is checked with man(1) where it is installed.
  man_flag=--man=yes
  command -v man >/dev/null 2>&1 || { man_flag=--man=no; echo "   (no man(1) here: Documentation= not checked)"; }
  systemd-analyze verify $man_flag "$UNIT" || fail "systemd-analyze verify $UNIT"
  echo "   verify: ok"
  score=$(systemd-analyze security --offline=true --no-pager "$UNIT" 2>&1 | sed -n 's/.*Overall exposure level for keyseat.service: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || fail "no exposure score from systemd-analyze security"
  echo "   security exposure score: $score (0 best, 10 worst)"
  awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score is above 2.0"
fi

echo "== the installed server, as the keyseat user"
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "KEYSEAT_ADMIN_TOKEN=$token" >>/etc/keyseat/keyseat.env
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
log=$(mktemp /tmp/keyseat-deb-log.XXXXXX)
# As the unit runs it: the keyseat user, no capabilities, no_new_privs, in
# the state directory, with the environment file's variables. The port is
# the only change to the installed settings (8080 may be taken here).
as_keyseat() {
  setpriv --reuid=keyseat --regid=keyseat --init-groups --no-new-privs \
    --bounding-set=-all --inh-caps=-all "$@"
}
(
  set -a
  . /etc/keyseat/keyseat.env
  set +a
  cd "$STATE"
  KEYSEAT_LISTEN=127.0.0.1:$port exec setpriv --reuid=keyseat --regid=keyseat --init-groups \
    --no-new-privs --bounding-set=-all --inh-caps=-all /usr/bin/keyseat --config $CONFIG serve
) 2>"$log" &
server_pid=$!
up=
for _ in $(seq 100); do
  if /usr/bin/keyseat health --url "$url" >/dev/null 2>&1; then up=1; break; fi
  kill -0 $server_pid 2>/dev/null || break
  sleep 0.2
done
[ -n "$up" ] || { cat "$log" >&2; fail "the installed server never answered /health"; }
/usr/bin/keyseat health --url "$url"

cli() { as_keyseat /usr/bin/keyseat --config $CONFIG "$@"; }
created=$(cli keys create --label "deb test" --json)
key=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["access_key"])' <<<"$created")
key_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["key_id"])' <<<"$created")
echo "   created $key_id with the installed CLI"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url/api/admin/keys/$key_id")
[ "$code" = 200 ] || fail "the admin API answered $code with the token from keyseat.env"
/usr/bin/keyseat check --server "$url" --key "$key" | tail -1
grep -q "key created (cli)" "$log" || fail "the server did not log the CLI's key creation"
! grep -qF -e "$key" -e "$token" "$log" || fail "the log holds the full key or the admin token"
kill -TERM $server_pid
wait $server_pid || fail "the server exited $? on SIGTERM"
server_pid=
[ "$(stat -c %U $STATE/keyseat.db)" = keyseat ] || fail "the database is not the keyseat user's"

echo "== dpkg -r: the binary goes; config and database stay"
dpkg -r keyseat
[ ! -e /usr/bin/keyseat ] || fail "/usr/bin/keyseat is still there"
[ -s $STATE/keyseat.db ] || fail "dpkg -r lost the database"
[ -e $CONFIG ] || fail "dpkg -r removed the conffile"

echo "== installed again: the key is still there"
install_deb >/dev/null
(cd "$STATE" && cli keys show "$key_id" --json) | grep -q "\"$key_id\"" || fail "the key is gone after reinstalling"

echo "== dpkg --purge: the config goes; the database stays"
dpkg --purge keyseat
[ ! -e $CONFIG ] && [ ! -e /etc/keyseat/keyseat.env ] || fail "purge left the config"
[ -s $STATE/keyseat.db ] || fail "purge lost the database"
rm -f "$log"
echo "== the package test passed in $((SECONDS - t0)) s"
