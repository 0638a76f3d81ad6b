#!/usr/bin/env python3
"""Three replicas of the release server on one PostgreSQL database and one S3 bucket, behind
HAProxy with deploy/haproxy.cfg: the acceptance scenarios of issue 18.

Run by tests/replicas/run.sh, which makes the database and the bucket and passes them in the
environment (DATABASE_URL, AGENTSKILLS_S3_ENDPOINT, AGENTSKILLS_S3_BUCKET, AWS_*). This script
starts the replicas and HAProxy itself, since scenarios stop, kill and restart replicas.

Standard library only: HTTP, multipart, MCP (Streamable HTTP, 2026-07-28 stateless, legacy SSE)
are spoken by hand, as tests/api does.

Each scenario prints `ok` and `FAIL` lines, then one `PASS`/`FAIL` line for itself; the run ends
with "N passed, N failed" (scenarios) and exits 1 if any failed. "Within a second" is measured by
polling with a deadline (DEADLINE); polling goes on for a while after it (PATIENCE) so that a
failure says how long the change really took, or that it never came.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import http.client
import io
import json
import os
import queue
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

DEADLINE = 1.0  # the "within a second"
PATIENCE = 6.0  # how long to keep looking past the deadline, to tell how late (or never)
TOKEN_PATIENCE = 8.0  # a new API token reaching every replica (the epoch poll is 5 s)
SESSION_VERSION = "2025-11-25"
STATELESS_VERSION = "2026-07-28"
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ["haproxy", "jwt", "upload", "revoke", "session", "sse", "concurrent", "wipe", "sigkill", "rolling"]


# ---------------------------------------------------------------------------------------------
# Reporting


class Report:
    """The checks of one scenario."""

    def __init__(self, name: str):
        self.name = name
        self.failed = 0
        self.passed = 0

    def ok(self, message: str) -> None:
        self.passed += 1
        print(f"  ok    {self.name}: {message}", flush=True)

    def fail(self, message: str) -> None:
        self.failed += 1
        print(f"  FAIL  {self.name}: {message}", flush=True)

    def check(self, condition: bool, message: str, detail: str = "") -> bool:
        if condition:
            self.ok(message)
        else:
            self.fail(message + (f" ({detail})" if detail else ""))
        return condition

    def info(self, message: str) -> None:
        print(f"  ..    {self.name}: {message}", flush=True)


class Abort(Exception):
    """A step a scenario cannot go on without failed (already reported)."""


def must(report: Report, condition: bool, message: str, detail: str = "") -> None:
    if not report.check(condition, message, detail):
        raise Abort(message)


def short(value, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, (bytes, bytearray)):
        text = value[:limit].decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "…"


# ---------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"HTTP {self.status} {short(self.body)}"


def request(port: int, method: str, path: str, headers: dict | None = None, body=None,
            timeout: float = 30.0, token: str | None = None) -> Answer:
    """One request on a new connection to 127.0.0.1:port."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        res = conn.getresponse()
        data = res.read()
        return Answer(res.status, {k.lower(): v for k, v in res.getheaders()}, data)
    finally:
        conn.close()


def try_request(*args, **kwargs) -> Answer:
    """`request`, with a connection failure as status 0."""
    try:
        return request(*args, **kwargs)
    except (OSError, http.client.HTTPException) as e:
        return Answer(0, {}, f"{type(e).__name__}: {e}".encode())


def multipart(files: list[tuple[str, bytes]], fields: dict | None = None) -> tuple[bytes, str]:
    boundary = "replicas" + secrets.token_hex(12)
    out = io.BytesIO()
    for name, value in (fields or {}).items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for path, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload(port: int, jwt: str, files: list[tuple[str, bytes]], fields: dict | None = None,
           timeout: float = 60.0) -> Answer:
    body, ctype = multipart(files, fields)
    return request(port, "POST", "/api/v1/skills/upload", {"Content-Type": ctype}, body,
                   timeout=timeout, token=jwt)


def skill_md(name: str, description: str, body: str = "") -> bytes:
    return f"---\nname: {name}\ndescription: {description}\n---\n# {name}\n\n{body}\n".encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Accounts


@dataclass
class User:
    name: str
    email: str
    password: str
    id: str
    access: str
    refresh: str


def new_user(port: int, label: str) -> User:
    name = f"{label}-{secrets.token_hex(4)}"
    email = f"{name}@example.com"
    password = f"{name}-password-123"
    created = request(port, "POST", "/api/v1/auth/register",
                      body={"email": email, "username": name, "password": password})
    if created.status != 201:
        raise RuntimeError(f"register on :{port}: {created}")
    tokens = request(port, "POST", "/api/v1/auth/login", body={"email": email, "password": password})
    if tokens.status != 200:
        raise RuntimeError(f"login on :{port}: {tokens}")
    t = tokens.json()
    return User(name, email, password, created.json()["id"], t["access_token"], t["refresh_token"])


def api_token(port: int, user: User, name: str = "agent") -> tuple[str, str]:
    """(id, token)."""
    made = request(port, "POST", "/api/v1/tokens", body={"name": name}, token=user.access)
    if made.status != 201:
        raise RuntimeError(f"token on :{port}: {made}")
    return made.json()["id"], made.json()["token"]


# ---------------------------------------------------------------------------------------------
# MCP


def stateless_meta() -> dict:
    return {
        "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "replicas-test", "version": "1"},
    }


def stateless_request(method: str, params: dict, rid: int = 1) -> tuple[dict, dict]:
    """A 2026-07-28 request and the routing headers that must repeat it."""
    params = dict(params)
    params["_meta"] = stateless_meta()
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": STATELESS_VERSION,
        "Mcp-Method": method,
    }
    if method == "tools/call":
        headers["Mcp-Name"] = params["name"]
    elif method == "resources/read":
        headers["Mcp-Name"] = params["uri"]
    return body, headers


def call_tool(port: int, token: str, tool: str, arguments: dict, timeout: float = 10.0) -> tuple[Answer, str | None]:
    """A stateless tools/call: the answer and, when it is a good result, its text."""
    body, headers = stateless_request("tools/call", {"name": tool, "arguments": arguments})
    answer = try_request(port, "POST", "/mcp", headers, json.dumps(body).encode(), timeout=timeout, token=token)
    return answer, tool_text(answer)


def tool_text(answer: Answer) -> str | None:
    if answer.status != 200:
        return None
    msg = answer.json()
    if not isinstance(msg, dict) or "result" not in msg or msg["result"].get("isError"):
        return None
    return "".join(c.get("text", "") for c in msg["result"].get("content", []))


class Session:
    """A Streamable HTTP session, whose requests may go to any replica."""

    def __init__(self, token: str, version: str = SESSION_VERSION):
        self.token = token
        self.version = version
        self.id: str | None = None
        self.next_id = 1

    def headers(self) -> dict:
        h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
             "MCP-Protocol-Version": self.version}
        if self.id:
            h["Mcp-Session-Id"] = self.id
        return h

    def initialize(self, port: int) -> Answer:
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": self.version,
                           "capabilities": {"roots": {"listChanged": True}},
                           "clientInfo": {"name": "replicas-test", "version": "1"}}}
        h = self.headers()
        h.pop("MCP-Protocol-Version")
        answer = request(port, "POST", "/mcp", h, json.dumps(body).encode(), token=self.token)
        if answer.status == 200:
            self.id = answer.headers.get("mcp-session-id")
            self.notify(port, "notifications/initialized")
        return answer

    def notify(self, port: int, method: str) -> Answer:
        body = {"jsonrpc": "2.0", "method": method}
        return try_request(port, "POST", "/mcp", self.headers(), json.dumps(body).encode(), token=self.token)

    def call(self, port: int, method: str, params: dict | None = None) -> Answer:
        rid = self.next_id
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}
        return try_request(port, "POST", "/mcp", self.headers(), json.dumps(body).encode(), token=self.token)

    def delete(self, port: int) -> Answer:
        return try_request(port, "DELETE", "/mcp", self.headers(), token=self.token)


class EventStream(threading.Thread):
    """An open text/event-stream (GET /mcp, GET /sse): its events go to a queue, and `ended` is
    set (with the time) when the server ends it."""

    def __init__(self, port: int, path: str, headers: dict, token: str):
        super().__init__(daemon=True)
        self.port, self.path, self.token = port, path, token
        self.req_headers = dict(headers)
        self.events: queue.Queue = queue.Queue()
        self.status: int | None = None
        self.error_body = b""
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.ended_at: float | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.last_at: float | None = None  # when the event next_event returned arrived

    def run(self) -> None:
        try:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
            h = dict(self.req_headers)
            h["Authorization"] = f"Bearer {self.token}"
            self.conn.request("GET", self.path, headers=h)
            res = self.conn.getresponse()
            self.status = res.status
            if res.status != 200:
                self.error_body = res.read()
                return
            self.opened.set()
            event, data = "message", []
            while True:
                line = res.readline()
                if not line:
                    break
                line = line.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data:
                        self.events.put((event, "\n".join(data), time.monotonic()))
                    event, data = "message", []
                elif line.startswith(":"):
                    continue
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
        except (OSError, http.client.HTTPException, ValueError):
            pass
        finally:
            self.ended_at = time.monotonic()
            self.opened.set()
            self.ended.set()

    def start_and_wait(self, timeout: float = 5.0) -> "EventStream":
        self.start()
        self.opened.wait(timeout)
        return self

    def next_event(self, timeout: float) -> tuple[str, str] | None:
        try:
            kind, data, self.last_at = self.events.get(timeout=max(0.0, timeout))
            return kind, data
        except queue.Empty:
            return None

    def wait_message(self, predicate, timeout: float):
        """The first JSON message (of a `message` event) that satisfies `predicate`, or None."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            got = self.next_event(left)
            if got is None:
                if self.ended.is_set() and self.events.empty():
                    return None
                continue
            kind, data = got
            if kind != "message":
                continue
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if predicate(msg):
                return msg

    def close(self) -> None:
        if self.conn and self.conn.sock:
            try:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def open_session_stream(port: int, session: Session) -> EventStream:
    h = {"Accept": "text/event-stream", "Mcp-Session-Id": session.id, "MCP-Protocol-Version": session.version}
    return EventStream(port, "/mcp", h, session.token).start_and_wait()


def is_list_changed(msg: dict) -> bool:
    return msg.get("method") in (
        "notifications/resources/list_changed",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
    )


# ---------------------------------------------------------------------------------------------
# Waiting


def poll(fn, patience: float = PATIENCE, step: float = 0.02):
    """Calls fn() until it returns something true or `patience` seconds pass: (value, seconds)
    or (None, None). The caller compares the seconds with `deadline`."""
    start = time.monotonic()
    while True:
        value = fn()
        took = time.monotonic() - start
        if value:
            return value, took
        if took >= patience:
            return None, None
        time.sleep(step)


def timed(report: Report, what: str, took: float | None, deadline: float = DEADLINE, patience: float = PATIENCE) -> bool:
    if took is None:
        report.fail(f"{what}: not within {patience:.0f} s (deadline {deadline:g} s)")
        return False
    if took <= deadline:
        report.ok(f"{what} after {took:.2f} s")
        return True
    report.fail(f"{what} after {took:.2f} s (deadline {deadline:g} s)")
    return False


# ---------------------------------------------------------------------------------------------
# The cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, name: str, bin_path: str, work: Path, env: dict):
        self.name = name
        self.bin = bin_path
        self.port = free_port()
        self.data = work / name / "data"
        self.data.mkdir(parents=True)
        self.log_path = work / name / "server.log"
        self.pid_file = work / "pids" / f"{name}.pid"
        self.env = dict(env)
        self.env.update({
            "AGENTSKILLS_BIND": f"127.0.0.1:{self.port}",
            "AGENTSKILLS_DATA_DIR": str(self.data),
            "AGENTSKILLS_REPLICA_ID": name,
        })
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start {self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen([self.bin, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.data.parent)
        log.close()
        self.pid_file.write_text(str(self.proc.pid))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return try_request(self.port, "GET", "/health/ready", timeout=3).status == 200

    def wait_ready(self, timeout: float = 60.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.running():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); log: {self.log_tail()}")
            if self.ready():
                return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s: "
                           f"{try_request(self.port, 'GET', '/health/ready', timeout=3)}; log: {self.log_tail()}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 40.0) -> int | None:
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.pid_file.unlink(missing_ok=True)
        return code

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class HAProxy:
    def __init__(self, work: Path, replicas: list, label: str = "haproxy"):
        self.port = free_port()
        self.stats_port = free_port()
        self.log_path = work / f"{label}.log"
        self.pid_file = work / "pids" / f"{label}.pid"
        self.env = dict(os.environ)
        for r in replicas:
            self.env[f"AGENTSKILLS_{r.name.upper()}"] = f"127.0.0.1:{r.port}"
        self.env["HAPROXY_BIND"] = f"127.0.0.1:{self.port}"
        self.env["HAPROXY_STATS_BIND"] = f"127.0.0.1:{self.stats_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cfg = ROOT / "deploy" / "haproxy.cfg"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.pid_file.write_text(str(self.proc.pid))

    def states(self) -> dict:
        """Server name → HAProxy's status (UP, DOWN, …), from the stats page's CSV."""
        answer = try_request(self.stats_port, "GET", "/stats;csv", timeout=3)
        if answer.status != 200:
            return {}
        text = answer.body.decode().lstrip("# ")
        return {row["svname"]: row["status"] for row in csv.DictReader(io.StringIO(text))
                if row.get("pxname") == "replicas" and row.get("svname") not in ("FRONTEND", "BACKEND")}

    def wait_up(self, names: list[str], timeout: float = 20.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            states = self.states()
            if all(states.get(n, "").startswith("UP") for n in names):
                return time.monotonic() - start
            time.sleep(0.1)
        raise RuntimeError(f"HAProxy does not see {names} up within {timeout:.0f} s: {self.states()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pid_file.unlink(missing_ok=True)


class Cluster:
    def __init__(self, bin_path: str, work: Path):
        (work / "pids").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update({
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_hex(32),
            "AGENTSKILLS_STORAGE": "s3",
            "AGENTSKILLS_LOG": os.environ.get("AGENTSKILLS_LOG", "info"),
            # Cheap password hashes and no per-address limits: every request comes from 127.0.0.1.
            "AGENTSKILLS_SCRYPT_LOG_N": "10",
            "AGENTSKILLS_LOGIN_PER_IP_PER_MINUTE": "0",
            "AGENTSKILLS_LOGIN_PER_ACCOUNT_PER_MINUTE": "0",
            "AGENTSKILLS_REGISTER_PER_IP_PER_HOUR": "0",
            "AGENTSKILLS_UPLOADS_PER_USER_PER_MINUTE": "0",
            # HAProxy, as compose.yaml lists it.
            "AGENTSKILLS_TRUSTED_PROXIES": "127.0.0.1",
            # A replica that is stopped drains for at most this long (the rolling restart).
            "AGENTSKILLS_SHUTDOWN_GRACE_SECS": "10",
            # ...after serving on unready for this long, so that HAProxy's checks (every second,
            # down after two failures) take it out before it stops listening.
            "AGENTSKILLS_SHUTDOWN_DRAIN_SECS": "3",
        })
        for required in ("DATABASE_URL", "AGENTSKILLS_S3_ENDPOINT", "AGENTSKILLS_S3_BUCKET"):
            if not env.get(required):
                raise SystemExit(f"{required} is not set (run tests/replicas/run.sh)")
        self.work = work
        self.replicas = [Replica(n, bin_path, work, env) for n in ("r1", "r2", "r3")]
        self.haproxy = HAProxy(work, self.replicas)
        self.s3_endpoint = env["AGENTSKILLS_S3_ENDPOINT"]
        self.bucket = env["AGENTSKILLS_S3_BUCKET"]

    def __getitem__(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def start(self) -> None:
        # All three at once, as an orchestrator starts them (the migrations race on one database).
        for r in self.replicas:
            r.start()
        for r in self.replicas:
            took = r.wait_ready()
            print(f"  ..    {r.name} ready on 127.0.0.1:{r.port} ({took:.1f} s)", flush=True)
        self.haproxy.start()
        took = self.haproxy.wait_up([r.name for r in self.replicas])
        print(f"  ..    HAProxy on 127.0.0.1:{self.haproxy.port}, all three replicas up ({took:.1f} s)", flush=True)

    def stop(self) -> None:
        self.haproxy.stop()
        for r in self.replicas:
            if r.running():
                r.stop(signal.SIGTERM, timeout=15)

    @property
    def lb(self) -> int:
        return self.haproxy.port

    def ports(self) -> dict:
        return {r.name: r.port for r in self.replicas}

    def bucket_keys(self, containing: str = "") -> set[str]:
        """Every key in the bucket (moto answers unsigned listings)."""
        url = urllib.parse.urlparse(self.s3_endpoint)
        keys, token = set(), None
        while True:
            q = {"list-type": "2", "max-keys": "1000"}
            if token:
                q["continuation-token"] = token
            path = f"/{self.bucket}?{urllib.parse.urlencode(q)}"
            answer = request(url.port, "GET", path, timeout=10)
            if answer.status != 200:
                raise RuntimeError(f"listing the bucket: {answer}")
            root = ET.fromstring(answer.body)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for c in root.iter(f"{ns}Contents"):
                key = c.find(f"{ns}Key").text
                if containing in key:
                    keys.add(key)
            if (root.findtext(f"{ns}IsTruncated") or "false") != "true":
                return keys
            token = root.findtext(f"{ns}NextContinuationToken")


def wait_token_known(report: Report, cluster: Cluster, token: str, timed_check: bool = False) -> None:
    """A token just made is accepted by every replica (announced, or the epoch poll's 5 s): the
    scenarios that use a token elsewhere wait for this first, and say how long it took (a check
    with the one-second deadline when `timed_check`, else information)."""
    t0 = time.monotonic()
    times = {}
    for r in cluster.replicas:
        ok, _ = poll(lambda: call_tool(r.port, token, "load_skill_metadata", {})[0].status == 200,
                     patience=max(0.0, t0 + TOKEN_PATIENCE - time.monotonic()), step=0.05)
        if not ok:
            report.fail(f"a new API token is still refused by {r.name} after {TOKEN_PATIENCE:.0f} s")
            raise Abort("token")
        times[r.name] = time.monotonic() - t0
    if timed_check:
        for name, took in times.items():
            timed(report, f"a new API token accepted by {name}", took)
    else:
        report.info("new API token accepted by " + ", ".join(f"{n} after {t:.2f} s" for n, t in times.items()))


# ---------------------------------------------------------------------------------------------
# Scenarios


class Stub(threading.Thread):
    """A stand-in replica that answers every request with its name (and /health/ready 200)."""

    def __init__(self, name: str):
        super().__init__(daemon=True)
        import http.server

        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = stub.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # HAProxy's health checks hang up as they please

        self.name = name
        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def scenario_haproxy(report: Report, c: Cluster) -> None:
    """deploy/haproxy.cfg's routing, with stand-ins for the replicas (whatever the server does)."""
    stubs = [Stub(n) for n in ("r1", "r2", "r3")]
    for st in stubs:
        st.start()
    stub_replicas = [type("R", (), {"name": st.name, "port": st.port})() for st in stubs]
    proxy = HAProxy(c.work, stub_replicas, label="haproxy-stubs")
    try:
        proxy.start()
        proxy.wait_up(["r1", "r2", "r3"])

        def who(method: str, path: str) -> str:
            got = try_request(proxy.port, method, path, body=b"{}" if method == "POST" else None)
            return got.body.decode() if got.status == 200 else f"HTTP {got.status}"

        for target in ("r1", "r2", "r3"):
            sid = f"{target}.{secrets.token_hex(32)}"
            seen = {who("POST", f"/messages?session_id={sid}") for _ in range(9)}
            report.check(seen == {target}, f"POST /messages?session_id={target}.<hex> always reaches {target}", short(seen))
        seen = [who("POST", "/mcp") for _ in range(9)]
        report.check(sorted(seen) == ["r1"] * 3 + ["r2"] * 3 + ["r3"] * 3, "POST /mcp is spread round robin", short(seen))
        seen = {who("POST", f"/messages?session_id={secrets.token_hex(32)}") for _ in range(9)}
        report.check(seen == {"r1", "r2", "r3"}, "a session id that names no replica goes round robin", short(seen))
        # A replica that is down: its sessions' /messages go elsewhere (where they get 404,
        # "reconnect"), nothing waits for it.
        stubs[1].stop()
        _, took = poll(lambda: proxy.states().get("r2", "").startswith("DOWN"), patience=10, step=0.1)
        report.check(took is not None, f"HAProxy marks a stopped replica down ({took or 0:.1f} s)")
        seen = {who("POST", f"/messages?session_id=r2.{secrets.token_hex(32)}") for _ in range(6)}
        report.check(seen <= {"r1", "r3"} and seen, "/messages for a replica that is down go to another one", short(seen))
    finally:
        proxy.stop()
        for st in stubs:
            if st is not stubs[1]:
                st.stop()


def scenario_jwt(report: Report, c: Cluster) -> None:
    r1, r2, r3 = c["r1"], c["r2"], c["r3"]
    user = new_user(r1.port, "jwt")
    report.ok("signed up and signed in on r1")
    for r in (r2, r3):
        me = request(r.port, "GET", "/api/v1/users/me", token=user.access)
        report.check(me.status == 200 and (me.json() or {}).get("id") == user.id,
                     f"r1's access token accepted by {r.name} (GET /users/me)", str(me))
    made = request(r3.port, "POST", "/api/v1/tokens", body={"name": "from-r3"}, token=user.access)
    report.check(made.status == 201, "an API token made on r3 with r1's access token", str(made))
    refreshed = request(r2.port, "POST", "/api/v1/auth/refresh", token=user.refresh)
    report.check(refreshed.status == 200, "r1's refresh token traded on r2", str(refreshed))
    if refreshed.status == 200:
        again = request(r3.port, "POST", "/api/v1/auth/refresh", token=user.refresh)
        report.check(again.status == 401, "the same refresh token refused when used again on r3", str(again))
        # Reuse ends the whole login session, wherever it was noticed.
        me = request(r1.port, "GET", "/api/v1/users/me", token=refreshed.json()["access_token"])
        report.check(me.status == 401, "the login session ended by that reuse is refused on r1", str(me))
    login = request(r1.port, "POST", "/api/v1/auth/login", body={"email": user.email, "password": user.password})
    must(report, login.status == 200, "signed in again on r1", str(login))
    access = login.json()["access_token"]
    out = request(r2.port, "POST", "/api/v1/auth/logout", body={"all": True}, token=access)
    report.check(out.status == 204, "logged out everywhere on r2", str(out))
    for r in (r1, r3):
        me = request(r.port, "GET", "/api/v1/users/me", token=access)
        report.check(me.status == 401, f"the logged-out access token refused by {r.name}", str(me))


def scenario_upload(report: Report, c: Cluster) -> None:
    r1, r2, r3 = c["r1"], c["r2"], c["r3"]
    user = new_user(r1.port, "upload")
    _, token = api_token(r1.port, user)
    wait_token_known(report, c, token)
    # r2 has the user's skills loaded (empty) before the upload, as a busy replica would.
    answer, text = call_tool(r2.port, token, "load_skill_metadata", {})
    must(report, text is not None, "r2 lists the user's (no) skills before the upload", str(answer))
    # r3: a session that declared it listens, and its GET stream.
    session = Session(token)
    init = session.initialize(r3.port)
    must(report, init.status == 200 and session.id, "a session initialized on r3", str(init))
    caps = (init.json() or {}).get("result", {}).get("capabilities", {})
    report.check(caps.get("resources", {}).get("listChanged") is True,
                 "r3 declares resources.listChanged", short(caps))
    stream = open_session_stream(r3.port, session)
    must(report, stream.status == 200, "r3's GET /mcp stream open", f"HTTP {stream.status} {short(stream.error_body)}")

    for round_, desc in ((1, "First version."), (2, "Second version, uploaded on r1.")):
        md = skill_md("alpha", desc, f"Round {round_}.")
        t0 = time.monotonic()
        up = upload(r1.port, user.access, [("SKILL.md", md), ("notes/round.txt", f"{round_}\n".encode())])
        upload_secs = time.monotonic() - t0
        must(report, up.status in (200, 201), f"upload {round_} of alpha on r1 ({upload_secs:.2f} s)", str(up))
        t_up = time.monotonic()
        what = "created" if round_ == 1 else "changed"
        _, took = poll(lambda: call_tool(r2.port, token, "load_skill", {"skill_name": "alpha"})[1] == md.decode())
        timed(report, f"r2 serves the {what} skill over MCP (load_skill)", took)
        heard = stream.wait_message(is_list_changed, max(0.0, t_up + PATIENCE - time.monotonic()))
        if heard is None:
            report.fail(f"r3's stream heard no list_changed for the {what} skill within {PATIENCE:.0f} s"
                        + (" (the stream ended)" if stream.ended.is_set() else ""))
        else:
            timed(report, f"r3's stream heard {heard['method']} for the {what} skill", stream.last_at - t_up)
        # Anything else queued from this round is not the next round's notification.
        while stream.next_event(0.2) is not None:
            pass
    stream.close()


def scenario_revoke(report: Report, c: Cluster) -> None:
    r1, r2, r3 = c["r1"], c["r2"], c["r3"]
    user = new_user(r1.port, "revoke")
    token_id, token = api_token(r1.port, user)
    wait_token_known(report, c, token, timed_check=True)
    session = Session(token)
    must(report, session.initialize(r1.port).status == 200, "a session initialized on r1")
    stream = open_session_stream(r1.port, session)
    must(report, stream.status == 200, "its GET /mcp stream open on r1", f"HTTP {stream.status}")
    legacy = EventStream(r1.port, "/sse", {"Accept": "text/event-stream"}, token).start_and_wait()
    must(report, legacy.status == 200, "a legacy GET /sse stream open on r1", f"HTTP {legacy.status}")
    # The session is refused on r2 too, if r2 answered it before (sessions on any replica).
    on_r2 = session.call(r2.port, "tools/list").status == 200
    if not on_r2:
        report.info("r1's session is not answered on r2 (see `session`): its refusal there is not checked")

    gone = request(r3.port, "DELETE", f"/api/v1/tokens/{token_id}", token=user.access)
    t0 = time.monotonic()
    must(report, gone.status == 204, "the token revoked on r3", str(gone))
    answer, _ = call_tool(r3.port, token, "load_skill_metadata", {})
    report.check(answer.status == 401, "r3 refuses it at once", str(answer))
    _, took = poll(lambda: call_tool(r1.port, token, "load_skill_metadata", {})[0].status == 401)
    timed(report, "r1 refuses it (401)", took)
    if on_r2:
        _, took = poll(lambda: session.call(r2.port, "tools/list").status in (401, 404))
        timed(report, "r2 refuses the token's session", took)
    for s, what in ((stream, "GET /mcp"), (legacy, "GET /sse")):
        s.ended.wait(max(0.0, t0 + PATIENCE - time.monotonic()))
        took = (s.ended_at - t0) if s.ended.is_set() else None
        timed(report, f"r1 ended the token's {what} stream", took)
        s.close()


def scenario_session(report: Report, c: Cluster) -> None:
    r1, r2, r3 = c["r1"], c["r2"], c["r3"]
    user = new_user(r1.port, "session")
    up = upload(r1.port, user.access, [("SKILL.md", skill_md("beta", "A skill for sessions."))])
    must(report, up.status in (200, 201), "a skill uploaded on r1", str(up))
    _, token = api_token(r1.port, user)
    wait_token_known(report, c, token)
    session = Session(token)
    init = session.initialize(r1.port)
    must(report, init.status == 200 and session.id, "a session initialized on r1", str(init))
    report.info(f"Mcp-Session-Id {session.id}")
    for r in (r2, r3):
        listed = session.call(r.port, "tools/list")
        tools = [t.get("name") for t in ((listed.json() or {}).get("result") or {}).get("tools", [])]
        report.check(listed.status == 200 and "load_skill" in tools,
                     f"tools/list in r1's session answered by {r.name}", str(listed))
        called = session.call(r.port, "tools/call", {"name": "load_skill", "arguments": {"skill_name": "beta"}})
        report.check(tool_text(called) == skill_md("beta", "A skill for sessions.").decode(),
                     f"tools/call load_skill in r1's session answered by {r.name}", str(called))
    # Its stream on r2 hears a change made on r3.
    stream = open_session_stream(r2.port, session)
    if report.check(stream.status == 200, "the session's GET stream opened on r2",
                    f"HTTP {stream.status} {short(stream.error_body)}"):
        t0 = time.monotonic()
        changed = upload(r3.port, user.access, [("SKILL.md", skill_md("beta", "Changed on r3."))])
        report.check(changed.status in (200, 201), "beta changed on r3", str(changed))
        heard = stream.wait_message(is_list_changed, PATIENCE)
        timed(report, "the stream on r2 heard the change made on r3", stream.last_at - t0 if heard else None)
        stream.close()
    gone = session.delete(r3.port)
    report.check(gone.status in (200, 202, 204), "the session ended with DELETE on r3", str(gone))
    _, took = poll(lambda: session.call(r1.port, "tools/list").status == 404)
    timed(report, "r1 answers the ended session 404", took)


def scenario_sse(report: Report, c: Cluster) -> None:
    r1 = c["r1"]
    user = new_user(r1.port, "sse")
    up = upload(r1.port, user.access, [("SKILL.md", skill_md("gamma", "A skill for SSE."))])
    must(report, up.status in (200, 201), "a skill uploaded on r1", str(up))
    _, token = api_token(r1.port, user)
    wait_token_known(report, c, token)
    stream = EventStream(c.lb, "/sse", {"Accept": "text/event-stream"}, token).start_and_wait()
    must(report, stream.status == 200, "GET /sse through HAProxy", f"HTTP {stream.status} {short(stream.error_body)}")
    first = stream.next_event(5)
    must(report, first is not None and first[0] == "endpoint", "the stream's first event names the endpoint", short(first))
    endpoint = first[1]
    sid = urllib.parse.parse_qs(urllib.parse.urlparse(endpoint).query).get("session_id", [""])[0]
    named = re.fullmatch(r"(r[123])\.[0-9a-f]{64}", sid)
    report.check(named is not None, "the session id names its replica (<replica>.<64 hex>)", sid)

    def post(port: int, msg: dict) -> Answer:
        return try_request(port, "POST", endpoint, {"Content-Type": "application/json"},
                           json.dumps(msg).encode(), token=token)

    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                       "clientInfo": {"name": "replicas-test", "version": "1"}}}
    messages = [init, {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    messages += [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(
        [("tools/list", {}), ("ping", {}),
         ("tools/call", {"name": "load_skill", "arguments": {"skill_name": "gamma"}}),
         ("resources/list", {}), ("ping", {}), ("tools/list", {}), ("ping", {}),
         ("tools/call", {"name": "load_skill_metadata", "arguments": {}})], start=1)]
    answered, refused = 0, []
    for msg in messages:
        got = post(c.lb, msg)
        if got.status != 202:
            refused.append(f"{msg['method']}: {got}")
            continue
        if "id" not in msg:
            answered += 1
            continue
        reply = stream.wait_message(lambda m, i=msg["id"]: m.get("id") == i, 3)
        if reply is not None and "result" in reply:
            answered += 1
        else:
            refused.append(f"{msg['method']}: 202 but no answer on the stream")
    report.check(not refused, f"{answered} of {len(messages)} POST /messages through HAProxy answered on the stream",
                 "; ".join(refused[:3]))

    # The replica that holds the stream: named by the id, else found by asking each directly.
    holder = named.group(1) if named else None
    if holder is None:
        for r in c.replicas:
            if post(r.port, {"jsonrpc": "2.0", "id": 900, "method": "ping"}).status == 202:
                holder = r.name
                break
    if holder is None:
        report.fail("no replica accepts the session's /messages directly")
    else:
        report.info(f"the stream is held by {holder}")
        wrong = next(r for r in c.replicas if r.name != holder)
        got = post(wrong.port, {"jsonrpc": "2.0", "id": 901, "method": "ping"})
        text = got.body.decode(errors="replace")
        says_reconnect = re.search(r"reconnect|GET /sse", text, re.I) is not None
        if got.status == 202:
            reply = stream.wait_message(lambda m: m.get("id") == 901, 3)
            report.check(reply is not None, f"/messages sent to {wrong.name} (not the holder) handed over to the stream",
                         "202 but no answer on the stream")
        else:
            report.check(got.status == 404 and says_reconnect,
                         f"/messages sent to {wrong.name} (not the holder): 404 that says to reconnect", str(got))
    stream.close()


def scenario_concurrent(report: Report, c: Cluster) -> None:
    r1, r2, r3 = c["r1"], c["r2"], c["r3"]
    user = new_user(r1.port, "concurrent")
    first = upload(r1.port, user.access, [("SKILL.md", skill_md("delta", "Version one.")), ("base.txt", b"base\n")])
    must(report, first.status in (200, 201), "delta version 1 uploaded on r1", str(first))
    skill_id = first.json()["id"]
    uploads = {
        "r1": [("SKILL.md", skill_md("delta", "Uploaded on r1.")), ("from-r1.txt", b"r1 " * 1000)],
        "r2": [("SKILL.md", skill_md("delta", "Uploaded on r2.")), ("from-r2.txt", b"r2 " * 1000)],
    }
    bodies = {name: multipart(files) for name, files in uploads.items()}
    barrier = threading.Barrier(2)
    results: dict[str, Answer] = {}

    def send(name: str) -> None:
        body, ctype = bodies[name]
        conn = http.client.HTTPConnection("127.0.0.1", c[name].port, timeout=60)
        try:
            conn.connect()
            barrier.wait(10)
            conn.request("POST", "/api/v1/skills/upload", body=body,
                         headers={"Content-Type": ctype, "Authorization": f"Bearer {user.access}"})
            res = conn.getresponse()
            results[name] = Answer(res.status, dict(res.getheaders()), res.read())
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as e:
            results[name] = Answer(0, {}, str(e).encode())
        finally:
            conn.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in uploads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for name in uploads:
        got = results.get(name, Answer(0, {}, b"no answer"))
        report.check(got.status in (200, 201), f"the upload on {name} succeeded", str(got))
    listed = request(r3.port, "GET", f"/api/v1/skills/{skill_id}/versions", token=user.access)
    items = (listed.json() or {}).get("items", []) if listed.status == 200 else []
    numbers = sorted(v["version"] for v in items)
    report.check(numbers == [1, 2, 3], "the versions API (on r3) lists versions 1, 2 and 3", f"{listed.status}: {numbers}")
    descriptions = set()
    for n in numbers[1:]:
        got = request(r3.port, "GET", f"/api/v1/skills/{skill_id}/versions/{n}/files/SKILL.md", token=user.access)
        m = re.search(rb"description: (.*)", got.body)
        descriptions.add(m.group(1).decode() if m else f"HTTP {got.status}")
    report.check(descriptions == {"Uploaded on r1.", "Uploaded on r2."},
                 "versions 2 and 3 are the two uploads, one each", short(sorted(descriptions)))
    missing = []
    for n in numbers:
        version = request(r3.port, "GET", f"/api/v1/skills/{skill_id}/versions/{n}", token=user.access)
        for f in (version.json() or {}).get("files", []):
            got = request(r3.port, "GET", f"/api/v1/skills/{skill_id}/versions/{n}/files/{urllib.parse.quote(f['path'])}",
                          token=user.access)
            if got.status != 200 or sha256(got.body) != f["sha256"]:
                missing.append(f"v{n} {f['path']}: HTTP {got.status}")
    report.check(numbers and not missing, "every file of every version is readable (no blob lost)", "; ".join(missing))
    if numbers:
        last = request(r3.port, "GET", f"/api/v1/skills/{skill_id}/versions/{numbers[-1]}", token=user.access)
        paths = sorted(f["path"] for f in (last.json() or {}).get("files", []))
        report.check({"base.txt", "from-r1.txt", "from-r2.txt", "SKILL.md"} <= set(paths),
                     "the newest version holds both uploads' files (nothing lost)", short(paths))
    # Every replica serves that newest version.
    def agreed():
        seen = {}
        for r in c.replicas:
            got = request(r.port, "GET", f"/api/v1/skills/{skill_id}", token=user.access)
            seen[r.name] = (got.json() or {}).get("version") if got.status == 200 else got.status
        return seen if len(set(seen.values())) == 1 and numbers and seen["r1"] == numbers[-1] else None
    _, took = poll(agreed)
    timed(report, f"r1, r2 and r3 all serve version {numbers[-1] if numbers else '?'}", took)


def make_skill_files(name: str, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [
        ("SKILL.md", skill_md(name, f"Skill {name} for the cache test.", "See reference.md.")),
        ("reference.md", f"# {name}\n\n".encode() + b"line\n" * rng.randint(10, 200)),
        ("scripts/run.sh", b"#!/bin/sh\necho " + name.encode() + b"\n"),
        ("data/deep/nested/table.csv", b"a,b\n" + b"1,2\n" * rng.randint(1, 500)),
        ("assets/blob.bin", rng.randbytes(70_000)),
    ]


def check_serves_everything(report: Report, port: int, rname: str, user: User, token: str,
                            skills: dict[str, tuple[str, list[tuple[str, bytes]]]], label: str) -> bool:
    """Every file of every skill, over REST and MCP, byte for byte."""
    bad = []
    for name, (skill_id, files) in skills.items():
        for path, data in files:
            got = try_request(port, "GET", f"/api/v1/skills/{skill_id}/files/{urllib.parse.quote(path)}", token=user.access)
            if got.status != 200 or got.body != data:
                bad.append(f"REST {name}/{path}: HTTP {got.status}")
            if path == "SKILL.md":
                _, text = call_tool(port, token, "load_skill", {"skill_name": name})
                if text != data.decode():
                    bad.append(f"MCP load_skill {name}")
            elif path.endswith(".bin"):
                body, headers = stateless_request("resources/read", {"uri": f"skill://{name}/{path}"})
                got = try_request(port, "POST", "/mcp", headers, json.dumps(body).encode(), token=token)
                contents = (((got.json() or {}).get("result") or {}).get("contents") or [{}])[0]
                if got.status != 200 or base64.b64decode(contents.get("blob", "")) != data:
                    bad.append(f"MCP resources/read {name}/{path}: {short(got)}")
            else:
                _, text = call_tool(port, token, "read_reference_file", {"skill_name": name, "file_name": path})
                if text != data.decode():
                    bad.append(f"MCP read_reference_file {name}/{path}")
    n = sum(len(f) for _, f in skills.values())
    return report.check(not bad, f"{rname} serves all {n} files of {len(skills)} skills over REST and MCP {label}",
                        "; ".join(bad[:4]) + (f"; {len(bad)} in all" if len(bad) > 4 else ""))


def scenario_wipe(report: Report, c: Cluster) -> None:
    r1, r3 = c["r1"], c["r3"]
    user = new_user(r1.port, "wipe")
    skills = {}
    for i, name in enumerate(("epsilon", "zeta", "eta")):
        files = make_skill_files(name, i)
        up = upload(r1.port, user.access, files)
        must(report, up.status in (200, 201), f"{name} uploaded on r1", str(up))
        skills[name] = (up.json()["id"], files)
    _, token = api_token(r1.port, user)
    wait_token_known(report, c, token)
    check_serves_everything(report, r3.port, "r3", user, token, skills, "before the wipe")
    cache = r3.data / "skills"
    removed = 0
    if cache.is_dir():
        for child in cache.iterdir():
            removed += sum(1 for p in child.rglob("*") if p.is_file()) if child.is_dir() else 1
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    report.info(f"wiped {cache} while r3 runs ({removed} files)")
    check_serves_everything(report, r3.port, "r3", user, token, skills, "after the wipe")
    # And it still takes changes.
    files = make_skill_files("zeta", 99)
    up = upload(r3.port, user.access, files)
    report.check(up.status in (200, 201), "an upload on r3 after the wipe", str(up))
    skills["zeta"] = (skills["zeta"][0], files)
    check_serves_everything(report, r3.port, "r3", user, token, skills, "after an upload on the wiped replica")


def skill_state(port: int, user: User, token: str, skill_id: str) -> tuple | None:
    """What one replica serves of a skill: (version, {path: sha256}, SKILL.md over MCP), or None
    when it does not answer. Three requests (the listing, load_skill, the listing again), read
    again while the two listings differ: a change that lands between them (the replica reloading
    another's commit) is a read that straddled it, not a half version."""
    def listing():
        got = try_request(port, "GET", f"/api/v1/skills/{skill_id}", token=user.access, timeout=10)
        if got.status != 200:
            return None
        skill = got.json()
        return skill["name"], skill.get("version"), {f["path"]: f["sha256"] for f in skill.get("files", [])}
    for _ in range(5):
        before = listing()
        if before is None:
            return None
        name, version, files = before
        _, md = call_tool(port, token, "load_skill", {"skill_name": name})
        if listing() == before:
            return version, files, md
    return version, files, md


def classify_state(state, old: dict, new: dict, user: User, port: int, skill_id: str,
                   earlier: dict | None = None) -> str:
    """'old', 'new' (complete: every file readable with its digest), 'stale vN' (exactly an
    earlier committed version: late, not half), or what is wrong."""
    if state is None:
        return "no answer"
    _, files, md = state
    candidates = [("old", old), ("new", new)]
    candidates += [(f"stale v{n}", v) for n, v in sorted((earlier or {}).items())]
    for label, want in candidates:
        if files == want["files"] and md == want["md"]:
            if label == "new":
                for path, digest in files.items():
                    got = try_request(port, "GET", f"/api/v1/skills/{skill_id}/files/{urllib.parse.quote(path)}",
                                      token=user.access)
                    if got.status != 200 or sha256(got.body) != digest:
                        return f"half: new listing but {path} is HTTP {got.status}"
            return label
    return f"half: version {state[0]}, {len(files)} files, SKILL.md {'old' if md == old['md'] else 'new' if md == new['md'] else short(md, 60)}"


def version_state(port: int, user: User, skill_id: str, number: int) -> dict:
    version = request(port, "GET", f"/api/v1/skills/{skill_id}/versions/{number}", token=user.access).json()
    md = request(port, "GET", f"/api/v1/skills/{skill_id}/versions/{number}/files/SKILL.md", token=user.access)
    return {"version": number, "files": {f["path"]: f["sha256"] for f in version["files"]},
            "md": md.body.decode(errors="replace")}


def committed_states(port: int, user: User, skill_id: str) -> dict:
    """Every kept version as the database has it (the versions API, whose rows come from the
    database; its `current` flag is the replica's own view, so the newest version is taken as
    the current one, which it is: a restore makes a new version): number → files and SKILL.md."""
    listed = request(port, "GET", f"/api/v1/skills/{skill_id}/versions", token=user.access)
    return {v["version"]: version_state(port, user, skill_id, v["version"]) for v in listed.json()["items"]}


def send_half(port: int, token: str, body: bytes, ctype: str) -> socket.socket:
    """Starts an upload and sends half its body: the connection, to be left hanging."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (f"POST /api/v1/skills/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def scenario_sigkill(report: Report, c: Cluster) -> None:
    r1, r2 = c["r1"], c["r2"]
    observers = [r1, c["r3"]]
    user = new_user(r1.port, "sigkill")
    _, token = api_token(r1.port, user)
    old_files = [("SKILL.md", skill_md("theta", "The old version.")), ("small.txt", b"old\n")]
    up = upload(r1.port, user.access, old_files)
    must(report, up.status in (200, 201), "theta's old version uploaded on r1", str(up))
    skill_id = up.json()["id"]
    wait_token_known(report, c, token)
    for r in c.replicas:
        st = skill_state(r.port, user, token, skill_id)
        must(report, st is not None and st[1] == {p: sha256(d) for p, d in old_files},
             f"{r.name} serves the old version first", short(st))

    # Where in the upload r2 dies: while the client still sends the body; between the server's
    # first blob write and its commit; about at its commit (after the last blob).
    rounds = [("half", "with half the request body sent"),
              ("first", "after the first new blob reached the bucket"),
              ("last", "after the last new blob reached the bucket (about its commit)"),
              ("answered", "right after it answered the upload (committed)")]
    for round_, (when, said) in enumerate(rounds, start=1):
        committed = committed_states(r1.port, user, skill_id)
        old = committed[max(committed)]
        earlier = {n: v for n, v in committed.items() if n != old["version"]}
        rng = random.Random(round_)
        big = [("SKILL.md", skill_md("theta", f"The new version {round_}."))]
        big += [(f"big/part-{i:02}.bin", rng.randbytes(1 << 20)) for i in range(12)]
        new = {"files": dict(old["files"]), "md": big[0][1].decode()}
        new["files"].update({p: sha256(d) for p, d in big})
        before = c.bucket_keys(user.id)
        body, ctype = multipart(big)
        result: dict = {}
        t0 = time.monotonic()
        killed_at = None
        if when == "half":
            sock = send_half(r2.port, user.access, body, ctype)
            time.sleep(0.2)
            r2.stop(signal.SIGKILL)
            killed_at = time.monotonic() - t0
            sock.close()
            result["error"] = "the connection, cut"
        else:
            def send() -> None:
                try:
                    result["answer"] = request(r2.port, "POST", "/api/v1/skills/upload",
                                               {"Content-Type": ctype}, body, timeout=60, token=user.access)
                except (OSError, http.client.HTTPException) as e:
                    result["error"] = f"{type(e).__name__}: {e}"

            sender = threading.Thread(target=send)
            sender.start()
            if when == "answered":
                sender.join(60)
                r2.stop(signal.SIGKILL)
                killed_at = time.monotonic() - t0
            wanted = 1 if when == "first" else len(big)
            while killed_at is None and time.monotonic() - t0 < 30:
                if len(c.bucket_keys(user.id) - before) >= wanted:
                    r2.stop(signal.SIGKILL)
                    killed_at = time.monotonic() - t0
                    break
                if not sender.is_alive():
                    break
                time.sleep(0.005)
            sender.join(30)
        if killed_at is None:
            report.fail(f"round {round_}: r2 finished the upload before it could be killed {said} "
                        f"({short(result, 120)}): make the upload larger")
            continue
        answered = result.get("answer")
        report.info(f"round {round_}: SIGKILLed r2 {killed_at:.2f} s into the upload, {said}; "
                    f"{len(c.bucket_keys(user.id) - before)} of {len(big)} new objects in the bucket; the client got "
                    + (f"HTTP {answered.status} (the upload had finished)" if answered else short(result.get("error"), 80)))
        if when == "answered":
            done = answered is not None and answered.status in (200, 201)
            must(report, done, f"round {round_}: the upload was answered before the kill", short(result))
            # Committed before the replica died: the others must still hear of it.
            _, took = poll(lambda: all(classify_state(skill_state(r.port, user, token, skill_id), old, new, user,
                                                      r.port, skill_id, earlier) == "new" for r in observers))
            timed(report, f"round {round_}: r1 and r3 serve the new version though r2 died right after committing it",
                  took)
        # The others, right away and for a second: the old version or the whole new one.
        seen, end = set(), time.monotonic() + DEADLINE
        while time.monotonic() < end:
            for r in observers:
                seen.add((r.name, classify_state(skill_state(r.port, user, token, skill_id), old, new, user, r.port,
                                                 skill_id, earlier)))
        halves = sorted(x for x in seen if x[1].startswith("half") or x[1] == "no answer")
        report.check(not halves, f"round {round_}: r1 and r3 show a whole committed version while r2 is dead "
                     f"(saw {', '.join(sorted({x[1] for x in seen}))})", short(halves))
        r2.start()
        took = r2.wait_ready()
        report.info(f"round {round_}: r2 restarted, ready in {took:.1f} s")
        committed = committed_states(r1.port, user, skill_id)
        truth = committed[max(committed)]
        label = "new" if truth["files"] == new["files"] else "old" if truth["files"] == old["files"] else "neither"
        report.check(label in ("old", "new"), f"round {round_}: the database holds the {label} version "
                     f"(version {truth['version']})", short(truth["files"]))
        states: dict = {}

        def consistent():
            states.clear()
            for r in c.replicas:
                states[r.name] = classify_state(skill_state(r.port, user, token, skill_id), old, new, user, r.port,
                                                skill_id, earlier)
            return all(v == label for v in states.values())
        _, took = poll(consistent)
        if took is None:
            report.fail(f"round {round_}: after the restart the replicas do not all serve the {label} version: {states}")
        else:
            timed(report, f"round {round_}: after the restart all three serve the {label} version", took)


def scenario_rolling(report: Report, c: Cluster) -> None:
    r1 = c["r1"]
    user = new_user(r1.port, "rolling")
    md = skill_md("iota", "Served through a rolling restart.")
    up = upload(r1.port, user.access, [("SKILL.md", md)])
    must(report, up.status in (200, 201), "iota uploaded on r1", str(up))
    _, token = api_token(r1.port, user)
    wait_token_known(report, c, token)
    for r in c.replicas:
        _, text = call_tool(r.port, token, "load_skill", {"skill_name": "iota"})
        must(report, text == md.decode(), f"{r.name} serves iota")

    stop = threading.Event()
    lock = threading.Lock()
    stats = {"ok": 0, "failed": 0, "latencies": []}
    failures: list[str] = []
    body, headers = stateless_request("tools/call", {"name": "load_skill", "arguments": {"skill_name": "iota"}})
    headers["Authorization"] = f"Bearer {token}"
    payload = json.dumps(body).encode()
    t_start = time.monotonic()

    def worker() -> None:
        conn = None
        while not stop.is_set():
            t = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", c.lb, timeout=30)
                conn.request("POST", "/mcp", body=payload, headers=headers)
                res = conn.getresponse()
                data = res.read()
                good = tool_text(Answer(res.status, {}, data)) == md.decode()
                detail = f"HTTP {res.status} {short(data, 120)}"
                if res.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                good, detail = False, f"{type(e).__name__}: {e}"
                if conn:
                    conn.close()
                conn = None
            with lock:
                if good:
                    stats["ok"] += 1
                    stats["latencies"].append(time.monotonic() - t)
                else:
                    stats["failed"] += 1
                    failures.append(f"{time.monotonic() - t_start:.2f} s: {detail}")
            time.sleep(0.002)
        if conn:
            conn.close()

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        # First each replica stays down long enough for the health checks to take it out (as a
        # container's restart does), then each is restarted at once (the retries' case).
        for down, r in [(3.0, r) for r in c.replicas] + [(0.3, r) for r in c.replicas]:
            t = time.monotonic()
            code = r.stop(signal.SIGTERM)
            drained = time.monotonic() - t
            report.check(code == 0, f"{r.name} stopped by SIGTERM, exit {code}, in {drained:.2f} s")
            time.sleep(down)
            state = c.haproxy.states().get(r.name, "?")
            r.start()
            ready = r.wait_ready()
            up_after = c.haproxy.wait_up([r.name])
            report.info(f"{r.name} down {down:g} s (HAProxy saw it {state}), restarted: ready in {ready:.1f} s, "
                        f"up in HAProxy {up_after:.1f} s later")
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    lat = sorted(stats["latencies"])
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: 0.0)
    total = stats["ok"] + stats["failed"]
    report.info(f"{total} stateless tools/call through HAProxy in {time.monotonic() - t_start:.1f} s; "
                f"p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {p(1.0):.1f} ms")
    report.check(total > 0 and stats["failed"] == 0,
                 f"{stats['failed']} of {total} requests failed during two rolling restarts",
                 "; ".join(failures[:5]))


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="the agentskills-mcp binary")
    parser.add_argument("--work", required=True, help="a folder for data dirs and logs")
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s] or SCENARIOS
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2

    # run.sh stops this script with SIGTERM when it is interrupted: stop what it started first.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = Cluster(args.bin, Path(args.work))
    results: dict[str, bool] = {}
    started = time.monotonic()
    try:
        print("\n=== start 3 replicas and HAProxy", flush=True)
        cluster.start()
        for name in only:
            print(f"\n=== {name}", flush=True)
            report = Report(name)
            t = time.monotonic()
            try:
                # A replica a scenario left stopped (it failed half-way) is started again.
                for r in cluster.replicas:
                    if not r.running():
                        r.start()
                        r.wait_ready()
                globals()[f"scenario_{name}"](report, cluster)
            except Abort:
                pass
            except Exception as e:  # a harness or server error: the scenario fails, the run goes on
                report.fail(f"error: {type(e).__name__}: {e}")
                traceback.print_exc(limit=3)
            results[name] = report.failed == 0 and report.passed > 0
            print(f"{'PASS' if results[name] else 'FAIL'} {name} ({report.passed} ok, {report.failed} failed, "
                  f"{time.monotonic() - t:.1f} s)", flush=True)
    finally:
        print("\n=== stop", flush=True)
        cluster.stop()
    passed = [n for n, ok in results.items() if ok]
    failed = [n for n, ok in results.items() if not ok]
    print(f"\nscenarios passed: {', '.join(passed) or '-'}")
    print(f"scenarios failed: {', '.join(failed) or '-'}")
    print(f"({time.monotonic() - started:.0f} s)")
    print(f"{len(passed)} passed, {len(failed)} failed")
    return 0 if not failed and len(results) == len(only) else 1


if __name__ == "__main__":
    sys.exit(main())
