#!/usr/bin/env bash
# The integration suite (tests/api, on SQLite and, with TEST_DATABASE_URL, PostgreSQL) with every
# server's blobs in S3: moto's S3 server on loopback stands in for the bucket.
#
#   bash tests/s3/run.sh [cargo test arguments…]
#
# 1. installs moto[server] (pinned in requirements.txt) into a virtualenv under $S3_DEPS (default
#    ~/.cache/agentskills-s3), again only when requirements.txt changed;
# 2. starts `moto_server` on a free 127.0.0.1 port;
# 3. runs `cargo test --locked --test api` with TEST_S3_ENDPOINT set (tests/api/helpers.rs then
#    gives each server a bucket of its own there) and any AWS_* credentials moto accepts.
# The disk-full fault test keeps its blobs on its (small) local disk: that disk is what it tests.
# Exits with cargo's status.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEPS="${S3_DEPS:-$HOME/.cache/agentskills-s3}"

want="$(sha256sum <"$HERE/requirements.txt" | cut -c1-64)"
if ! "$DEPS/venv/bin/moto_server" --help >/dev/null 2>&1 || [ "$(cat "$DEPS/.installed" 2>/dev/null)" != "$want" ]; then
  rm -rf "$DEPS/venv"
  mkdir -p "$DEPS"
  python3 -m venv "$DEPS/venv"
  "$DEPS/venv/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" >"$DEPS/.installed"
fi
echo "moto $("$DEPS/venv/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p')"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
LOG="$(mktemp "${TMPDIR:-/tmp}/moto.XXXXXX.log")"
"$DEPS/venv/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/" >/dev/null || { echo "FAIL: moto_server did not start:"; cat "$LOG"; exit 1; }
echo "moto_server on http://127.0.0.1:$PORT"

export TEST_S3_ENDPOINT="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
cd "$ROOT"
cargo test --locked --test api "$@"
