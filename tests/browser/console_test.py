#!/usr/bin/env python3
"""The web console in a real browser: headless chromium driven by selenium (tests/browser/run.sh
starts the server and calls this).

It walks what a new user does, through the pages and controls a person uses (links, buttons, the
file pickers), never through the REST API:

  sign up; upload a skill as a zip through the file picker and another as a whole folder through the
  folder picker; find both in the list and by search; open a skill, its SKILL.md and its other
  files (one whose path needs percent-encoding, `docs/a b#c.md`, with its plain-text and download
  links); see a validation error for an empty description, then save a good one; check SKILL.md in
  the editor; create a token, copy the Python and the TypeScript snippets with their copy buttons
  (the clipboard is read back) and run each as copied with the official SDK; connect the official
  MCP Python SDK over Streamable HTTP with that token and find the skill and its files;
  revoke the token in the console and see the SDK refused with 401; upload a hostile SKILL.md
  (script tags, event handlers, `javascript:` links, a description with HTML) and find that
  nothing of it ran; import a repository served by `git daemon` (a refused URL first), see the
  imported skill's source and sync it; see the status and account pages; find that no page scrolls sideways at a
  phone's width; delete a skill; sign out and find every page closed (a redirect to the sign-in
  page); then connect an app by OAuth as claude.ai does: the authorization request leads to
  sign-in, then the consent page; Allow lands on the app's loopback redirect URI with a code (the
  consent page's CSP must let exactly that redirect through), which becomes a token the official
  SDK uses; Deny says access_denied; the app is listed under Connected apps, and Disconnect cuts it
  off (401).

On every page it visits it also checks: no alert opened, no SEVERE entry in the browser's console,
no serious or critical axe-core violation, every same-origin link on the page answers below 400,
and the page's first load (the browser's cache is off, so every load is a first one) transfers
under 150 KB. It takes the screenshot of a skill's page at 1280x800 for the README, and measures
the server time of the skills list and a skill page (100 requests each with the session cookie;
printed, not asserted).

Prints one line per check and exits 1 if any failed.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import http.client
import http.server
import json
import socket
import threading
import urllib.request
import io
import os
import statistics
import subprocess
import sys
import time
import traceback
import urllib.parse
import zipfile
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import (NoAlertPresentException, StaleElementReferenceException, TimeoutException,
                                        WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

# Pages must be small: the first load of each, everything it fetches, under this many bytes.
MAX_PAGE_BYTES = 150_000
# A skill with a few files, as a zip (the screenshot shows it).
RELEASE_NOTES = {
    "SKILL.md": """---
name: release-notes
description: Writes release notes from a repository's merged changes. Use when the user asks for a changelog, release notes or a summary of what changed between two tags.
license: Apache-2.0
---
# Release notes

Turn the changes between two tags into notes a user can read.

## Steps

1. Run `scripts/collect.py FROM TO` to list the merged changes with their labels.
2. Group them as [the style guide](reference/style.md) says: *Added*, *Changed*, *Fixed*.
3. Fill in `templates/notes.md` and keep each line to one sentence.

## Rules

- Name what a user sees, not how it was built.
- Credit every contributor once.
- Never invent a change that is not in the list.
""",
    "reference/style.md": """# Style of the notes

- Past tense, one sentence a line.
- A breaking change starts with **Breaking:**.
- Link each line to its pull request.
""",
    "scripts/collect.py": """#!/usr/bin/env python3
\"\"\"Lists the merged changes between two tags, one line each: label, title, author.\"\"\"
import subprocess
import sys


def main(start: str, end: str) -> None:
    log = subprocess.run(["git", "log", "--merges", "--format=%s|%an", f"{start}..{end}"],
                         capture_output=True, text=True, check=True).stdout
    for line in log.splitlines():
        title, author = line.rsplit("|", 1)
        print(f"{title} ({author})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
""",
    "templates/notes.md": """# {version}

## Added

## Changed

## Fixed
""",
}
# A skill as a folder; one path needs percent-encoding in a URL (a space and a `#`).
CSV_REPORT = {
    "SKILL.md": """---
name: csv-report
description: Summarizes a CSV file into a short report with totals per column. Use for spreadsheets and exported tables.
---
# CSV report

Read [the notes](docs/a%20b%23c.md) first, then run `scripts/report.py FILE`.
""",
    "docs/a b#c.md": "Notes on CSV dialects.\nSemicolons are common in Europe.\n",
    "scripts/report.py": "import csv, sys\nrows = list(csv.reader(open(sys.argv[1])))\nprint(len(rows), 'rows')\n",
}
# A hostile SKILL.md: each trap, if it ran, would leave a mark the test looks for.
HOSTILE = """---
name: hostile
description: "<img src=x onerror=\\"window.__pwned='description'\\"><script>window.__pwned='description script'</script><b>bold</b>"
---
# Hostile <script>window.__pwned = 'heading'; document.title = 'pwned';</script>

<script>window.__pwned = 'script'; alert('script');</script>

<img src="x" onerror="window.__pwned = 'img'; alert('img')">

[a javascript link](javascript:window.__pwned='markdown-link') and
<a href="JaVaScRiPt:window.__pwned='html-link'" id="hostile-link" onclick="window.__pwned='onclick'">an html link</a>

<svg onload="window.__pwned='svg'"><script>window.__pwned='svg script'</script></svg>

<details open ontoggle="window.__pwned='ontoggle'"><summary>more</summary>text</details>

<iframe src="javascript:window.parent.__pwned='iframe'"></iframe>

<div onmouseover="window.__pwned='mouseover'" id="hostile-hover">hover me</div>

<form action="javascript:window.__pwned='form'"><button id="hostile-submit">go</button></form>

<meta http-equiv="refresh" content="0;url=javascript:window.__pwned='refresh'">
"""



def replaced(old: WebElement):
    """A wait condition: `old` is gone from the page. Like `EC.staleness_of`, but chromedriver's
    answer that the node "does not belong to the document" (its own race right after a navigation,
    seen now and then) also means the element has gone."""
    def gone(_driver) -> bool:
        try:
            old.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise
    return gone

class Checks:
    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0

    def __call__(self, ok: bool, what: str, detail: str = "") -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}{'' if ok or not detail else ': ' + detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


class Console:
    """The browser on the console, with the checks every page gets."""

    def __init__(self, a, check: Checks) -> None:
        self.base = a.base.rstrip("/")
        self.check = check
        self.axe = (Path(a.node_modules) / "axe-core" / "axe.min.js").read_text(encoding="utf-8")
        self.work = Path(a.work)
        # The TypeScript snippet's imports resolve from the folder it is written to.
        (self.work / "node_modules").symlink_to(Path(a.node_modules).resolve(), target_is_directory=True)
        self.sizes: list[tuple[str, int, int]] = []
        options = webdriver.ChromeOptions()
        options.binary_location = a.chromium
        # --no-sandbox: CI runs as root, where chromium's own sandbox refuses to start. The binaries
        # are Debian's, named here, so selenium never looks for (or downloads) a driver itself.
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                    "--no-first-run", "--disable-extensions", f"--user-data-dir={self.work / 'chromium'}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # An alert stays open, so that the check after each page finds it.
        options.set_capability("unhandledPromptBehavior", "ignore")
        self.driver = webdriver.Chrome(service=Service(a.chromedriver), options=options)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)
        # Every load is a first load: no page or asset comes from the cache, so sizes are honest.
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        # The copy buttons write to the clipboard; the test reads it back.
        self.driver.execute_cdp_cmd("Browser.grantPermissions", {
            "origin": self.base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})

    def quit(self) -> None:
        self.driver.quit()

    def wait(self, condition, what: str, timeout: float = 15):
        try:
            return WebDriverWait(self.driver, timeout).until(condition)
        except TimeoutException:
            raise AssertionError(f"timed out waiting for {what} (at {self.driver.current_url})") from None

    def find(self, css: str) -> WebElement:
        return self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, css)), css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def path(self) -> str:
        url = urllib.parse.urlsplit(self.driver.current_url)
        return url.path + (f"?{url.query}" if url.query else "")

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.loaded()

    def loaded(self) -> None:
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete", "the page to load")

    def click_and_load(self, target: WebElement | str) -> None:
        """Clicks something (an element, or the one a CSS selector finds) that loads a new page and
        waits for that page."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        if isinstance(target, str):
            self.again(lambda: self.find(target).click())
        else:
            target.click()
        self.wait(replaced(old), "a new page")
        self.loaded()

    def submit(self, form_css: str, fields: dict[str, str], button_css: str | None = None) -> None:
        def fill():
            form = self.find(form_css)
            for name, value in fields.items():
                field = form.find_element(By.CSS_SELECTOR, f"[name='{name}']")
                if field.tag_name == "select":
                    field.find_element(By.CSS_SELECTOR, f"option[value='{value}']").click()
                else:
                    field.clear()
                    field.send_keys(value)
            return form.find_element(By.CSS_SELECTOR, button_css or "button[type=submit]")

        old = self.driver.find_element(By.TAG_NAME, "html")
        self.again(lambda: fill().click())
        self.wait(replaced(old), "a new page")
        self.loaded()

    def again(self, action, tries: int = 3):
        """Runs `action`, again (at most `tries` times) when chromedriver answers that an element it
        just found belongs to a document the page has since replaced (a race inside chromedriver
        right after a navigation, seen now and then). Nothing that navigates may be retried."""
        for attempt in range(tries):
            try:
                return action()
            except (StaleElementReferenceException, WebDriverException) as e:
                if attempt + 1 == tries or not (isinstance(e, StaleElementReferenceException)
                                                or "does not belong to the document" in str(e)):
                    raise

    def page(self, name: str, status: int = 200) -> None:
        """The checks of every page: its status, no alert, no console error, axe, links, size.

        A page answered with an error status on purpose (a form shown again with the server's
        messages is 422, as the API answers; a missing skill is 404) has the browser log one
        network line for the document itself; that line alone is expected, and only there."""
        check = self.check
        where = f"{name} ({self.path()})"
        got = self.driver.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus")
        check(got == status, f"{where}: answered {status}", f"got {got}")
        try:
            text = self.driver.switch_to.alert.text
            check(False, f"{where}: no alert", f"an alert says {text!r}")
            self.driver.switch_to.alert.dismiss()
        except NoAlertPresentException:
            check(True, f"{where}: no alert")
        own = f"{self.driver.current_url} - Failed to load resource: the server responded with a status of {status} "
        errors = [e["message"] for e in self.driver.get_log("browser")
                  if e["level"] == "SEVERE" and not (status >= 400 and e["message"].startswith(own))]
        check(not errors, f"{where}: no error in the browser console", "; ".join(errors)[:600])
        # axe-core, injected through the driver (which is not subject to the page's CSP).
        self.driver.execute_script(self.axe)
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done({violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))}), e => done({error: String(e)}));")
        if "error" in result:
            check(False, f"{where}: axe-core ran", result["error"])
        else:
            bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
            check(not bad, f"{where}: axe-core finds no serious or critical violation",
                  "; ".join(f"{v['impact']} {v['id']} ({v['help']}) at {v['nodes']}" for v in bad))
            minor = [f"{v['impact']} {v['id']}" for v in result["violations"] if v not in bad]
            if minor:
                print(f"       note: axe-core's lesser findings: {', '.join(minor)}", flush=True)
        # Every same-origin link answers (a redirect is fine; a 404 is a broken link).
        broken = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const hrefs = [...new Set([...document.querySelectorAll('a[href]')]"
            "  .filter(a => !a.getAttribute('href').startsWith('#')).map(a => a.href)"
            "  .filter(h => h.startsWith(location.origin + '/')).map(h => h.split('#')[0]))];"
            "Promise.all(hrefs.map(h => fetch(h, {redirect: 'manual'}).then(r => [h, r.status], e => [h, String(e)])))"
            ".then(all => done(all.filter(([h, s]) => !(typeof s === 'number' && s < 400))));")
        check(not broken, f"{where}: every link on the page answers", repr(broken)[:600])
        # The first load's bytes: the document and everything it fetched (the link checks above
        # came after and are not counted: only entries before the load event are).
        size = self.driver.execute_script(
            "const nav = performance.getEntriesByType('navigation')[0];"
            "const end = nav.loadEventEnd || performance.now();"
            "const res = performance.getEntriesByType('resource').filter(r => r.startTime <= end && r.initiatorType !== 'fetch');"
            "return [nav.transferSize, res.reduce((n, r) => n + r.transferSize, 0), res.length];")
        total = size[0] + size[1]
        self.sizes.append((name, total, size[2] + 1))
        check(0 < total < MAX_PAGE_BYTES, f"{where}: first load {total} bytes in {size[2] + 1} requests",
              f"over {MAX_PAGE_BYTES} bytes or not measured")
        self.driver.get_log("browser")  # the link checks' own log lines are not the page's

    def upload(self, input_css: str, paths: list[str]) -> dict:
        """Sets files on a file input (as a person choosing them in the picker would), waits for the
        console's answer and returns what it shows."""
        earlier = self.all("#upload-answer")
        self.again(lambda: self.find(input_css).send_keys("\n".join(paths)))
        if earlier:  # the answer to an earlier upload, which this one's replaces
            self.wait(replaced(earlier[0]), "the earlier upload's answer to go", 30)
        answer = self.wait(EC.presence_of_element_located((By.ID, "upload-answer")), "the upload's answer", 30)
        return {"status": answer.get_attribute("data-status"), "text": answer.text,
                "skills": [a.text for a in self.all("#upload-skills [data-testid=upload-skill] a")]}


class GitDaemon:
    """`git daemon` serving repositories this walk makes: each connection to a loopback port is
    handed to a `git daemon --inetd` (so no port is guessed). The server under test allows private
    hosts (run.sh sets AGENTSKILLS_IMPORT_ALLOW_PRIVATE_HOSTS), as for a Git server on one's own
    network."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                subprocess.Popen(["git", "daemon", "--inetd", "--export-all", f"--base-path={self.root}", str(self.root)],
                                 stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.DEVNULL, env=GIT_ENV)

    def publish(self, name: str, files: dict[str, str]) -> str:
        work = self.root / f"{name}-work"
        write_tree(work, files)
        run = lambda *args, cwd=work: subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True,  # noqa: E731
                                                     capture_output=True)
        run("init", "-q", "-b", "main")
        run("add", "-A")
        run("commit", "-q", "-m", "skills")
        run("clone", "-q", "--bare", str(work), str(self.root / f"{name}.git"), cwd=self.root)
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def close(self) -> None:
        self.listener.close()


GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "Walk", "GIT_AUTHOR_EMAIL": "walk@example.com",
           "GIT_COMMITTER_NAME": "Walk", "GIT_COMMITTER_EMAIL": "walk@example.com"}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def make_zip(path: Path, top: str, files: dict[str, str]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, text in files.items():
            z.writestr(f"{top}/{rel}", text)
    path.write_bytes(buf.getvalue())


async def mcp_find_skill(url: str, token: str, name: str, statuses: list[int] | None = None) -> str:
    """Connects with the official SDK over Streamable HTTP, calls load_skill_metadata and lists the
    skill's resources; `statuses` collects the HTTP status of every answer."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def record(response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60),
                                  event_hooks={"response": [record]}) as http, \
            streamable_http_client(url, http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        res = await session.call_tool("load_skill_metadata", {})
        text = "".join(getattr(c, "text", "") for c in res.content)
        resources = await session.list_resources()
        uris = [str(r.uri) for r in resources.resources if str(r.uri).startswith(f"skill://{name}/")]
        return f"{text}\n{' '.join(uris)}"


def flatten(e: BaseException) -> list[BaseException]:
    subs = getattr(e, "exceptions", None)
    out = [x for sub in subs for x in flatten(sub)] if isinstance(subs, tuple) else [e]
    return out + ([e.__cause__] if e.__cause__ and not isinstance(subs, tuple) else [])


def refused_with_401(url: str, token: str) -> tuple[bool, str]:
    """The SDK's connection with a revoked token: refused, with HTTP 401 from the server."""
    statuses: list[int] = []
    try:
        got = asyncio.run(asyncio.wait_for(mcp_find_skill(url, token, "release-notes", statuses), 30))
        return False, f"the SDK was let in: {got[:200]!r}"
    except BaseException as e:  # noqa: BLE001: the SDK raises in task groups; look at every cause
        said = "; ".join(f"{type(x).__name__}: {x}" for x in flatten(e))[:300]
        return statuses[:1] == [401], f"statuses {statuses}; the SDK said {said}"


def metric_sums(base: str, route: str) -> tuple[float, int]:
    """The server's own time for `route` so far, from `/metrics`: the sum of the request duration
    histogram (seconds to the response's headers) and its count."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    found = {}
    for line in text.splitlines():
        for kind in ("sum", "count"):
            prefix = f'agentskills_http_request_duration_seconds_{kind}{{route="{route}"}} '
            if line.startswith(prefix):
                found[kind] = float(line[len(prefix):].split()[0])
    return found.get("sum", 0.0), int(found.get("count", 0))


def server_times(base: str, cookie: str, pages: list[tuple[str, str]], n: int = 100) -> list[str]:
    """`n` GETs of each page over one keep-alive connection with the session cookie: the time to
    the first byte as the client sees it (the server's time plus a loopback round trip), and the
    server's own mean for the page's route from its `/metrics` histogram."""
    url = urllib.parse.urlsplit(base)
    lines = []
    for path, route in pages:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        for _ in range(5):  # warm the connection and the caches
            conn.request("GET", path, headers={"Cookie": cookie})
            conn.getresponse().read()
        before = metric_sums(base, route)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            conn.request("GET", path, headers={"Cookie": cookie})
            res = conn.getresponse()
            times.append(time.perf_counter() - t)
            body = res.read()
            if res.status != 200:
                raise AssertionError(f"GET {path}: {res.status}")
        conn.close()
        after = metric_sums(base, route)
        times.sort()
        ms = lambda x: f"{x * 1000:.2f}"  # noqa: E731
        count = after[1] - before[1]
        server = ms((after[0] - before[0]) / count) if count else "?"
        lines.append(f"{path} ({route}, {len(body)} bytes): to first byte median {ms(statistics.median(times))} ms, "
                     f"p90 {ms(times[int(n * 0.9)])} ms, max {ms(times[-1])} ms; the server's mean {server} ms "
                     f"({n} requests)")
    return lines


class Callback:
    """An app's redirect URI on loopback: remembers the query of every request it gets."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        seen = self.queries

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the standard library's name)
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/callback":  # not the browser's /favicon.ico
                    seen.append(dict(urllib.parse.parse_qsl(url.query)))
                body = b"<!doctype html><title>connected</title><p>You can close this window."
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def post_form(url: str, fields: dict) -> dict:
    req = urllib.request.Request(url, urllib.parse.urlencode(fields).encode(),
                                 {"content-type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def oauth(c: Console, a) -> None:
    """An app connects by OAuth as claude.ai does: the person is sent to sign in, sees the consent
    page, clicks Allow, and the browser lands on the app's redirect URI with a code (which the
    consent page's Content-Security-Policy must let it reach); the app's token works with the SDK
    until the person disconnects the app."""
    check, d = c.check, c.driver
    print("connect an app by OAuth", flush=True)
    callback = Callback()
    client = post_json(c.base + "/oauth/register", {"client_name": "Browser Test App", "redirect_uris": [callback.url]})
    verifier = "browser-test-verifier-0123456789-0123456789-0123456789"
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    params = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": callback.url,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": "st-42",
              "scope": "skills:read skills:run", "resource": c.base + "/mcp"}
    authorize = "/oauth/authorize?" + urllib.parse.urlencode(params)
    c.go(authorize)
    check(c.path().startswith("/signin?next="), "a signed-out person is sent to sign in first", c.path())
    c.page("sign-in for an app")
    c.submit("#signin-form", {"login": "ada", "password": "correct horse battery"})
    check(c.path().startswith("/oauth/authorize?"), "and comes back to the app's request", c.path())
    check("Browser Test App" in c.find("#consent-client").text, "the consent page names the app")
    check(bool(c.all("#consent-new-client")), "and warns that it was never connected before")
    scopes = [e.get_attribute("data-scope") for e in c.all("[data-testid=consent-scope]")]
    check(scopes == ["skills:read", "skills:run"], "and lists what it may do", repr(scopes))
    c.page("consent")
    c.find("#consent-allow").click()
    c.wait(lambda drv: drv.current_url.startswith(callback.url), "the browser to reach the app's redirect URI")
    c.wait(lambda drv: callback.queries and drv.execute_script("return document.readyState") == "complete",
           f"the app's redirect URI to be loaded (the browser shows {d.title!r})")
    errors = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
    check(not errors, "Allow reaches the app with no CSP or other error in the console", "; ".join(errors)[:600])
    got = callback.queries[-1] if callback.queries else {}
    check(got.get("state") == "st-42" and got.get("iss") == c.base and bool(got.get("code")),
          "the app gets a code, its state and the issuer", repr(got))
    tokens = post_form(c.base + "/oauth/token", {"grant_type": "authorization_code", "code": got.get("code", ""),
                                                  "redirect_uri": callback.url, "client_id": client["client_id"],
                                                  "code_verifier": verifier})
    mcp_url = c.base + "/mcp"
    try:
        found = asyncio.run(asyncio.wait_for(mcp_find_skill(mcp_url, tokens["access_token"], "release-notes"), 60))
        check("- release-notes: " in found, "the official SDK reads the skills with the app's access token", found[:300])
    except BaseException as e:  # noqa: BLE001
        check(False, "the official SDK reads the skills with the app's access token",
              "; ".join(f"{type(x).__name__}: {x}" for x in flatten(e))[:400])
    # Deny: the app hears access_denied.
    c.go(authorize)
    before = len(callback.queries)
    c.find("#consent-deny").click()
    c.wait(lambda drv: len(callback.queries) > before, "the browser to reach the app after Deny")
    check(callback.queries[-1].get("error") == "access_denied", "Deny tells the app access_denied",
          repr(callback.queries[-1]))
    # Connected apps: listed, and Disconnect cuts the app off.
    c.go("/tokens")
    rows = c.all("[data-testid=app-row]")
    check(len(rows) == 1 and "Browser Test App" in rows[0].text, "the app is listed under Connected apps",
          repr([r.text for r in rows]))
    c.page("tokens with a connected app")
    c.click_and_load(rows[0].find_element(By.CSS_SELECTOR, "[data-testid=app-revoke]"))
    check("app-revoked" in c.path(), "disconnecting it says so", c.path())
    refused, said = refused_with_401(mcp_url, tokens["access_token"])
    check(refused, "the SDK is refused with 401 once the app is disconnected", said)
    callback.server.shutdown()


def walk(c: Console, a) -> None:
    check = c.check
    d = c.driver
    work = c.work
    uploads = work / "uploads"
    make_dir = lambda p: (p.mkdir(parents=True, exist_ok=True), p)[1]  # noqa: E731

    # --- Sign up ------------------------------------------------------------------------------
    print("sign up", flush=True)
    c.go("/")
    check(c.path() == "/signin", "/ sends a visitor to the sign-in page", c.path())
    c.page("sign-in")
    c.click_and_load("#signup-link")
    check(c.path() == "/signup", "the sign-up link opens the sign-up page", c.path())
    c.page("sign-up")
    c.submit("#signup-form", {"email": "ada@example.com", "username": "ada", "password": "correct horse battery"})
    check(c.path().startswith("/skills"), "signing up lands on the skills", c.path())
    check(c.find("#signed-in-as").text == "ada", "the header names the user")
    check(bool(c.all("#skills-empty")), "the empty list says what to do next")
    c.page("empty skills list")

    # --- Upload: a zip through the file picker, a folder through the folder picker --------------------
    print("upload", flush=True)
    zip_path = make_dir(uploads) / "release-notes.zip"
    make_zip(zip_path, "release-notes", RELEASE_NOTES)
    got = c.upload("#upload-files", [str(zip_path)])
    check(got["status"] == "201" and got["skills"] == ["release-notes"],
          "a zip chosen in the file picker uploads one skill", repr(got))
    # The folder picker: chromedriver accepts a folder's path on an `<input webkitdirectory>` and
    # gives the page what a person's choice gives it: every file under the folder, each with its
    # `webkitRelativePath` (`csv-report/docs/a b#c.md`), and a change event. What the browser's own
    # folder dialog does is not exercised (headless has none); the console's script from the change
    # event on (paths, the top folder dropped, the upload with its progress) is.
    folder = make_dir(uploads / "folder") / "csv-report"
    write_tree(folder, CSV_REPORT)
    got = c.upload("#upload-folder", [str(folder)])
    check(got["status"] == "201" and got["skills"] == ["csv-report"],
          "a folder chosen in the folder picker uploads one skill", repr(got))
    check(c.find("#upload-progress").get_attribute("value") == "100", "the progress bar reached the end")
    c.page("skills list after uploads")

    # --- The list, search ------------------------------------------------------------------------
    c.go("/skills")
    names = sorted(r.get_attribute("data-skill-name") for r in c.all("[data-testid=skill-row]"))
    check(names == ["csv-report", "release-notes"], "the list shows both skills", repr(names))
    c.page("skills list")
    c.submit("#skills-search", {"search": "changelog"})
    names = [r.get_attribute("data-skill-name") for r in c.all("[data-testid=skill-row]")]
    check(names == ["release-notes"], "search finds a skill by its description", repr(names))
    c.submit("#skills-search", {"search": "no such thing"})
    check(bool(c.all("#skills-no-match")), "a search without match says so")
    c.page("skills search without match")

    # --- A skill's page, SKILL.md, its files -----------------------------------------------------
    print("the skill's page", flush=True)
    c.go("/skills")
    c.click_and_load("[data-skill-name='release-notes'] h2 a")
    skill_url = c.path()
    check(c.find("#skill-name").text == "release-notes", "the skill's page opens from the list")
    tree = sorted(e.get_attribute("data-path") for e in c.all("[data-testid=file-link]"))
    check(tree == sorted(RELEASE_NOTES), "the file tree lists every file", repr(tree))
    c.click_and_load("[data-testid=file-link][data-path='SKILL.md']")
    check(c.find("#file-path").text == "SKILL.md", "SKILL.md opens")
    rendered = c.find("#skill-md-rendered")
    check(rendered.find_element(By.TAG_NAME, "h1").text == "Release notes", "SKILL.md is rendered from Markdown")
    check("description: Writes release notes" in c.find("#skill-md-front-matter").text,
          "its front matter is shown as text")
    c.page("skill page (SKILL.md)")
    # The README's screenshot: this page at 1280x800.
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    png = d.get_screenshot_as_png()
    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    check(png[:8] == b"\x89PNG\r\n\x1a\n" and (width, height) == (1280, 800),
          f"a screenshot of the skill's page, {width}x{height}")
    Path(a.screenshot).write_bytes(png)
    # A link in SKILL.md to another file of the skill opens that file in the console.
    link = rendered.find_element(By.LINK_TEXT, "the style guide")
    c.click_and_load(link)
    check(c.find("#file-path").text == "reference/style.md", "a relative link in SKILL.md opens that file",
          c.path())
    c.click_and_load("[data-testid=file-link][data-path='scripts/collect.py']")
    lines = [li.text for li in c.all("#file-lines li")]
    check(lines == RELEASE_NOTES["scripts/collect.py"].splitlines(), "a script is shown line by line",
          repr(lines[:3]))
    c.page("file view")

    # The folder's skill: the file whose path needs percent-encoding, and its plain and download links.
    c.go("/skills")
    c.click_and_load("[data-skill-name='csv-report'] h2 a")
    csv_url = c.path()
    tree = sorted(e.get_attribute("data-path") for e in c.all("[data-testid=file-link]"))
    check(tree == sorted(CSV_REPORT), "the folder's files are all there, paths inside the skill", repr(tree))
    c.click_and_load("[data-testid=file-link][data-path='docs/a b#c.md']")
    check(c.find("#file-path").text == "docs/a b#c.md", "a file named `a b#c.md` opens", c.path())
    lines = [li.text for li in c.all("#file-lines li")]
    check(lines == CSV_REPORT["docs/a b#c.md"].splitlines(), "and shows its lines", repr(lines))
    for link_id, what in (("file-raw", "plain text"), ("file-download", "download")):
        href = c.find(f"#{link_id}").get_attribute("href")
        got = d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0]).then(r => r.text().then(t => done([r.status, t])), e => done([0, String(e)]));", href)
        check(got == [200, CSV_REPORT["docs/a b#c.md"]], f"its {what} link serves the file", f"{href}: {got!r}")
    c.page("file view of a percent-encoded path")
    c.go(csv_url)
    c.click_and_load(c.find("#skill-md-rendered").find_element(By.LINK_TEXT, "the notes"))
    check(c.find("#file-path").text == "docs/a b#c.md", "SKILL.md's link to `docs/a b#c.md` opens it", c.path())

    # --- The editor: a bad description, a good one, SKILL.md checked --------------------------------
    print("the editor", flush=True)
    c.go(skill_url)
    c.submit("#description-form", {"description": "   "})
    error = c.find("#description-error").text
    check("must not be empty" in error, "an empty description is refused next to its field", error)
    check(c.find("#description-input").get_attribute("aria-invalid") == "true", "and the field is marked invalid")
    c.page("editor with a validation error", 422)
    good = "Writes release notes from merged changes; use it for changelogs."
    c.submit("#description-form", {"description": good})
    check(c.find("#skill-description").text == good, "a good description is saved and shown", c.path())
    check("description-saved" in c.path() and bool(c.all("#notice")), "with a notice of what happened")
    c.page("skill page after saving")
    c.submit("#skill-md-form", {"content": "no front matter here\n"}, "#skill-md-check")
    check(bool(c.find("#skill-md-error").text), "checking a SKILL.md without front matter shows the server's refusal",
          c.find("#skill-md-error").text)
    c.page("editor: SKILL.md refused", 422)

    # --- Connect a client: a token, a snippet copied, the SDK in and then out ------------------------
    print("connect a client", flush=True)
    c.click_and_load("#nav-tokens")
    check(bool(c.all("#tokens-empty")), "no token yet, and the page says what to do")
    c.page("tokens (none yet)")
    c.submit("#token-form", {"name": "laptop", "expires_in_days": "30"})
    token = c.find("#token-value").text
    check(token.startswith("ask_live_"), "a new token is shown once", token[:12])
    c.page("tokens with a new token", 201)
    mcp_url = c.find("#mcp-url").text
    check(mcp_url == f"{c.base}/mcp", "the page names this server's MCP URL", mcp_url)
    # The Python and TypeScript snippets, each copied with its button and run as copied with the
    # official SDK: each connects with the token and lists the skills.
    for sid, title, suffix, command in (("python", "Python", "py", [sys.executable]),
                                        ("typescript", "TypeScript", "mjs", ["node"])):
        box = c.find(f"#snippet-{sid}-box")
        if box.get_attribute("open") is None:
            box.find_element(By.TAG_NAME, "summary").click()
        button = c.find(f"#snippet-{sid}-copy")
        snippet = d.execute_script(f"return document.getElementById('snippet-{sid}').textContent")
        button.click()
        c.wait(lambda _: button.text == "Copied", f"the {title} snippet's copy button to say Copied")
        copied = d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "navigator.clipboard.readText().then(done, e => done('clipboard error: ' + e));")
        check(copied == snippet and token in copied and mcp_url in copied,
              f"the copy button put the {title} snippet, with the token and the URL, on the clipboard",
              repr(copied[:120]))
        # Beside a node_modules with the TypeScript SDK (a link to run.sh's), so its imports resolve.
        script = work / f"snippet.{suffix}"
        script.write_text(copied, encoding="utf-8")
        what = f"the copied {title} snippet runs with the official SDK and lists the skill"
        try:
            run = subprocess.run([*command, str(script)], capture_output=True, text=True, timeout=30, cwd=work)
            out = run.stdout + run.stderr
            check(run.returncode == 0 and "- release-notes: " in out, what, f"exit {run.returncode}: {out[-400:]}")
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            check(False, what, f"it did not end within 30 s; it printed {out[-300:]!r}")
    try:
        got = asyncio.run(asyncio.wait_for(mcp_find_skill(mcp_url, token, "release-notes"), 60))
        check("- release-notes: " + good in got and "skill://release-notes/SKILL.md" in got,
              "the SDK finds the skill's new description and its files as resources", got[:300])
    except BaseException as e:  # noqa: BLE001
        check(False, "the SDK finds the skill's new description and its files as resources",
              "; ".join(f"{type(x).__name__}: {x}" for x in flatten(e))[:400])
    c.go("/tokens")
    rows = c.all("[data-testid=token-row]")
    check(len(rows) == 1 and "laptop" in rows[0].text, "the token is listed", repr([r.text for r in rows]))
    check("never" not in rows[0].find_elements(By.TAG_NAME, "td")[4].text.lower(),
          "with its last use", rows[0].text)
    c.click_and_load(rows[0].find_element(By.CSS_SELECTOR, "[data-testid=token-revoke]"))
    check("token-revoked" in c.path(), "revoking it says so", c.path())
    c.page("tokens after revoking")
    refused, said = refused_with_401(mcp_url, token)
    check(refused, "the SDK is refused with 401 once the token is revoked", said)

    # --- A hostile SKILL.md runs nothing -----------------------------------------------------------
    print("a hostile SKILL.md", flush=True)
    c.go("/skills")
    hostile = make_dir(uploads / "loose") / "SKILL.md"
    hostile.write_text(HOSTILE, encoding="utf-8")
    got = c.upload("#upload-files", [str(hostile)])
    check(got["status"] == "201" and got["skills"] == ["hostile"], "a loose SKILL.md uploads", repr(got))
    c.page("skills list after the hostile upload")
    c.go("/skills")
    c.page("skills list with the hostile skill")
    c.click_and_load("[data-skill-name='hostile'] h2 a")
    title = d.title
    rendered = c.find("#skill-md-rendered")
    # Hover everything that is left and click what cannot leave the page, as a curious reader would.
    for element in rendered.find_elements(By.CSS_SELECTOR, "a, div, button, summary"):
        try:
            webdriver.ActionChains(d).move_to_element(element).perform()
            href = element.get_attribute("href")
            if element.tag_name in ("button", "summary") or (element.tag_name == "a" and not href):
                element.click()
        except Exception:  # noqa: BLE001: an element that cannot be hovered or clicked is fine
            pass
    c.loaded()
    check(d.execute_script("return window.__pwned === undefined"), "nothing of the hostile SKILL.md ran",
          repr(d.execute_script("return window.__pwned")))
    check(d.title == title and "pwned" not in d.title, "the title is the console's", d.title)
    description = c.find("#skill-description").text
    check("<script>" in description and "<b>bold</b>" in description, "the description's HTML is shown as text",
          description)
    check(not c.all("#skill-md-rendered script, #skill-md-rendered iframe, #skill-md-rendered img, "
                    "#skill-md-rendered svg, #skill-md-rendered form, a[href^='javascript' i]"),
          "no script, frame, image, svg, form or javascript: link is on the page")
    c.page("hostile skill page")
    check(d.execute_script("return window.__pwned === undefined"), "still nothing ran after the checks")

    # --- Import from Git: a repository served by git daemon, imported, its source shown, synced ------
    print("import from git", flush=True)
    daemon = GitDaemon(Path(a.work) / "git")
    try:
        url = daemon.publish("team-skills", {
            "skills/changelog-check/SKILL.md": "---\nname: changelog-check\ndescription: Checks that every "
                                               "merged change has a changelog line.\n---\n# Changelog check\n",
            "README.md": "# Team skills\n",
        })
        c.go("/skills")
        c.submit("#import-form", {"url": "ftp://example.com/skills"})
        check("https" in c.find("#import-url-error").text, "a URL that cannot be fetched is refused next to its field",
              c.find("#import-url-error").text)
        c.page("skills page: import refused", 422)
        c.submit("#import-form", {"url": url, "path": "skills"})
        check("1 skill is imported" in c.find("#notice").text, "importing a repository says how many skills came",
              c.find("#notice").text)
        check(bool(c.all("[data-skill-name='changelog-check']")), "the imported skill is in the list")
        c.page("skills list after an import")
        c.click_and_load("[data-skill-name='changelog-check'] h2 a")
        check(c.find("#source-url").text == url and c.find("#source-path").text == "skills/changelog-check",
              "its page shows where it comes from", c.find("#source-url").text)
        c.page("an imported skill's page")
        c.submit("#skill-sync-form", {})
        check("nothing changed" in c.find("#notice").text, "Sync now says when nothing changed", c.find("#notice").text)
        c.page("an imported skill after a sync")
    finally:
        daemon.close()

    # --- Status and account -------------------------------------------------------------------------
    c.click_and_load("#nav-status")
    check(c.find("#status-sandbox").text != "" and bool(c.all("#quota-skills, #quota-bytes, #quota-files")),
          "the status page shows the sandbox and the quotas")
    c.page("status")
    c.click_and_load("#nav-account")
    check(c.find("#profile-username").get_attribute("value") == "ada", "the account page shows the user")
    c.page("account")

    # --- A phone's width: no page scrolls sideways (wide tables and code scroll inside their own box) ----
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 375, "height": 740, "deviceScaleFactor": 2, "mobile": True})
    try:
        for path in ("/skills", skill_url, skill_url + "?file=scripts%2Fcollect.py", "/tokens", "/status", "/account"):
            c.go(path)
            wide = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            check(wide[1] == 375 and wide[0] <= wide[1], f"{path} fits a phone's width (375 px)",
                  f"the page is {wide[0]} px wide in a {wide[1]} px window")
            errors = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
            check(not errors, f"{path} at a phone's width: no error in the browser console", "; ".join(errors)[:600])
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # --- Server time of two pages (reported, not asserted) -------------------------------------------
    cookie = "; ".join(f"{k['name']}={k['value']}" for k in d.get_cookies() if k["name"].endswith("session"))
    for line in server_times(c.base, cookie, [("/skills", "console.skills"), (skill_url, "console.skill")]):
        print(f"  time {line}", flush=True)

    # --- Delete a skill ---------------------------------------------------------------------------------
    print("delete a skill", flush=True)
    c.go(csv_url)
    c.submit("#skill-delete-form", {"confirm": "csv-report"})
    check("skill-deleted" in c.path(), "deleting a skill returns to the list with a notice", c.path())
    names = sorted(r.get_attribute("data-skill-name") for r in c.all("[data-testid=skill-row]"))
    check(names == ["changelog-check", "hostile", "release-notes"], "and it is gone from the list", repr(names))
    c.page("skills list after deleting")
    c.go(csv_url)
    check(d.execute_script("return document.getElementById('error-page')?.dataset.status") == "404",
          "its page is gone (404)")
    c.page("a deleted skill's page", 404)
    c.click_and_load("#error-home")

    # --- Sign out: every page is closed -----------------------------------------------------------
    print("sign out", flush=True)
    c.click_and_load("#signout-button")
    check(c.path().startswith("/signin"), "signing out lands on the sign-in page", c.path())
    for path in ("/", "/skills", skill_url, skill_url + "?file=SKILL.md", "/tokens", "/status", "/account"):
        c.go(path)
        check(c.path() == "/signin", f"after signing out, {path} sends to the sign-in page", c.path())
    c.page("sign-in after signing out")
    oauth(c, a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the server, http://127.0.0.1:PORT")
    ap.add_argument("--work", required=True, help="a folder for the browser's profile and the uploads")
    ap.add_argument("--node-modules", required=True,
                    help="a node_modules with axe-core and the TypeScript MCP SDK (@modelcontextprotocol/sdk)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--screenshot", required=True, help="where to write the skill page's PNG")
    a = ap.parse_args()
    check = Checks()
    console = Console(a, check)
    try:
        walk(console, a)
    except Exception as e:  # noqa: BLE001: one failure stops the walk; report it as a failed check
        message = (getattr(e, "msg", None) or str(e)).strip().splitlines()
        check(False, "the walk went to its end", f"{type(e).__name__}: {message[0] if message else ''}")
        for frame in traceback.extract_tb(e.__traceback__):
            if frame.filename == __file__:
                print(f"       line {frame.lineno} in {frame.name}: {frame.line}", flush=True)
        if os.environ.get("BROWSER_DEBUG"):
            traceback.print_exc()
        try:
            print(f"       at {console.driver.current_url}", flush=True)
            console.driver.save_screenshot(str(Path(a.work) / "failure.png"))
        except Exception:  # noqa: BLE001
            pass
    finally:
        console.quit()
    print("first-load sizes (bytes, requests):", flush=True)
    for name, total, requests in console.sizes:
        print(f"  size {total:7d} B  {requests:2d} req  {name}", flush=True)
    print(f"{check.passed} passed, {check.failed} failed", flush=True)
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
