#!/usr/bin/env bash
# Schemathesis against the live server: every REST operation of /openapi.json, with generated
# requests, checked for "no 5xx" and "the response is the one the document describes".
#
#   bash tests/schemathesis/run.sh [--bin PATH] [--schema FILE] [--keep] [--max-examples N] [--seed N]
#
# 1. installs schemathesis (pinned below) from PyPI into a virtualenv under $SCHEMATHESIS_DEPS
#    (default ~/.cache/agentskills-schemathesis), reusing it when it already has that version;
# 2. builds the release binary (unless --bin) and serves it on a free 127.0.0.1 port with a fresh
#    SQLite data dir, rate limits off and a tiny scrypt cost;
# 3. registers a user, logs in, creates an API token and a few skills (so lists, files and exports
#    have something in them), and runs `schemathesis run` on $BASE/openapi.json with the access
#    token, N examples per operation (default 100, or $SCHEMATHESIS_MAX_EXAMPLES).
# Exits non-zero on any failure (a 5xx, an undocumented status, content type or header, a body
# that does not match its schema, or a schemathesis error) and prints how many test cases ran.
# --schema FILE tests FILE instead of the served document (to try an edit of src/http/openapi.json
# without rebuilding the binary that embeds it).
# --keep keeps the work dir (server log, schemathesis reports) and prints where it is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SCHEMATHESIS_VERSION="4.32.5"
DEPS="${SCHEMATHESIS_DEPS:-$HOME/.cache/agentskills-schemathesis}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
SEED=""
BIN=""
SCHEMA=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$(realpath "$2")"; shift 2 ;;
    --schema) SCHEMA="$(realpath "$2")"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --max-examples) MAX_EXAMPLES="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

START=$SECONDS
# shellcheck source=../serve.sh
. "$(dirname "$0")/../serve.sh"

# --- 1. schemathesis -------------------------------------------------------------------------------
note "schemathesis $SCHEMATHESIS_VERSION in $DEPS"
ST="$DEPS/venv/bin/schemathesis"
# CPython 3.11.7 and 3.12.0-3.12.1 fail now and then in ast.parse ("SystemError: AST constructor
# recursion depth mismatch"), which hypothesis calls to describe a strategy: a schemathesis run then
# ends in a runtime error that is no finding. This machine's python3 is 3.11.7, so the venv is made
# with the first Python found without that bug.
pick_python() {
  local p v
  for p in python3.14 python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3 python3.12 python3; do
    command -v "$p" >/dev/null 2>&1 || continue
    v="$("$p" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)" || continue
    case "$v" in 3.11.7 | 3.12.0 | 3.12.1 | 3.[0-9].* | 3.10.*) continue ;; esac
    echo "$p"
    return
  done
  command -v python3
}
PY="$(pick_python)"
PY_VERSION="$("$PY" --version 2>&1)"
if [ "$("$ST" --version 2>/dev/null || true)" != "schemathesis, version $SCHEMATHESIS_VERSION" ] \
  || [ "$("$DEPS/venv/bin/python" --version 2>&1)" != "$PY_VERSION" ]; then
  rm -rf "$DEPS/venv"
  mkdir -p "$DEPS"
  "$PY" -m venv "$DEPS/venv"
  "$DEPS/venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$ST" --version

# --- 2. the server ---------------------------------------------------------------------------------
if [ -z "$BIN" ]; then
  note "cargo build --release --locked --bin agentskills-mcp"
  (cd "$ROOT" && cargo build --release --locked --bin agentskills-mcp)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/agentskills-mcp"
  case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
fi
[ -x "$BIN" ] || die "no server binary at $BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/agentskills-schemathesis.XXXXXX")"
# As a data dir's parents are in a real deployment: searchable by the sandbox's user, so that the
# sandbox is ready where bubblewrap works and /health/ready answers 200.
chmod 0711 "$WORK"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- server log: errors and warnings (last 40)"
    grep -E ' (ERROR|WARN) ' "$WORK/server.log" | tail -n 40 || true
  fi
  if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The server's settings come from here only: no config file (it runs in $WORK), none of the caller's.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(AGENTSKILLS_|DATABASE_URL$|SECRET_KEY$)' || true)
cd "$WORK"
# Every limit that would turn generated requests into 429s is off (0): a 429 is documented, so it
# would pass, but it would hide what the operation does with the rest of the examples.
export AGENTSKILLS_LOGIN_PER_IP_PER_MINUTE=0 AGENTSKILLS_LOGIN_PER_ACCOUNT_PER_MINUTE=0 \
  AGENTSKILLS_REGISTER_PER_IP_PER_HOUR=0 AGENTSKILLS_UPLOADS_PER_USER_PER_MINUTE=0 \
  AGENTSKILLS_MCP_PER_TOKEN_PER_SECOND=0 AGENTSKILLS_OAUTH_REGISTER_PER_IP_PER_HOUR=0
# Every password check (login, the password change, account deletion) hashes: keep that cheap.
export AGENTSKILLS_SCRYPT_LOG_N=4
start_server "$BIN" "$WORK/data" "$WORK/server.log" /health/live
echo "serving on $BASE"
# /health/ready is 503 by design while the sandbox cannot run commands (no bubblewrap here, say);
# not_a_server_error counts every 5xx, so then it is left out, and said so.
EXCLUDE_READY=()
READY="$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready")"
if [ "$READY" != 200 ]; then
  echo "note: /health/ready answers $READY (the sandbox cannot run commands here: $(curl -s "$BASE/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sandbox"].get("reason", "?"))')); it is left out"
  EXCLUDE_READY=(--exclude-operation-id health.ready)
fi

note "a user with an API token and some skills"
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
api() { curl -sS --fail-with-body "$@"; }
# A password no generated example can hit, so the password change and account deletion, which
# are tested too, only ever meet a wrong one.
PASSWORD="st-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
api -X POST "$BASE/api/v1/auth/register" -H 'Content-Type: application/json' \
  -d "{\"email\":\"schemathesis@example.com\",\"username\":\"schemathesis\",\"password\":\"$PASSWORD\"}" >/dev/null
login() {
  api -X POST "$BASE/api/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"username\":\"schemathesis\",\"password\":\"$PASSWORD\"}"
}
ACCESS="$(login | json access_token)"
# POST /auth/refresh takes a refresh token, from a login of its own: presenting a used one (every
# request after the first) ends its session, which must not be the one ACCESS belongs to.
REFRESH="$(login | json refresh_token)"
AUTH=(-H "Authorization: Bearer $ACCESS")
api -X POST "$BASE/api/v1/tokens" "${AUTH[@]}" -H 'Content-Type: application/json' \
  -d '{"name":"schemathesis","expires_in_days":1}' >/dev/null
api -X POST "$BASE/api/v1/skills" "${AUTH[@]}" -H 'Content-Type: application/json' \
  -d '{"name":"hello-world","description":"Says hello. Use it to greet."}' >/dev/null
mkdir -p "$WORK/upload/scripts"
printf -- '---\nname: pdf-tools\ndescription: >\n  Converts and merges PDF files.\n---\n\n# PDF tools\n' >"$WORK/upload/SKILL.md"
printf '#!/bin/sh\necho converting "$@"\n' >"$WORK/upload/scripts/convert.sh"
api -X POST "$BASE/api/v1/skills/upload" "${AUTH[@]}" \
  -F "files=@$WORK/upload/SKILL.md;filename=SKILL.md" \
  -F "files=@$WORK/upload/scripts/convert.sh;filename=scripts/convert.sh" >/dev/null
echo "user schemathesis: 1 API token, skills $(api "$BASE/api/v1/skills" "${AUTH[@]}" | python3 -c 'import json,sys; print(", ".join(s["name"] for s in json.load(sys.stdin)["items"]))')"

# --- 3. schemathesis -------------------------------------------------------------------------------
# Left out, each for a reason:
# - /mcp, /sse, /messages: JSON-RPC transports that take an API token, not the access token, and
#   whose bodies the document gives only as generic JSON; tests/api and tests/interop test them
#   with real MCP clients. /sse would also hold a stream open until the request timeout.
# - POST /api/v1/auth/logout: its first success revokes the access token every later request
#   uses, so the rest of the run would only see 401s. (DELETE /users/me and PUT /users/me/password
#   stay in: they need the account's password, which no generated example knows.)
# The tokens go through the environment into the config file, not onto the command line.
export ST_ACCESS_TOKEN="$ACCESS" ST_REFRESH_TOKEN="$REFRESH"
cat >"$WORK/schemathesis.toml" <<'EOF'
headers = { Authorization = "Bearer ${ST_ACCESS_TOKEN}" }

[[operations]]
include-operation-id = "auth.refresh"
headers = { Authorization = "Bearer ${ST_REFRESH_TOKEN}" }
EOF
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"
ARGS=(
  --config-file "$WORK/schemathesis.toml"
  run "${SCHEMA:-$BASE/openapi.json}"
  --url "$BASE"
  --checks "$CHECKS"
  --exclude-path-regex '^/(mcp|sse|messages)$'
  --exclude-operation-id auth.logout
  "${EXCLUDE_READY[@]}"
  --max-examples "$MAX_EXAMPLES"
  --workers 2
  --request-timeout 20
  --generation-database none
  --report junit,ndjson
  --report-dir "$WORK/report"
  --no-color
)
if [ -n "$SEED" ]; then ARGS+=(--seed "$SEED"); fi
note "schemathesis ${ARGS[*]}"
RC=0
"$ST" "${ARGS[@]}" || RC=$?

# The number of test cases, from the run's own events: each finished scenario records its cases.
CASES="$(python3 - "$WORK/report" <<'EOF'
import glob, json, sys
cases = 0
for path in glob.glob(sys.argv[1] + "/*.ndjson"):
    with open(path) as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            for value in event.values() if isinstance(event, dict) else []:
                if isinstance(value, dict) and "recorder" in value:
                    cases += len(value["recorder"].get("cases", {}))
print(cases)
EOF
)"
SERVER_ERRORS="$(grep -c ' ERROR ' "$WORK/server.log" || true)"
echo
echo "schemathesis $SCHEMATHESIS_VERSION: $CASES test cases, exit $RC; server log: $SERVER_ERRORS error lines; $((SECONDS - START)) s"
if [ "$SERVER_ERRORS" != 0 ]; then grep ' ERROR ' "$WORK/server.log" | tail -n 20; fi
if [ "$RC" -ne 0 ]; then
  die "schemathesis found failures (exit $RC)"
fi
[ "$CASES" -gt 0 ] || die "schemathesis ran no test case"
kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during the run"
echo "schemathesis passed"
