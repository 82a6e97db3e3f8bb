"""A small HTTP/1.1 server and client on asyncio streams, for JSON APIs and health endpoints.

The server (used by the api-server and the agent-runtime) keeps connections alive, reads bodies
by Content-Length (1 MiB at most; chunked request bodies are refused with 411), answers HEAD
without a body, and stops gracefully: `shutdown()` closes the listener, lets requests in flight
finish (their responses say `Connection: close`), closes idle connections, and gives up after a
grace period. The client (used by `werewolves.client`) keeps one connection alive and reads
Content-Length, chunked or until-close bodies.

Handlers are `async (Request) -> Response`; raising `HttpError` answers with its status and a
JSON `{"error": ...}`; any other exception is logged on one line and answered 500. This module
knows nothing of games and must not log request bodies or headers (tokens travel in them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
_IO_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, EOFError)

log = logging.getLogger("werewolves.web")


class HttpError(Exception):
    """An answer other than success, with the status to send and a message a client can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower case; `query` keeps the last of repeated keys."""

    method: str
    target: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(default=b"", repr=False)

    def json(self) -> dict[str, Any]:
        """The body as a JSON object ({} when empty); HttpError 400 when it is not one."""
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except ValueError as error:
            raise HttpError(400, f"the body is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise HttpError(400, "the body must be a JSON object")
        return data

    def bearer(self) -> str | None:
        """The token of an `Authorization: Bearer ...` header, if any."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]


def json_response(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":")).encode() + b"\n")


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return parts[0], parts[1], parts[2], headers


class Server:
    """An HTTP/1.1 server for one handler on `host:port`."""

    def __init__(self, handler: Handler, host: str, port: int, *, idle_timeout: float = 75.0) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._busy: dict[asyncio.Task[None], bool] = {}
        self._draining = False

    @property
    def port(self) -> int:
        """The port listened on (the one asked for, or the kernel's choice for 0)."""
        if self._server is None:
            raise RuntimeError("the server has not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self._host, self._port, limit=MAX_HEAD,
                                                  reuse_address=True)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, finish the requests in flight (up to `grace` seconds), close the rest."""
        self._draining = True
        if self._server is not None:
            self._server.close()
        for task, busy in list(self._busy.items()):
            if not busy:
                task.cancel()
        # A busy connection closes once its response is sent (draining), which ends its task.
        busy_tasks = [task for task, busy in self._busy.items() if busy]
        if busy_tasks:
            await asyncio.wait(busy_tasks, timeout=grace)
        for task in list(self._busy):
            task.cancel()
        if self._busy:
            await asyncio.wait(list(self._busy), timeout=1.0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:  # asyncio runs every stream callback in a task
            raise RuntimeError("a connection outside a task")
        self._busy[task] = False
        try:
            while not self._draining:
                try:
                    async with asyncio.timeout(self._idle_timeout):
                        head = await reader.readuntil(b"\r\n\r\n")
                except TimeoutError:
                    return
                except asyncio.LimitOverrunError:
                    await self._send(writer, "GET", error_response(431, "request head too large"), close=True)
                    return
                self._busy[task] = True
                keep = await self._exchange(head, reader, writer)
                self._busy[task] = False
                if not keep:
                    return
        except _IO_ERRORS:
            return  # the peer went away; nothing to answer
        except asyncio.CancelledError:
            return
        finally:
            self._busy.pop(task, None)
            writer.close()
            with contextlib.suppress(*_IO_ERRORS):
                await writer.wait_closed()

    async def _exchange(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request's body, answer it; True when the connection stays open."""
        try:
            method, target, version, headers = _parse_head(head)
        except HttpError as error:
            await self._send(writer, "GET", error_response(error.status, error.message), close=True)
            return False
        close = version == "HTTP/1.0" or "close" in headers.get("connection", "").lower()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await self._send(writer, method, error_response(411, "send the body with a Content-Length"), close=True)
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            await self._send(writer, method, error_response(413, f"the body must be 0 to {MAX_BODY} bytes"),
                             close=True)
            return False
        if length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        request = Request(method=method.upper(), target=target, path=url.path or "/",
                          query=dict(parse_qsl(url.query)), headers=headers, body=body)
        started = time.monotonic()
        try:
            response = await self._handler(request)
        except HttpError as error:
            response = error_response(error.status, error.message)
        except Exception:  # the top of a request: one line in the log, a 500 for the client
            log.exception("%s %s failed", request.method, request.path)
            response = error_response(500, "internal error")
        close = close or self._draining
        await self._send(writer, request.method, response, close=close)
        level = logging.DEBUG if request.path in ("/healthz", "/readyz", "/version") else logging.INFO
        log.log(level, "%s %s %d %.1fms", request.method, request.path, response.status,
                (time.monotonic() - started) * 1000)
        return not close

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, method: str, response: Response, *, close: bool) -> None:
        lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}",
                 f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}",
                 f"Connection: {'close' if close else 'keep-alive'}",
                 *(f"{name}: {value}" for name, value in response.headers)]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(response.body)
        await writer.drain()


# --- client --------------------------------------------------------------------------------------


class HttpClient:
    """A keep-alive HTTP/1.1 client for one `http://host:port` base URL, JSON in and out."""

    def __init__(self, base: str, *, timeout: float = 10.0) -> None:
        url = urlsplit(base)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"expected an http://host:port URL, got {base!r}")
        self._host = url.hostname
        self._port = url.port or 80
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            with contextlib.suppress(*_IO_ERRORS):
                await self._streams[1].wait_closed()
            self._streams = None

    async def request(self, method: str, path: str, body: Any = None, *,
                      token: str | None = None) -> tuple[int, Any]:
        """Send one request; returns the status and the decoded JSON body (None when not JSON).
        A request on a reused connection that the server had closed is sent once more."""
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {self._prefix}{path} HTTP/1.1", f"Host: {self._host}:{self._port}",
                "Accept: application/json", f"Content-Length: {len(data)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        if token is not None:
            head.append(f"Authorization: Bearer {token}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
        async with self._lock:
            for attempt in (1, 2):
                reused = self._streams is not None
                try:
                    async with asyncio.timeout(self._timeout):
                        status, payload = await self._once(raw, method)
                except (*_IO_ERRORS, ConnectionError):
                    await self.close()
                    if attempt == 2 or not reused:
                        raise
                    continue
                return status, payload
        raise AssertionError("unreachable")

    async def _once(self, raw: bytes, method: str) -> tuple[int, Any]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port, limit=MAX_HEAD)
        reader, writer = self._streams
        writer.write(raw)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
            headers["connection"] = "close"
        if "close" in headers.get("connection", "").lower():
            await self.close()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)
