#!/usr/bin/env python3
"""Interop driver on the official MCP Python SDK (`mcp` on PyPI, see requirements.txt).

Connects to agentskills-mcp, then checks what it serves against the skill folders in --skills:
tools/list, load_skill_metadata, search_skills (each skill found by its description, best first,
in load_skill_metadata's line format; an empty query an error), load_skill and read_reference_file
for every file of every skill, resources/list and resources/read, and an unknown skill as an error. Prints one line per
check and exits 1 if any check fails or the connection breaks.

  client.py --url http://127.0.0.1:8000/mcp --skills DIR             # Streamable HTTP
  client.py --url http://127.0.0.1:8000/sse --transport sse --skills DIR
  client.py --url http://127.0.0.1:8000/mcp --era modern --skills DIR # 2026-07-28: server/discover
  client.py --transport stdio --skills DIR -- agentskills-mcp stdio --skills-dir DIR

The bearer token comes from $MCP_TOKEN (or --token).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import sys
from importlib.metadata import version as pkg_version
from pathlib import Path

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import PaginatedRequestParams

TOOLS = ("load_skill_metadata", "load_skill", "read_reference_file", "run_shell_command", "search_skills")


def load_expected(root: Path) -> list[dict]:
    """Each sub-folder with a SKILL.md: its front matter's name and description, and its files."""
    skills = []
    for d in sorted(p for p in root.iterdir() if (p / "SKILL.md").is_file()):
        md = (d / "SKILL.md").read_text(encoding="utf-8")
        front = md.split("---", 2)[1]
        field = lambda k: re.search(rf"^{k}:\s*(.+?)\s*$", front, re.M).group(1)  # noqa: E731
        files = {p.relative_to(d).as_posix(): p.read_text(encoding="utf-8")
                 for p in sorted(d.rglob("*")) if p.is_file()}
        skills.append({"name": field("name"), "description": field("description"), "files": files})
    if not skills:
        raise SystemExit(f"no skills under {root}")
    return skills


class Checks:
    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str, detail: str = "") -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}{'' if ok or not detail else ': ' + detail}", flush=True)
        self.failed += not ok
        return ok

    def equal(self, got, want, what: str) -> bool:
        if got == want:
            return self(True, what)
        if isinstance(got, str) and isinstance(want, str):
            i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            return self(False, what, f"differs at char {i} (got {len(got)} chars, want {len(want)}): "
                                     f"got {got[max(0, i - 20):i + 40]!r}, want {want[max(0, i - 20):i + 40]!r}")
        return self(False, what, f"got {got!r}, want {want!r}")


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def all_pages(fn, key: str) -> list:
    items, cursor = [], None
    for _ in range(100):
        res = await fn(params=PaginatedRequestParams(cursor=cursor)) if cursor else await fn()
        items.extend(getattr(res, key))
        cursor = res.next_cursor
        if not cursor:
            break
    return items


# The prefix of the `_meta` keys the server adds.
META = "io.github.agentskills-mcp"


async def exercise(session: ClientSession, a, skills: list[dict], check: Checks) -> None:
    if a.era == "modern":
        await session.discover()
        check(str(session.protocol_version).startswith("2026-"), f"server/discover: {session.protocol_version}",
              "not a 2026 protocol version")
    else:
        init = await session.initialize()
        check(init.server_info.name == "agentskills-mcp", f"initialize: {init.protocol_version}",
              f"serverInfo.name {init.server_info.name!r}")
        await session.send_ping()
        check(True, "ping")

    tools = {t.name: t for t in await all_pages(session.list_tools, "tools")}
    missing = [n for n in TOOLS if n not in tools or not tools[n].description]
    check(not missing, f"tools/list: {len(tools)} tools", f"missing or without description: {missing}")

    res = await session.call_tool("load_skill_metadata", {})
    text = text_of(res)
    lines = [f"- {s['name']}: {s['description']}" for s in skills]
    absent = [line for line in lines if line not in text.splitlines()]
    check(not res.is_error and not absent, "load_skill_metadata lists every skill",
          f"isError={res.is_error}, missing {absent}, got {text[:300]!r}")

    # search_skills: each skill is the best match for its own description, and every line of the
    # answer is a line of load_skill_metadata's listing.
    listing = set(text.splitlines()[1:])
    for s in skills:
        res = await session.call_tool("search_skills", {"query": s["description"], "limit": 3})
        found = text_of(res).splitlines()
        ok = (not res.is_error and len(found) >= 2 and found[0].startswith("Skills matching ")
              and found[1] == f"- {s['name']}: {s['description']}"
              and all(line in listing for line in found[1:]) and len(found) <= 4)
        check(ok, f"search_skills finds {s['name']} first", f"isError={res.is_error}, got {text_of(res)[:300]!r}")
    res = await session.call_tool("search_skills", {"query": " "})
    check(bool(res.is_error) and "must not be empty" in text_of(res), "search_skills of an empty query is an error",
          f"got {text_of(res)[:200]!r}")

    for s in skills:
        res = await session.call_tool("load_skill", {"skill_name": s["name"]})
        if check(not res.is_error, f"load_skill {s['name']}", text_of(res)[:200]):
            check.equal(text_of(res), s["files"]["SKILL.md"], f"load_skill {s['name']} = SKILL.md as uploaded")
        for path, body in s["files"].items():
            if path == "SKILL.md":
                continue
            res = await session.call_tool("read_reference_file", {"skill_name": s["name"], "file_name": path})
            if check(not res.is_error, f"read_reference_file {s['name']}/{path}", text_of(res)[:200]):
                check.equal(text_of(res), body, f"read_reference_file {s['name']}/{path} = the file")

    res = await session.call_tool("load_skill", {"skill_name": "no-such-skill"})
    check(bool(res.is_error), "load_skill of an unknown skill is an error", f"got {text_of(res)[:200]!r}")

    resources = {str(r.uri): r for r in await all_pages(session.list_resources, "resources")}
    want = [f"skill://{s['name']}/{p}" for s in skills for p in s["files"]]
    absent = [u for u in want if u not in resources]
    check(not absent, f"resources/list: {len(resources)} resources", f"missing {absent}")
    for s in skills:
        for path, body in s["files"].items():
            uri = f"skill://{s['name']}/{path}"
            contents = (await session.read_resource(uri)).contents
            got = "".join(getattr(c, "text", "") for c in contents)
            check.equal(got, body, f"resources/read {uri}")
            # The listing names each file's digest and its skill's version (in `_meta`, which the
            # SDK keeps as `meta`).
            meta = (resources[uri].meta or {}) if uri in resources else {}
            check.equal(meta.get(f"{META}/sha256"), hashlib.sha256(body.encode()).hexdigest(),
                        f"resources/list {uri}: _meta sha256")
            # A skill stored by the service has versions; a plain folder (--skills-dir) has none.
            version = meta.get(f"{META}/version")
            check(version is None if "--skills-dir" in a.command else isinstance(version, int) and version >= 1,
                  f"resources/list {uri}: _meta version", f"got {meta!r}")


async def run(a) -> int:
    skills = load_expected(Path(a.skills))
    check = Checks()
    token = a.token or os.environ.get("MCP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    where = re.sub(r"ask_live_[0-9a-f]+", "ask_live_…", a.url or " ".join(a.command))
    print(f"python mcp {pkg_version('mcp')}, {a.transport}{' (' + a.era + ')' if a.era != 'legacy' else ''}: {where}",
          flush=True)
    async with contextlib.AsyncExitStack() as stack:
        if a.transport == "stdio":
            params = StdioServerParameters(command=a.command[0], args=a.command[1:], env=dict(os.environ))
            streams = await stack.enter_async_context(stdio_client(params))
        elif a.transport == "sse":
            streams = await stack.enter_async_context(sse_client(a.url, headers=headers, timeout=a.timeout))
        else:
            http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
            streams = await stack.enter_async_context(streamable_http_client(a.url, http_client=http))
        session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
        await asyncio.wait_for(exercise(session, a, skills, check), a.timeout)
    return 1 if check.failed else 0


def flatten(e: BaseException) -> list[BaseException]:
    subs = getattr(e, "exceptions", None)  # an exception group, from anyio's task groups
    return [x for sub in subs for x in flatten(sub)] if isinstance(subs, tuple) else [e]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--transport", choices=["streamable-http", "sse", "stdio"], default="streamable-http")
    ap.add_argument("--era", choices=["legacy", "modern"], default="legacy",
                    help="legacy: the initialize handshake; modern: 2026-07-28 server/discover, stateless")
    ap.add_argument("--token")
    ap.add_argument("--skills", required=True, help="the skill folders the server was given")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("command", nargs="*", help="after --: the server command line, for stdio")
    a = ap.parse_args()
    if (a.transport == "stdio") != bool(a.command) or (a.transport != "stdio" and not a.url):
        ap.error("give --url, or --transport stdio -- COMMAND...")
    try:
        return asyncio.run(run(a))
    except Exception as e:  # report any failure to connect or talk as one line
        for x in flatten(e):
            print(f"  FAIL {type(x).__name__}: {x}", flush=True)
        if os.environ.get("INTEROP_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
