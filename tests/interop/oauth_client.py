#!/usr/bin/env python3
"""OAuth interop driver on the official MCP Python SDK's `OAuthClientProvider` (`mcp`, requirements.txt).

Connects to agentskills-mcp with no token, so that the SDK runs the whole OAuth 2.1 flow the server
offers: protected resource metadata from the 401's WWW-Authenticate, authorization server metadata,
then either dynamic client registration (--registration dcr) or a client ID metadata document
(--registration cimd) that this script serves itself on a loopback http server, PKCE, and the
authorization request, where oauth_user.py plays the person (sign-in form, consent form, allow) and
hands the code, state and iss back to the SDK. Then, in three phases, each printing one line per check:

1. first connection: the full flow (one sign-in), what the SDK discovered and stored (a refresh token,
   both scopes), the tools (tools/list, load_skill_metadata, load_skill of every skill, as uploaded);
   then the access token is made to look expired and the SDK refreshes it mid-session (rotated, no
   person involved) and the next tool call works;
2. a restarted client (a new provider on the same token store): no person involved;
3. the refresh token revoked (RFC 7009 at the revocation endpoint; refreshing with it is refused),
   then the first client again with its access token made to look expired: its refresh is refused,
   and the SDK sends the person through the authorization again (already signed in: consent only) and
   goes on. (The first client, because a restarted SDK 2.3.0 client holds no metadata before its first
   401 and would post its refresh to <origin>/token, the 2025-03-26 default, not the token endpoint.)

  oauth_client.py --url http://127.0.0.1:8000/mcp --registration dcr --user ann --password PW --skills DIR
  oauth_client.py --url http://127.0.0.1:8000/sse --transport sse --registration cimd ...

Exits 1 if any check fails or the connection breaks; the requests the SDK made are listed then.

SDK 2.3.0 accepts `client_metadata_url` only as an https URL (its constructor refuses others), but the
document is served here over http on loopback (which the server fetches only with
AGENTSKILLS_OAUTH_CIMD_ALLOW_LOOPBACK=true). So the URL is set on the provider's context after the
constructor's check: from there the SDK's own CIMD path runs unchanged (it uses the URL as client_id
when the server advertises client_id_metadata_document_supported, and registers nothing).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version as pkg_version
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from client import Checks, flatten, load_expected, text_of
from oauth_user import authorize, new_browser

SCOPES = ("skills:read", "skills:run")


class MemoryStorage(TokenStorage):
    """The client's token store: what an application would keep on disk between runs."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class ClientSite:
    """The client's own loopback web site: its client ID metadata document and its redirect URI."""

    def __init__(self, client_name: str) -> None:
        site = self
        self.fetches = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                if path == "/oauth/client-metadata.json":
                    site.fetches += 1
                    body, kind = json.dumps(site.document).encode(), "application/json"
                elif path == "/callback":
                    body, kind = b"You can close this window.", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.metadata_url = f"{origin}/oauth/client-metadata.json"
        self.redirect_uri = f"{origin}/callback"
        self.document = {
            "client_id": self.metadata_url,
            "client_name": client_name,
            "client_uri": origin,
            "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Person:
    """The redirect and callback handlers: play the user in a browser that keeps its cookies."""

    def __init__(self, login: str, password: str, client_name: str) -> None:
        self.browser = new_browser()
        self.login, self.password, self.client_name = login, password, client_name
        self.plays: list = []  # one oauth_user.Authorized per authorization the SDK asked for
        self.asked: list[str] = []  # the authorization URLs

    async def redirect_handler(self, authorization_url: str) -> None:
        print("  ..   the SDK opens the authorization URL: the person signs in and allows", flush=True)
        self.asked.append(authorization_url)
        self.plays.append(await authorize(self.browser, authorization_url, self.login, self.password,
                                          client_name=self.client_name))

    async def callback_handler(self) -> AuthorizationCodeResult:
        done = self.plays[-1]
        return AuthorizationCodeResult(code=done.code, state=done.state, iss=done.iss)


class RequestLog:
    """Every request the SDK's HTTP client makes (auth flow included), to show when something fails."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def hook(self, response: httpx2.Response) -> None:
        req = response.request
        self.lines.append(f"{req.method} {req.url.copy_with(query=None)} -> {response.status_code}")

    def factory(self, headers=None, timeout=None, auth=None) -> httpx2.AsyncClient:
        http = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        http.event_hooks["response"].append(self.hook)
        return http

    def since(self, mark: int) -> list[str]:
        return self.lines[mark:]


@contextlib.asynccontextmanager
async def connect(a, provider: OAuthClientProvider, log: RequestLog):
    async with contextlib.AsyncExitStack() as stack:
        if a.transport == "sse":
            streams = await stack.enter_async_context(
                sse_client(a.url, timeout=30.0, httpx_client_factory=log.factory, auth=provider))
        else:
            http = await stack.enter_async_context(log.factory(auth=provider))
            streams = await stack.enter_async_context(streamable_http_client(a.url, http_client=http))
        session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
        await session.initialize()
        yield session


async def use_tools(session: ClientSession, skills: list[dict], check: Checks, everything: bool) -> None:
    if everything:
        tools = {t.name for t in (await session.list_tools()).tools}
        check({"load_skill_metadata", "load_skill", "run_shell_command"} <= tools,
              f"tools/list: {len(tools)} tools (run_shell_command too: skills:run granted)", f"got {sorted(tools)}")
    res = await session.call_tool("load_skill_metadata", {})
    lines = [f"- {s['name']}: {s['description']}" for s in skills]
    absent = [line for line in lines if line not in text_of(res).splitlines()]
    check(not res.is_error and not absent, "load_skill_metadata lists every skill",
          f"isError={res.is_error}, missing {absent}, got {text_of(res)[:300]!r}")
    for s in (skills if everything else skills[:1]):
        res = await session.call_tool("load_skill", {"skill_name": s["name"]})
        if check(not res.is_error, f"load_skill {s['name']}", text_of(res)[:200]):
            check.equal(text_of(res), s["files"]["SKILL.md"], f"load_skill {s['name']} = SKILL.md as uploaded")


def new_provider(a, storage: MemoryStorage, site: ClientSite, person: Person) -> OAuthClientProvider:
    metadata = OAuthClientMetadata(
        client_name=person.client_name,
        redirect_uris=[site.redirect_uri],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    provider = OAuthClientProvider(server_url=a.url, client_metadata=metadata, storage=storage,
                                   redirect_handler=person.redirect_handler,
                                   callback_handler=person.callback_handler)
    if a.registration == "cimd":
        # The constructor takes only https here (see the module's doc); this is the field it sets.
        provider.context.client_metadata_url = site.metadata_url
    return provider


async def phase_first(a, check, skills, storage, site, person, log, base) -> OAuthClientProvider:
    print("first connection: the full flow", flush=True)
    provider = new_provider(a, storage, site, person)
    async with connect(a, provider, log) as session:
        ctx = provider.context
        check(len(person.plays) == 1 and person.plays[0].signed_in, "the person was asked once, and signed in",
              f"{len(person.plays)} authorizations")
        prm = ctx.protected_resource_metadata
        check(prm is not None and str(prm.resource) == a.url
              and [str(s).rstrip("/") for s in prm.authorization_servers] == [base],
              f"protected resource metadata: resource {a.url}, authorization server {base}",
              f"got {prm.model_dump(mode='json') if prm else None}")
        asked = {k: v[0] for k, v in parse_qs(urlsplit(person.asked[0]).query).items()} if person.asked else {}
        check(asked.get("resource") == a.url and asked.get("code_challenge_method") == "S256"
              and set(SCOPES) <= set(asked.get("scope", "").split()),
              f"the authorization request: resource {a.url}, S256, scope {' '.join(SCOPES)} (from the 401)",
              f"resource {asked.get('resource')!r}, method {asked.get('code_challenge_method')!r}, scope {asked.get('scope')!r}")
        asm = ctx.oauth_metadata
        check(asm is not None and str(asm.issuer).rstrip("/") == base
              and asm.client_id_metadata_document_supported is True,
              f"authorization server metadata: issuer {base}, client ID metadata documents supported",
              f"got {asm.model_dump(mode='json', exclude_none=True) if asm else None}")
        client_id = storage.client_info.client_id if storage.client_info else None
        registered = [line for line in log.lines if asm and line.startswith(f"POST {asm.registration_endpoint} ")]
        if a.registration == "cimd":
            check(client_id == site.metadata_url and not registered and site.fetches >= 1,
                  f"client ID metadata document: client_id is its URL, the server fetched it ({site.fetches}x), "
                  f"no registration", f"client_id {client_id!r}, registrations {registered}, fetches {site.fetches}")
        else:
            check(bool(client_id) and client_id != site.metadata_url and len(registered) == 1
                  and registered[0].endswith(("-> 200", "-> 201")),
                  f"dynamic client registration: client_id {client_id}", f"registrations {registered}")
        tokens = storage.tokens
        scopes = set((tokens.scope or "").split()) if tokens else set()
        check(tokens is not None and bool(tokens.refresh_token) and set(SCOPES) <= scopes
              and (tokens.expires_in or 0) > 0,
              "the token store holds an access token, a refresh token, both scopes, an expiry",
              f"refresh_token {'set' if tokens and tokens.refresh_token else 'missing'}, scope {scopes or None}, "
              f"expires_in {tokens.expires_in if tokens else None}")
        await use_tools(session, skills, check, everything=True)

        # The access token looks expired: the SDK refreshes before the next request.
        before = storage.tokens
        mark = len(log.lines)
        ctx.token_expiry_time = time.time() - 1
        await use_tools(session, skills, check, everything=False)
        after = storage.tokens
        token_posts = [line for line in log.since(mark) if asm and line.startswith(f"POST {asm.token_endpoint} ")]
        check(len(person.plays) == 1 and len(token_posts) == 1 and after is not before
              and after.access_token != before.access_token
              and bool(after.refresh_token) and after.refresh_token != before.refresh_token,
              "an expired access token is refreshed mid-session: new access and refresh tokens, nobody asked",
              f"token requests {token_posts}, authorizations {len(person.plays)}, "
              f"refresh token {'rotated' if after.refresh_token != before.refresh_token else 'the same'}")
    return provider


async def phase_restart(a, check, skills, storage, site, person, log) -> None:
    print("a restarted client: the stored tokens", flush=True)
    mark, plays = len(log.lines), len(person.plays)
    provider = new_provider(a, storage, site, person)
    async with connect(a, provider, log) as session:
        await use_tools(session, skills, check, everything=False)
    unauthorized = [line for line in log.since(mark) if line.endswith("-> 401")]
    check(len(person.plays) == plays and not unauthorized, "no 401, nobody asked",
          f"401s: {unauthorized}, authorizations {len(person.plays) - plays}")


async def phase_revoked(a, check, skills, storage, site, person, log, first: OAuthClientProvider) -> None:
    print("the refresh token revoked, then the SDK authorizes again", flush=True)
    asm = first.context.oauth_metadata
    revoked = storage.tokens.refresh_token
    client_id = storage.client_info.client_id
    async with httpx2.AsyncClient(timeout=30.0) as http:
        r = await http.post(str(asm.revocation_endpoint),
                            data={"token": revoked, "token_type_hint": "refresh_token", "client_id": client_id})
        check(r.status_code == 200, f"POST {asm.revocation_endpoint} (RFC 7009) -> 200",
              f"{r.status_code} {r.text[:200]!r}")
        r = await http.post(str(asm.token_endpoint), data={"grant_type": "refresh_token", "refresh_token": revoked,
                                                           "client_id": client_id, "resource": a.url})
        err = r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
        check(r.status_code == 400 and err == "invalid_grant", "refreshing with the revoked token -> 400 invalid_grant",
              f"{r.status_code} {r.text[:200]!r}")

    # The first client again (it knows the token endpoint), its access token now expired: it refreshes
    # with the revoked token, is refused, and starts over with the person.
    mark, plays = len(log.lines), len(person.plays)
    first.context.token_expiry_time = time.time() - 1
    async with connect(a, first, log) as session:
        await use_tools(session, skills, check, everything=False)
    refused = [line for line in log.since(mark) if line.startswith(f"POST {asm.token_endpoint} ")][:1]
    check(refused == [f"POST {asm.token_endpoint} -> 400"] and len(person.plays) == plays + 1
          and not person.plays[-1].signed_in,
          "the SDK's refresh was refused (400), it sent the person through the authorization again "
          "(still signed in: consent only)",
          f"first token request {refused}, authorizations {len(person.plays) - plays}, "
          f"sign-in form {'shown' if person.plays[-1].signed_in else 'not shown'}")
    check(storage.tokens.refresh_token not in (None, revoked), "new tokens in the store")


async def run(a) -> int:
    skills = load_expected(Path(a.skills))
    check = Checks()
    parts = urlsplit(a.url)
    base = f"{parts.scheme}://{parts.netloc}"
    client_name = f"agentskills interop: python sdk, {a.transport}, {a.registration}"
    print(f"python mcp {pkg_version('mcp')} OAuthClientProvider, {a.transport}, {a.registration}: {a.url}", flush=True)
    site = ClientSite(client_name)
    person = Person(a.user, a.password, client_name)
    storage = MemoryStorage()
    log = RequestLog()
    try:
        first = await asyncio.wait_for(phase_first(a, check, skills, storage, site, person, log, base), a.timeout)
        await asyncio.wait_for(phase_restart(a, check, skills, storage, site, person, log), a.timeout)
        await asyncio.wait_for(phase_revoked(a, check, skills, storage, site, person, log, first), a.timeout)
    except BaseException:
        print_log(log)
        raise
    finally:
        await person.browser.aclose()
        site.close()
    if check.failed:
        print_log(log)
    return 1 if check.failed else 0


def print_log(log: RequestLog) -> None:
    print("  the SDK's requests:", flush=True)
    for line in log.lines[-40:]:
        print(f"    {line}", flush=True)


class OneLine(logging.Filter):
    """The SDK logs its OAuth failures with a traceback; the check lines already say what failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


def main() -> int:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  log  %(name)s: %(message)s"))
    handler.addFilter(OneLine())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the MCP endpoint: .../mcp or .../sse")
    ap.add_argument("--transport", choices=["http", "sse"], default="http")
    ap.add_argument("--registration", choices=["dcr", "cimd"], default="dcr")
    ap.add_argument("--user", required=True, help="the user name (or email) for the sign-in form")
    ap.add_argument("--password", required=True)
    ap.add_argument("--skills", required=True, help="the skill folders the user uploaded")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for each phase")
    a = ap.parse_args()
    try:
        return asyncio.run(run(a))
    except Exception as e:  # report any failure to connect, authorize or talk as lines
        for x in flatten(e):
            print(f"  FAIL {type(x).__name__}: {x}", flush=True)
        if os.environ.get("INTEROP_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
