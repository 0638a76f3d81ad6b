#!/usr/bin/env python3
"""Compares agentskills-mcp with the original server, mcp-agentskills 0.1.2, tool by tool.

Both serve the same skill folder over stdio; the official Python SDK calls load_skill_metadata,
load_skill for every skill and read_reference_file for every other file of every skill, plus the
error cases, on both, and compares the texts. The original lists skills in file-system order and
this server by name, so metadata lines are compared as a set after the identical first line. Every
other text must be equal byte for byte, except the differences the README lists, which are checked
here to be exactly those. Exits 1 on any other difference.

With --expected FILE (tests/corpus/expected.json), a skill may differ where that file says why
(`original.metadata`: its metadata line; `original.load_skill`: its SKILL.md text), and each
difference declared must show: the list stays exactly the differences there are.

  compare_original.py --skills DIR --original "agentskills-mcp config=default ..." \\
      --ours "target/release/agentskills-mcp stdio --skills-dir DIR" [--expected FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


async def texts(command: str, calls: list[tuple[str, dict]]) -> list[tuple[str, bool]]:
    """The text and isError of each call, in order."""
    argv = shlex.split(command)
    params = StdioServerParameters(command=argv[0], args=argv[1:])
    answers = []
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            for name, arguments in calls:
                result = await session.call_tool(name, arguments)
                text = "".join(getattr(c, "text", "") for c in result.content)
                answers.append((text, bool(result.is_error)))
    return answers


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skills", required=True, type=Path)
    parser.add_argument("--original", required=True)
    parser.add_argument("--ours", required=True)
    parser.add_argument("--expected", type=Path)
    args = parser.parse_args()
    declared = json.loads(args.expected.read_text()) if args.expected else {}

    def differs(skill: str, what: str) -> str | None:
        """Why `skill`'s `what` differs from the original's, if that is declared."""
        return declared.get(skill, {}).get("original", {}).get(what)

    skills = sorted(p for p in args.skills.iterdir() if (p / "SKILL.md").is_file())
    calls: list[tuple[str, dict]] = [("load_skill_metadata", {})]
    for skill in skills:
        calls.append(("load_skill", {"skill_name": skill.name}))
        for f in sorted(p for p in skill.rglob("*") if p.is_file() and p.name != "SKILL.md"):
            calls.append(("read_reference_file",
                          {"skill_name": skill.name, "file_name": f.relative_to(skill).as_posix()}))
    # Errors: an unknown skill, and a file a skill does not have.
    errors = len(calls)
    calls.append(("load_skill", {"skill_name": "no-such-skill"}))
    calls.append(("read_reference_file", {"skill_name": skills[0].name, "file_name": "missing.md"}))

    original = asyncio.run(texts(args.original, calls))
    ours = asyncio.run(texts(args.ours, calls))

    failed = 0
    for n, ((name, arguments), (theirs, their_error), (mine, my_error)) in enumerate(
            zip(calls, original, ours, strict=True)):
        what = f"{name} {arguments}"
        if name == "load_skill_metadata":
            their_lines, my_lines = theirs.split("\n"), mine.split("\n")
            # Sorted by name (not by line: `folded-strip` sorts after `folded`).
            names = [line[2:].split(": ", 1)[0] for line in my_lines[1:]]
            sorted_here = names == sorted(names)
            only_mine = set(my_lines[1:]) - set(their_lines[1:])
            only_theirs = set(their_lines[1:]) - set(my_lines[1:])
            # Every line of ours the original does not have belongs to a skill whose difference
            # is declared, and every declared difference shows.
            mine_by_skill = {line[2:].split(": ", 1)[0]: line
                             for line in my_lines[1:] if line.startswith("- ")}
            expected_diff = {s for s in mine_by_skill if differs(s, "metadata")}
            actual_diff = {s for s, line in mine_by_skill.items() if line in only_mine}
            ok = (their_lines[0] == my_lines[0] and sorted_here
                  and actual_diff == expected_diff and len(only_theirs) <= len(expected_diff))
            for skill in sorted(expected_diff ^ actual_diff):
                print(f"  metadata of {skill}: declared different: {bool(differs(skill, 'metadata'))},"
                      f" is different: {skill in actual_diff}")
        elif n >= errors:
            # The original answers errors as ordinary text; this server says the same words in a
            # result marked isError (README: differences).
            ok = my_error and not their_error and mine == theirs
        elif name == "load_skill" and differs(arguments["skill_name"], "load_skill"):
            ok = not my_error and mine != theirs
            what += f" (differs as declared: {differs(arguments['skill_name'], 'load_skill')})"
        else:
            ok = not my_error and mine == theirs
        if not ok:
            failed += 1
            print(f"  FAIL {what}\n       original: {theirs!r} (isError {their_error})\n"
                  f"       ours:     {mine!r} (isError {my_error})")
        else:
            print(f"  ok   {what}")
    print(f"{len(calls) - failed} of {len(calls)} calls answer as mcp-agentskills 0.1.2 does")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
