#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for keyseat's tests and CI.
#
#   bash .ci/postgres.sh start DIR              # create if needed, start, print URL
#   bash .ci/postgres.sh stop DIR [fast|immediate|smart]   (default fast)
#   bash .ci/postgres.sh url DIR                # print the URL
#   bash .ci/postgres.sh destroy DIR            # stop (immediate) and rm -rf DIR
#
# `start` prints exactly one line on stdout:
#   postgres://keyseat:PASSWORD@127.0.0.1:PORT/postgres
# and nothing else there (messages go to stderr), so callers can do
# URL=$(bash .ci/postgres.sh start DIR). The port is kept in DIR/port, so a
# `start` after a `stop` gives the same URL (outage tests restart the
# database and expect their servers to reconnect to the same address).
#
# Layout of DIR: data/ (the cluster), port, password, log (the server log),
# and the unix socket (unix_socket_directories=DIR, so clusters never share
# /var/run/postgresql).
#
# initdb and postgres refuse to run as root, so as root every PostgreSQL
# command runs as the unprivileged system user keyseat-pg (created with
# useradd if missing; KEYSEAT_PG_USER to choose another), and DIR is chown'd
# to it. DIR's parent directories must then be searchable by that user
# (/tmp is; /root usually is not).
#
# Settings, read at every `start` (the defaults favour test speed, a crash
# of the machine losing the throwaway data is fine):
#   KEYSEAT_PG_FSYNC=off              fsync
#   KEYSEAT_PG_FULL_PAGE_WRITES=off   full_page_writes
#   KEYSEAT_PG_MAX_CONNECTIONS=300    several servers and parallel tests connect
#   KEYSEAT_PG_OPTIONS="-c name=value ..."  any further server options
#   KEYSEAT_PG_BIN=/path/to/bin       where initdb/pg_ctl are (default: the
#                                     newest /usr/lib/postgresql/*/bin, else PATH)
set -euo pipefail

die() {
  echo "postgres.sh: $*" >&2
  exit 1
}

usage() {
  cat >&2 <<'EOF'
usage: postgres.sh start DIR
       postgres.sh stop DIR [fast|immediate|smart]
       postgres.sh url DIR
       postgres.sh destroy DIR
EOF
  exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
[ -n "$2" ] || die "DIR is empty"
# Absolute, because commands run from DIR (see run_pg) and the socket path
# goes into the server's settings.
case $2 in
  /*) DIR=$2 ;;
  *) DIR=$PWD/$2 ;;
esac
DIR=${DIR%/}
DATA=$DIR/data

# The PostgreSQL binaries: Debian keeps them off PATH, one directory per
# major version.
find_bin() {
  if [ -n "${KEYSEAT_PG_BIN:-}" ]; then
    [ -x "$KEYSEAT_PG_BIN/initdb" ] || die "KEYSEAT_PG_BIN=$KEYSEAT_PG_BIN has no initdb"
    PG_BIN=$KEYSEAT_PG_BIN
    return
  fi
  local newest
  newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$newest" ] && [ -x "$newest/initdb" ]; then
    PG_BIN=$newest
  elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(command -v initdb)")
  else
    die "no PostgreSQL binaries (initdb, pg_ctl): install them (Debian: apt-get install postgresql) or set KEYSEAT_PG_BIN"
  fi
}

# As root: the unprivileged user PostgreSQL runs as.
PG_USER=
if [ "$(id -u)" -eq 0 ]; then
  PG_USER=${KEYSEAT_PG_USER:-keyseat-pg}
fi

ensure_user() {
  [ -n "$PG_USER" ] || return 0
  if ! id -u "$PG_USER" >/dev/null 2>&1; then
    command -v useradd >/dev/null 2>&1 || die "running as root and no useradd to create the user $PG_USER"
    # --system: no aging, a uid below 1000; no home, no login shell (runuser
    # -u does not need one).
    useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_USER" ||
      die "could not create the user $PG_USER"
    echo "postgres.sh: created the system user $PG_USER (initdb refuses to run as root)" >&2
  fi
}

# Runs a command as the cluster's owner: as root through runuser, else as
# ourselves. From DIR, so the postgres user never starts in a directory it
# cannot read (such as /root).
run_pg() {
  if [ -n "$PG_USER" ]; then
    (cd "$DIR" && runuser -u "$PG_USER" -- "$@")
  else
    (cd "$DIR" && "$@")
  fi
}

is_running() {
  [ -f "$DATA/PG_VERSION" ] || return 1
  run_pg "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

url() {
  [ -f "$DIR/port" ] && [ -f "$DIR/password" ] ||
    die "no cluster in $DIR (no port or password file): run 'postgres.sh start $DIR' first"
  echo "postgres://keyseat:$(cat "$DIR/password")@127.0.0.1:$(cat "$DIR/port")/postgres"
}

# True when something accepts connections on 127.0.0.1:$1.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port to try: random, below the kernel's ephemeral range, so that while
# the cluster is stopped its port is not handed to some test's bind(:0) or
# outgoing connection and `start` can reuse it.
pick_port() {
  local low=32768 top
  if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  fi
  top=$((low - 1))
  [ "$top" -gt 20000 ] || top=32767
  local port tries=0
  while :; do
    port=$((15000 + (RANDOM * 32768 + RANDOM) % (top - 15000 + 1)))
    port_in_use "$port" || break
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || die "no free port found between 15000 and $top"
  done
  echo "$port"
}

init_cluster() {
  ensure_user
  mkdir -p "$DIR" || die "cannot create $DIR"
  if [ -n "$PG_USER" ]; then
    chown "$PG_USER:" "$DIR" || die "cannot chown $DIR to $PG_USER"
    run_pg test -w "$DIR" ||
      die "$DIR is not writable by $PG_USER (is a parent directory closed to it? try a DIR under /tmp)"
  fi
  # The unix socket's path (DIR/.s.PGSQL.PORT) must fit in sun_path.
  [ ${#DIR} -le 90 ] || die "DIR is too long for a unix socket path (${#DIR} > 90 characters): $DIR"
  if [ -e "$DATA" ] && [ ! -f "$DATA/PG_VERSION" ]; then
    # A half-made cluster from an interrupted start: make it again.
    rm -rf "$DATA"
  fi
  # Hex, so the password needs no escaping in a URL.
  local password
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  [ ${#password} -eq 32 ] || die "could not read random bytes for the password"
  (umask 077 && printf '%s\n' "$password" >"$DIR/pwfile.tmp")
  [ -z "$PG_USER" ] || chown "$PG_USER:" "$DIR/pwfile.tmp"
  # -N: no fsync of the new files (throwaway); C locale and UTF8 so a fresh
  # machine without generated locales (LANG set to one that is missing)
  # still initializes.
  if ! run_pg "$PG_BIN/initdb" -D "$DATA" -U keyseat --pwfile="$DIR/pwfile.tmp" \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C -N >"$DIR/initdb.log" 2>&1; then
    cat "$DIR/initdb.log" >&2
    rm -f "$DIR/pwfile.tmp"
    die "initdb failed in $DATA (log above)"
  fi
  mv "$DIR/pwfile.tmp" "$DIR/password"
}

start_server() {
  local port=$1
  # -c on the command line, not in postgresql.conf, so the environment's
  # settings apply at every start.
  local opts="-c listen_addresses=127.0.0.1 -c port=$port"
  opts+=" -c unix_socket_directories='$DIR'"
  opts+=" -c fsync=${KEYSEAT_PG_FSYNC:-off}"
  opts+=" -c full_page_writes=${KEYSEAT_PG_FULL_PAGE_WRITES:-off}"
  opts+=" -c max_connections=${KEYSEAT_PG_MAX_CONNECTIONS:-300}"
  opts+=" ${KEYSEAT_PG_OPTIONS:-}"
  # -w: returns once the server accepts connections (or failed to start).
  run_pg "$PG_BIN/pg_ctl" start -D "$DATA" -w -t 60 -l "$DIR/log" -o "$opts" >/dev/null 2>&1
}

cmd_start() {
  find_bin
  if [ ! -f "$DATA/PG_VERSION" ]; then
    init_cluster
  else
    ensure_user
    if [ -n "$PG_USER" ]; then
      chown "$PG_USER:" "$DIR" || die "cannot chown $DIR to $PG_USER"
    fi
  fi
  if is_running; then
    url
    return
  fi
  if [ -f "$DIR/port" ]; then
    # Restart: the same port, or the callers' URL would be wrong.
    local port
    port=$(cat "$DIR/port")
    if port_in_use "$port"; then
      die "port $port (kept in $DIR/port) is taken by another process; the cluster cannot restart on the same URL"
    fi
    start_server "$port" || {
      tail -n 20 "$DIR/log" >&2 || true
      die "PostgreSQL did not start on port $port (log above, whole log in $DIR/log)"
    }
  else
    # First start: another process may bind the port picked between the
    # check and the server's bind, so a failed start tries another port.
    local tries=0 port
    while :; do
      port=$(pick_port)
      rm -f "$DIR/log"
      if start_server "$port"; then
        echo "$port" >"$DIR/port"
        break
      fi
      tries=$((tries + 1))
      if [ "$tries" -ge 5 ] || ! grep -q "could not bind\|could not create any TCP/IP sockets" "$DIR/log" 2>/dev/null; then
        tail -n 20 "$DIR/log" >&2 || true
        die "PostgreSQL did not start (log above, whole log in $DIR/log)"
      fi
      echo "postgres.sh: port $port was taken, trying another" >&2
    done
  fi
  url
}

cmd_stop() {
  local mode=${1:-fast}
  case $mode in
    fast | immediate | smart) ;;
    *) die "unknown stop mode '$mode' (fast, immediate or smart)" ;;
  esac
  [ -f "$DATA/PG_VERSION" ] || die "no cluster in $DIR"
  find_bin
  if ! is_running; then
    echo "postgres.sh: the cluster in $DIR is not running" >&2
    return 0
  fi
  run_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m "$mode" -w -t 60 >/dev/null ||
    die "pg_ctl stop -m $mode failed for $DATA (server log: $DIR/log)"
}

cmd_destroy() {
  [ -e "$DIR" ] || return 0
  if [ -f "$DATA/PG_VERSION" ]; then
    find_bin
    if is_running; then
      run_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m immediate -w -t 60 >/dev/null ||
        die "could not stop the cluster in $DATA; not removing it"
    fi
  fi
  rm -rf "$DIR" || die "could not remove $DIR"
}

case $cmd in
  start) [ $# -eq 2 ] || usage; cmd_start ;;
  stop) [ $# -le 3 ] || usage; cmd_stop "${3:-}" ;;
  url) [ $# -eq 2 ] || usage; url ;;
  destroy) [ $# -eq 2 ] || usage; cmd_destroy ;;
  *) usage ;;
esac
