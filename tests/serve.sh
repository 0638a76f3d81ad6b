# Sourced by the scripts under tests/ that run the release server by hand (interop, schemathesis).
# Gives them note, die and start_server; they keep their own cleanup (it reads SERVER_PID).

note() { printf '\n=== %s\n' "$*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

# start_server BIN DATA_DIR LOG HEALTH_PATH: starts `BIN serve` on a free port with its data in
# DATA_DIR and its log in LOG, and waits until HEALTH_PATH answers; sets SERVER_PID and BASE.
start_server() {
  local bin="$1" data="$2" log="$3" health="$4"
  note "start $bin serve"
  AGENTSKILLS_LOG=info AGENTSKILLS_SHUTDOWN_GRACE_SECS=2 "$bin" serve --bind 127.0.0.1:0 --data-dir "$data" >"$log" 2>&1 &
  SERVER_PID=$!
  BASE=""
  for _ in $(seq 1 100); do
    BASE="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | sed 's/^listening on //' || true)"
    [ -n "$BASE" ] && curl -sf "$BASE$health" >/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log"; die "the server exited"; }
    sleep 0.1
  done
  curl -sf "$BASE$health" >/dev/null || { cat "$log"; die "no answer from $BASE$health"; }
}
