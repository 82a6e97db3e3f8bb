"""Analysis providers against real HTTP servers on loopback: a webhook that passes or fails, a
Prometheus-shaped query API, and what happens when either cannot be reached (inconclusive)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shipmate.plan.models import CheckPlan
from shipmate.release.providers import Context, fetch

pytestmark = pytest.mark.integration

seen: list[dict[str, object]] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen.append(body)
        self.send_response(200 if self.path == "/pass" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
        seen.append({"query": query})
        result = [] if "empty" in query else [{"metric": {}, "value": [1700000000.0, "0.25"]}]
        data = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def check(name: str, metric: str, *, query: str | None = None, url: str | None = None) -> CheckPlan:
    return CheckPlan(name=name, metric=metric, quantile=None, query=query, url=url, max=0.5, min=None)


def test_webhooks_and_queries(server: str) -> None:
    context = Context("r-1", "dev", "2.0.0-abcdef", ("api", "ws"), 30.0, server)
    checks = [check("hook-ok", "webhook", url=f"{server}/pass"), check("hook-bad", "webhook", url=f"{server}/fail"),
              check("errors", "promql",
                    query='sum(rate(x{version="{{version}}",service=~"{{service}}"}[{{interval}}]))'),
              check("none", "promql", query="empty"), check("file", "webhook", url="file:///etc/passwd")]
    got = asyncio.run(fetch(checks, context))
    assert got == {"hook-ok": 1.0, "hook-bad": 0.0, "errors": 0.25, "none": None, "file": None}
    assert {"query": 'sum(rate(x{version="2.0.0-abcdef",service=~"api|ws"}[30s]))'} in seen
    assert {"rollout": "r-1", "environment": "dev", "version": "2.0.0-abcdef", "services": ["api", "ws"],
            "check": "hook-ok"} in seen


def test_unreachable_is_inconclusive() -> None:
    context = Context("r-1", "dev", "v", ("api",), 30.0, "http://127.0.0.1:9")
    got = asyncio.run(fetch([check("q", "promql", query="up"), check("w", "webhook", url="http://127.0.0.1:9/x")],
                            context))
    assert got == {"q": None, "w": None}
    nowhere = Context("r", "dev", "v", (), 1.0, None)
    assert asyncio.run(fetch([check("q", "promql", query="up")], nowhere)) == {"q": None}
