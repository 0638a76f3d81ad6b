#!/usr/bin/env python3
"""Plays the person in an OAuth authorization: the browser between an MCP client and agentskills-mcp.

Given the authorization URL a client opened, it does over HTTP what a person does in a browser,
with a cookie jar: GET the URL; if the server sends it to sign in, read the sign-in form
(#signin-form), post it back with the user's name and password; on the consent page read
#consent-form and post it back with decision=allow; then read where the server redirects
(`redirect_uri?code=…&state=…&iss=…`), without going there. Every step is checked against what
the server promises (see tests/interop/run.sh) and a failure says what was sent and what came back.

Used by oauth_client.py (as a module), and by run.sh for the conformance runner's authorization
code grant (as a command): it waits for the runner to print the URL, plays the user, and then
delivers the redirect to the runner's callback server.

  oauth_user.py --from-log RUNNER_LOG --user NAME --password PW --deliver
  oauth_user.py --authorize-url URL --user NAME --password PW        # prints the redirect
"""
from __future__ import annotations

import argparse
import asyncio
import html
import re
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urljoin, urlsplit

import httpx2


class FlowError(Exception):
    """A step of the sign-in and consent flow did not go as the server promises."""


@dataclass
class Form:
    id: str | None
    action: str | None
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)  # hidden and text inputs, in order
    buttons: list[tuple[str, str]] = field(default_factory=list)  # named submit buttons

    def hidden(self) -> dict[str, str]:
        return dict(self.fields)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._open = Form(a.get("id"), a.get("action"), (a.get("method") or "get").lower())
            self.forms.append(self._open)
        elif self._open is None or "name" not in a:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("submit", "image"):
                self._open.buttons.append((a["name"], a.get("value", "")))
            elif kind not in ("checkbox", "radio") or "checked" in a:
                self._open.fields.append((a["name"], a.get("value", "")))
        elif tag == "button" and a.get("type", "submit").lower() == "submit":
            self._open.buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def forms_of(page: str) -> list[Form]:
    p = _FormParser()
    p.feed(page)
    p.close()
    return p.forms


def form_by_id(page: str, form_id: str, where: str) -> Form:
    for f in forms_of(page):
        if f.id == form_id:
            return f
    ids = [f.id for f in forms_of(page)]
    raise FlowError(f"{where}: no <form id=\"{form_id}\"> (forms: {ids}); the page says {page_text(page)!r}")


def snippet(text: str, n: int = 300) -> str:
    return re.sub(r"\s+", " ", text)[:n]


def page_text(body: str) -> str:
    """What a page says to the person: its alert if it has one, else its text without the markup."""
    alert = re.search(r"<[^>]*\brole=\"alert\"[^>]*>(.*?)</", body, re.S)
    text = alert.group(1) if alert else re.sub(r"<(script|style|head)\b.*?</\1>", " ", body, flags=re.S | re.I)
    return ("alert: " if alert else "") + snippet(html.unescape(re.sub(r"<[^>]+>", " ", text)), 240).strip()


def describe(r: httpx2.Response) -> str:
    loc = r.headers.get("location")
    return (f"{r.request.method} {r.request.url.copy_with(query=None)} -> {r.status_code}"
            + (f" Location: {loc}" if loc else f" {page_text(r.text)!r}"))


@dataclass
class Authorized:
    location: str  # where the server redirected to, not followed
    code: str
    state: str | None
    iss: str | None
    signed_in: bool  # whether the sign-in form had to be filled in (else the browser's session was used)
    consent_page: str


def new_browser() -> httpx2.AsyncClient:
    """A browser: a cookie jar, no redirect following (each step is read as it comes)."""
    return httpx2.AsyncClient(follow_redirects=False, timeout=30.0,
                              headers={"User-Agent": "agentskills-interop (oauth_user.py)"})


async def authorize(browser: httpx2.AsyncClient, authorize_url: str, login: str, password: str, *,
                    decision: str = "allow", client_name: str | None = None, log=print) -> Authorized:
    """Plays the user on `authorize_url`; returns the redirect the server answered with."""
    parts = urlsplit(authorize_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    asked = dict(parse_qsl(parts.query, keep_blank_values=True))
    redirect_uri = asked.get("redirect_uri", "")

    r = await browser.get(authorize_url)
    signed_in = False
    if r.status_code in (302, 303) and urlsplit(r.headers.get("location", "")).path == "/signin":
        signin_url = urljoin(origin, r.headers["location"])
        nxt = parse_qs(urlsplit(signin_url).query).get("next", [""])[0]
        if r.status_code != 303 or urlsplit(nxt).path != parts.path:
            raise FlowError(f"not signed in: want 303 to /signin?next=<the authorize request>, got {describe(r)}")
        r = await browser.get(signin_url)
        if r.status_code != 200:
            raise FlowError(f"sign-in page: {describe(r)}")
        form = form_by_id(r.text, "signin-form", "sign-in page")
        data = form.hidden()
        missing = [k for k in ("csrf", "next") if not data.get(k)]
        if missing or form.method != "post":
            raise FlowError(f"sign-in form: method {form.method}, fields {list(data)}; missing {missing}")
        data.update(login=login, password=password)
        action = urljoin(signin_url, form.action or signin_url)
        r = await browser.post(action, data=data, headers={"Origin": origin})
        if r.status_code != 303 or not r.headers.get("location"):
            raise FlowError(f"sign-in as {login!r}: want 303 to next, got {describe(r)}")
        back = urljoin(action, r.headers["location"])
        if urlsplit(back).path != parts.path:
            raise FlowError(f"sign-in: redirected to {r.headers['location']!r}, not back to the authorize request")
        log(f"  ok   signed in as {login} (sign-in form, 303 back to the authorize request)")
        signed_in = True
        r = await browser.get(back)
        page_url = back
    else:
        page_url = authorize_url

    if r.status_code != 200:
        raise FlowError(f"consent page: want 200, got {describe(r)}")
    page = r.text
    form = form_by_id(page, "consent-form", "consent page")
    data = form.hidden()
    if form.method != "post" or not data.get("csrf"):
        raise FlowError(f"consent form: method {form.method}, fields {list(data)} (want post with csrf)")
    # Every parameter of the request travels in the form.
    lost = {k: v for k, v in asked.items() if data.get(k) != v}
    if lost:
        raise FlowError(f"consent form: request parameters missing or changed: {sorted(lost)} "
                        f"(form has {sorted(data)})")
    if ("decision", decision) not in form.buttons:
        raise FlowError(f"consent form: no submit button decision={decision} (buttons {form.buttons})")
    if client_name is not None and client_name not in page:
        raise FlowError(f"consent page does not name the client {client_name!r}: {snippet(page, 500)!r}")
    log(f"  ok   consent page: #consent-form carries csrf and the request's {len(asked)} parameters"
        + (f", names {client_name!r}" if client_name else ""))

    data["decision"] = decision
    action = urljoin(page_url, form.action or page_url)
    r = await browser.post(action, data=data, headers={"Origin": origin})
    location = r.headers.get("location", "")
    if r.status_code != 303 or not location:
        raise FlowError(f"consent {decision}: want 303 to the redirect_uri, got {describe(r)}")
    if location.split("?", 1)[0] != redirect_uri:
        raise FlowError(f"consent {decision}: redirected to {location!r}, not to redirect_uri {redirect_uri!r}")
    got = parse_qs(urlsplit(location).query, keep_blank_values=True)
    once = {k: v[0] for k, v in got.items() if len(v) == 1}
    twice = [k for k, v in got.items() if len(v) > 1]
    if twice:
        raise FlowError(f"consent {decision}: parameters repeated in the redirect: {twice}")
    if "state" in asked and once.get("state") != asked["state"]:
        raise FlowError(f"consent {decision}: state {once.get('state')!r}, want {asked['state']!r}")
    if once.get("iss") != origin:
        raise FlowError(f"consent {decision}: iss {once.get('iss')!r}, want {origin!r} (RFC 9207)")
    if decision == "allow" and not once.get("code"):
        raise FlowError(f"consent allow: no code in the redirect ({sorted(once)}; error={once.get('error')!r})")
    if decision != "allow" and once.get("error") != "access_denied":
        raise FlowError(f"consent {decision}: want error=access_denied, got {sorted(once)}")
    log(f"  ok   consent {decision}: 303 to the redirect_uri with {', '.join(sorted(once))}")
    return Authorized(location, once.get("code", ""), once.get("state"), once.get("iss"), signed_in, page)


def wait_for_url(log_file: Path, timeout: float) -> str:
    """The authorization URL a conformance runner printed (a line of its own) into `log_file`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        m = re.search(r"^(https?://\S+[?&]response_type=code\S*)$", text, re.M)
        if m:
            return m.group(1)
        time.sleep(0.1)
    raise FlowError(f"no authorization URL in {log_file} after {timeout:.0f}s; it says {snippet(text, 600)!r}")


async def run(a) -> int:
    url = a.authorize_url or wait_for_url(Path(a.from_log), a.timeout)
    print(f"authorize: {urlsplit(url).scheme}://{urlsplit(url).netloc}{urlsplit(url).path}", flush=True)
    async with new_browser() as browser:
        done = await authorize(browser, url, a.user, a.password, decision=a.decision)
        if a.deliver:
            # The redirect goes to the client's callback server (the runner's), as a browser would.
            async with httpx2.AsyncClient(timeout=30.0) as http:
                r = await http.get(done.location)
            if r.status_code != 200:
                raise FlowError(f"delivering the redirect: {describe(r)}")
            print("  ok   delivered the redirect to the callback", flush=True)
        else:
            print(done.location)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--authorize-url")
    src.add_argument("--from-log", help="wait for a line holding the authorization URL in this file")
    ap.add_argument("--user", required=True, help="user name or email for the sign-in form")
    ap.add_argument("--password", required=True)
    ap.add_argument("--decision", choices=["allow", "deny"], default="allow")
    ap.add_argument("--deliver", action="store_true", help="GET the redirect (to the client's callback server)")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    try:
        return asyncio.run(run(a))
    except (FlowError, httpx2.HTTPError) as e:
        print(f"  FAIL {type(e).__name__}: {e}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
