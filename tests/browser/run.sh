#!/usr/bin/env bash
# Browser test: the web console in a real browser (Debian's headless chromium, driven by selenium
# through chromium-driver), as a new user walks it.
#
#   bash tests/browser/run.sh [--bin PATH] [--keep] [--screenshot PATH]
#
# 1. checks that chromium and chromedriver are installed (.ci/run installs them with apt-get), and
#    installs selenium and the official MCP Python SDK from PyPI into a venv, and axe-core and the
#    official TypeScript MCP SDK from npm, into $BROWSER_DEPS (default ~/.cache/agentskills-browser;
#    again only when requirements.txt or package-lock.json changed);
# 2. builds the release binary (unless --bin) and serves it on a free 127.0.0.1 port with a fresh
#    SQLite data dir;
# 3. runs console_test.py against it (see its docstring for what it walks and checks). It writes the
#    screenshot of a skill's page at 1280x800 to docs/console.png (the README's), or to --screenshot.
# The exit code is non-zero if any check failed. --keep keeps the work dir (server log, the
# browser's profile and the files it uploaded) and prints where it is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEPS="${BROWSER_DEPS:-$HOME/.cache/agentskills-browser}"
BIN=""
KEEP=0
SCREENSHOT="$ROOT/docs/console.png"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$(realpath "$2")"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --screenshot) SCREENSHOT="$(realpath -m "$2")"; shift 2 ;;
    -h | --help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

START=$SECONDS
# shellcheck source=../serve.sh
. "$HERE/../serve.sh"
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR

# --- 1. the browser, selenium, the SDKs and axe-core -------------------------------------------------
CHROMIUM="$(command -v chromium || true)"
CHROMEDRIVER="$(command -v chromedriver || true)"
[ -n "$CHROMIUM" ] || die "no chromium on PATH (apt-get install chromium chromium-driver)"
[ -n "$CHROMEDRIVER" ] || die "no chromedriver on PATH (apt-get install chromium-driver)"
install_deps() {
  mkdir -p "$DEPS"
  local want
  want="$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-64)"
  if [ ! -f "$DEPS/node_modules/axe-core/axe.min.js" ] || [ ! -d "$DEPS/node_modules/@modelcontextprotocol/sdk" ] || [ "$(cat "$DEPS/.npm-installed" 2>/dev/null)" != "$want" ]; then
    cp "$HERE/package.json" "$HERE/package-lock.json" "$DEPS/"
    (cd "$DEPS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$DEPS/.npm-installed"
  fi
  want="$(sha256sum <"$HERE/requirements.txt" | cut -c1-64)"
  PYTHON="$DEPS/venv/bin/python"
  if ! "$PYTHON" -c 'import selenium, mcp' 2>/dev/null || [ "$(cat "$DEPS/.venv-installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$DEPS/venv"
    python3 -m venv "$DEPS/venv"
    "$PYTHON" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$want" >"$DEPS/.venv-installed"
  fi
  echo "$("$CHROMIUM" --version 2>/dev/null); $("$CHROMEDRIVER" --version | cut -d' ' -f1-2)"
  echo "$("$PYTHON" -m pip show selenium mcp 2>/dev/null | sed -n 's/^Name: //p; s/^Version: //p' | paste -sd' ' | sed 's/ \([a-z]\)/, \1/g')"
  for p in axe-core @modelcontextprotocol/sdk; do
    echo "$p $(node -p "require('$DEPS/node_modules/$p/package.json').version")"
  done
}
note "install selenium, the MCP SDKs and axe-core into $DEPS"
install_deps

# --- 2. the server -------------------------------------------------------------------------------
if [ -z "$BIN" ]; then
  note "cargo build --release --locked"
  (cd "$ROOT" && cargo build --release --locked)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/agentskills-mcp"
  case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
fi
[ -x "$BIN" ] || die "no server binary at $BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/agentskills-browser.XXXXXX")"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$WORK/server.log" ] && grep -qE ' (WARN|ERROR) ' "$WORK/server.log"; then
    note "server log: warnings and errors (last 15)"
    grep -E ' (WARN|ERROR) ' "$WORK/server.log" | tail -n 15
  fi
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The server's settings come from here only: no config file (it runs in $WORK), none of the caller's.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(AGENTSKILLS_|DATABASE_URL$|SECRET_KEY$)' || true)
cd "$WORK"
# The walk imports from a git daemon of its own on loopback, as from a Git server on one's network.
export AGENTSKILLS_IMPORT_ALLOW_PRIVATE_HOSTS=true
start_server "$BIN" "$WORK/data" "$WORK/server.log" /health

# --- 3. the walk ---------------------------------------------------------------------------------
note "console_test.py: the console in headless chromium"
mkdir -p "$(dirname "$SCREENSHOT")"
rc=0
timeout 240 "$PYTHON" "$HERE/console_test.py" --base "$BASE" --work "$WORK" \
  --chromium "$CHROMIUM" --chromedriver "$CHROMEDRIVER" \
  --node-modules "$DEPS/node_modules" --screenshot "$SCREENSHOT" || rc=$?
note "browser test ($((SECONDS - START))s)"
if [ "$rc" -ne 0 ]; then
  echo "browser: FAILED (exit $rc)"
  exit 1
fi
echo "browser: passed; screenshot at $SCREENSHOT"
