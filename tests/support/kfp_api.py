"""A small KFP API server on loopback for the cluster commands' tests: the v2beta1 REST endpoints
rfau calls (healthz, experiments, runs, recurring runs: list, create, enable, disable, delete),
answering as KFP's gateway does (snake_case fields, the list under ``recurringRuns``, errors as
``{"error", "code", "message"}``, 404 for an unknown id, pages with ``next_page_token``). There is
no KFP backend on these machines; this is the nearest honest stand-in: real HTTP, real JSON."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


class KfpState:
    def __init__(self, tag: str | None = "2.14.3", token: str | None = None, page_size: int = 100):
        self.tag = tag  # None: a KFP 1.x server (no v2beta1 healthz)
        self.token = token  # required bearer token, if any
        self.page_size = page_size  # the server's cap on a page (KFP's own default is 20)
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.fail_next_create = False
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(BaseHTTPRequestHandler):
    state: KfpState

    def log_message(self, *args) -> None:  # no access log on the test's stderr
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, grpc_code: int, message: str) -> None:
        self._send(code, {"error": message, "code": grpc_code, "message": message, "details": []})

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else {}

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        s = self.state
        with s.lock:
            s.calls.append((method, url.path))
            if not url.path.startswith(API):
                return self._error(404, 5, f"Not Found: {url.path}")
            path = url.path[len(API) :]
            if path == "/healthz" and method == "GET":
                if s.tag is None:
                    return self._error(404, 5, "Not Found")
                return self._send(200, {"commit_sha": "0d857b6", "tag_name": s.tag, "multi_user": False})
            if s.token and self.headers.get("Authorization") != f"Bearer {s.token}":
                return self._error(401, 16, "Unauthenticated: no valid bearer token")
            if path == "/experiments":
                return self._experiments(method, q)
            if path == "/runs" and method == "POST":
                body = self._body()
                if not body.get("pipeline_spec") or body.get("experiment_id") not in s.experiments:
                    return self._error(
                        400, 3, "Invalid input: a pipeline spec and an experiment are required"
                    )
                rid = str(uuid.uuid4())
                s.runs[rid] = {**body, "run_id": rid, "created_at": _now(), "state": "PENDING"}
                return self._send(200, s.runs[rid])
            if path == "/recurringruns":
                return self._recurring_list(q) if method == "GET" else self._recurring_create()
            if path.startswith("/recurringruns/"):
                return self._recurring_one(method, path[len("/recurringruns/") :])
            return self._error(404, 5, f"Not Found: {url.path}")

    def _experiments(self, method: str, q: dict) -> None:
        s = self.state
        if method == "POST":
            body = self._body()
            eid = str(uuid.uuid4())
            s.experiments[eid] = {**body, "experiment_id": eid, "created_at": _now()}
            return self._send(200, s.experiments[eid])
        found = list(s.experiments.values())
        for p in json.loads(q.get("filter") or "{}").get("predicates", []):
            value = p.get("string_value", p.get("stringValue"))
            found = [e for e in found if e.get(p["key"]) == value]
        if q.get("namespace"):
            found = [e for e in found if e.get("namespace") == q["namespace"]]
        return self._send(200, {"experiments": found, "total_size": len(found)} if found else {})

    def _recurring_list(self, q: dict) -> None:
        s = self.state
        runs = sorted(s.recurring.values(), key=lambda r: r["created_at"] + r["recurring_run_id"])
        if q.get("namespace"):
            runs = [r for r in runs if r.get("namespace") == q["namespace"]]
        start = int(q.get("page_token") or 0)
        size = min(int(q.get("page_size") or 20), s.page_size)
        page = runs[start : start + size]
        body: dict = {"recurringRuns": page, "total_size": len(runs)} if page else {}
        if start + size < len(runs):
            body["next_page_token"] = str(start + size)
        return self._send(200, body)

    def _recurring_create(self) -> None:
        s = self.state
        body = self._body()
        if s.fail_next_create:
            s.fail_next_create = False
            return self._error(500, 13, "Internal error: failed to create the ScheduledWorkflow")
        cron = (body.get("trigger") or {}).get("cron_schedule", {}).get("cron")
        if not body.get("display_name") or not cron or not body.get("pipeline_spec"):
            return self._error(
                400, 3, "Invalid input: display name, a cron trigger and a pipeline are required"
            )
        if body.get("experiment_id") not in s.experiments:
            return self._error(404, 5, f"experiment {body.get('experiment_id')} not found")
        rid = str(uuid.uuid4())
        enabled = body.get("mode", "ENABLE") == "ENABLE"
        s.recurring[rid] = {
            **body,
            "recurring_run_id": rid,
            "namespace": s.experiments[body["experiment_id"]].get("namespace"),
            "created_at": _now(),
            "status": "ENABLED" if enabled else "DISABLED",
        }
        return self._send(200, s.recurring[rid])

    def _recurring_one(self, method: str, rest: str) -> None:
        s = self.state
        rid, _, verb = rest.partition(":")
        if rid not in s.recurring:
            return self._error(404, 5, f"recurring run {rid} not found")
        if method == "DELETE" and not verb:
            del s.recurring[rid]
            return self._send(200, {})
        if method == "POST" and verb in ("enable", "disable"):
            r = s.recurring[rid]
            r["mode"] = "ENABLE" if verb == "enable" else "DISABLE"
            r["status"] = "ENABLED" if verb == "enable" else "DISABLED"
            return self._send(200, {})
        if method == "GET" and not verb:
            return self._send(200, s.recurring[rid])
        return self._error(405, 12, f"{method} {rest} is not supported")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


def serve(state: KfpState) -> tuple[ThreadingHTTPServer, str]:
    """Start the server on a free loopback port in a thread -> (server, its URL)."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
