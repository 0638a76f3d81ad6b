#!/usr/bin/env bash
# Several replicas on one PostgreSQL and one S3 bucket (issue 18): three replicas of the release
# binary and HAProxy with deploy/haproxy.cfg, on loopback, and the acceptance scenarios.
#
#   bash tests/replicas/run.sh [--bin PATH] [--only NAME[,NAME…]] [--keep]
#
# 1. builds the release binary (cargo build --release --locked), unless --bin names one;
# 2. installs moto[server] (tests/s3/requirements.txt) into $S3_DEPS (default
#    ~/.cache/agentskills-s3, the venv tests/s3/run.sh uses), and haproxy with apt-get if missing;
# 3. creates a database with a random name on TEST_DATABASE_URL's server (default
#    postgres://postgres@127.0.0.1:5432/test), starts moto's S3 server on a free loopback port and
#    creates a bucket there;
# 4. runs replicas_test.py, which starts r1, r2, r3 (`agentskills-mcp serve`, a data dir each,
#    AGENTSKILLS_REPLICA_ID=r1…r3, one SECRET_KEY) and HAProxy, then the scenarios: jwt, upload,
#    revoke, session, sse, concurrent, wipe, sigkill, rolling (--only picks some).
# Each scenario prints ok/FAIL lines; the exit status is non-zero when any failed. Everything it
# started is stopped and the database dropped at the end; --keep keeps the logs (the replicas',
# HAProxy's, moto's) and data dirs, and prints where.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEPS="${S3_DEPS:-$HOME/.cache/agentskills-s3}"

BIN=""
ONLY=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --bin=*) BIN="${1#--bin=}"; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    --only=*) ONLY="${1#--only=}"; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

note() { printf '\n=== %s\n' "$*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

if [ -z "$BIN" ]; then
  note "cargo build --release --locked"
  (cd "$ROOT" && cargo build --release --locked --bin agentskills-mcp)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/agentskills-mcp"
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
[ -x "$BIN" ] || die "no binary at $BIN"

if ! command -v haproxy >/dev/null 2>&1; then
  note "apt-get install haproxy"
  apt_get=(env DEBIAN_FRONTEND=noninteractive apt-get)
  if [ "$(id -u)" != 0 ]; then apt_get=(sudo "${apt_get[@]}"); fi
  "${apt_get[@]}" install -y -q haproxy || { "${apt_get[@]}" update -q && "${apt_get[@]}" install -y -q haproxy; }
fi
haproxy -v | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
# Loopback addresses, as replicas_test.py gives it (compose's names do not resolve here).
AGENTSKILLS_R1=127.0.0.1:1 AGENTSKILLS_R2=127.0.0.1:2 AGENTSKILLS_R3=127.0.0.1:3 \
  HAPROXY_BIND=127.0.0.1:1 HAPROXY_STATS_BIND=127.0.0.1:2 \
  haproxy -c -q -f "$ROOT/deploy/haproxy.cfg" || die "deploy/haproxy.cfg does not parse"

want="$(sha256sum <"$ROOT/tests/s3/requirements.txt" | cut -c1-64)"
if ! "$DEPS/venv/bin/moto_server" --help >/dev/null 2>&1 || [ "$(cat "$DEPS/.installed" 2>/dev/null)" != "$want" ]; then
  note "install moto[server] into $DEPS"
  rm -rf "$DEPS/venv"
  mkdir -p "$DEPS"
  python3 -m venv "$DEPS/venv"
  "$DEPS/venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/tests/s3/requirements.txt"
  echo "$want" >"$DEPS/.installed"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/agentskills-replicas.XXXXXX")"
mkdir -p "$WORK/pids"
ADMIN_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
DB="agentskills_replicas_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
DB_CREATED=0
MOTO_PID=""
PY_PID=""

cleanup() {
  local code=$?
  set +e  # clean up everything, whatever fails
  if [ -n "$PY_PID" ] && kill -0 "$PY_PID" 2>/dev/null; then
    kill "$PY_PID" 2>/dev/null || true  # it stops what it started
    for _ in $(seq 1 300); do kill -0 "$PY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PY_PID" 2>/dev/null || true
  fi
  # Whatever replicas_test.py started and did not stop (it records each process's id).
  for pidfile in "$WORK"/pids/*.pid; do
    [ -e "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -n "$MOTO_PID" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  if [ "$DB_CREATED" = 1 ]; then
    psql "$ADMIN_URL" -qAtc "drop database if exists \"$DB\" with (force)" >/dev/null 2>&1 ||
      echo "warning: could not drop database $DB" >&2
  fi
  if [ "$KEEP" = 1 ]; then
    echo "kept: $WORK (r1/ r2/ r3/: server.log and data; haproxy.log; moto.log)"
  else
    rm -rf "$WORK"
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note "PostgreSQL: database $DB"
pg_isready -d "$ADMIN_URL" -q 2>/dev/null || die "PostgreSQL does not answer at $ADMIN_URL (TEST_DATABASE_URL)"
psql "$ADMIN_URL" -qAtc "create database \"$DB\"" >/dev/null
DB_CREATED=1
# The same server and credentials, the new database.
DATABASE_URL="$(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path="/" + sys.argv[2])))' "$ADMIN_URL" "$DB")"

note "moto's S3 server ($("$DEPS/venv/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p'))"
MOTO_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$DEPS/venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$MOTO_PORT/" >/dev/null 2>&1 && break
  kill -0 "$MOTO_PID" 2>/dev/null || { cat "$WORK/moto.log"; die "moto_server exited"; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$MOTO_PORT/" >/dev/null || { cat "$WORK/moto.log"; die "moto_server did not start"; }
BUCKET="replicas-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
# moto creates a bucket on an unsigned PUT.
curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/$BUCKET" >/dev/null || die "could not create the bucket"
echo "moto_server on http://127.0.0.1:$MOTO_PORT, bucket $BUCKET"

export DATABASE_URL
export AGENTSKILLS_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT" AGENTSKILLS_S3_BUCKET="$BUCKET"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"

# In the background so that the traps run (and stop it) when this script is interrupted.
python3 "$HERE/replicas_test.py" --bin "$BIN" --work "$WORK" --only "$ONLY" &
PY_PID=$!
set +e
wait "$PY_PID"
status=$?
set -e
PY_PID=""
exit "$status"
