"""The local router: one HTTP/1.1 listener per exposed service, splitting traffic between versions.

Called in-process by whoever runs the local target (the supervisor wires instances and weights to
it; the release engine reads `snapshot()`); tests and `benchmarks/router.py` drive it directly. It
must not know about supervisors, stores or strategies: it is told which instances exist, which
weights apply and which instance to drain, and it answers with counters. Where a request goes is
decided by the pure `routing` module; what was counted lives in the pure `traffic` module.

What it does, with asyncio streams only:
- keep-alive on both sides: each instance has a small pool of idle upstream connections;
- request and response bodies are streamed (Content-Length, chunked, or until close), never held
  whole; hop-by-hop headers are dropped and `X-Forwarded-For`/`X-Forwarded-Proto` set;
- `Upgrade: websocket` is passed through: after the instance's 101 the bytes are spliced both ways
  until either side closes;
- 502 when there is no instance (or the chosen one cannot be reached), 503 when every instance is
  draining;
- `set_weights` applies to the next request of every connection; requests already sent finish on
  their instance; `drain` stops new requests to an instance and tells when it is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field

from shipmate.errors import Conflict, NotFound
from shipmate.targets.local import routing
from shipmate.targets.local.routing import Backend, StickyKey
from shipmate.targets.local.traffic import RouterSnapshot, VersionCounters, render_prometheus

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NO_BODY_CODES = frozenset({204, 304})
_REASONS = {400: "Bad Request", 502: "Bad Gateway", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}

_IO_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, EOFError)


class HttpError(Exception):
    """A malformed message from a client or an instance; `status` is what a client should get."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Head:
    """A parsed request or response head: its first line split in three, and its headers in order."""

    parts: tuple[str, str, str]
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for value in self.all(name) for t in value.split(",") if t.strip()}


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    """The next message head, or None on a clean end of stream before its first byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError("connection closed inside a message head") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError(f"message head over {MAX_HEAD} bytes", 431) from exc
    lines = raw[:-4].decode("latin-1").split("\r\n")
    while lines and not lines[0]:  # tolerate stray blank lines between messages (RFC 9112 2.2)
        lines.pop(0)
    if not lines:
        return None
    first = lines[0].split(" ", 2)
    if len(first) < 2:
        raise HttpError(f"bad first line {lines[0][:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise HttpError(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return _Head((first[0], first[1], first[2] if len(first) > 2 else ""), headers)


def _framing(head: _Head, *, request: bool) -> tuple[str, int]:
    """("chunked" | "length" | "close", length) of a message body, per RFC 9112 6.3."""
    codings = head.tokens("transfer-encoding")
    lengths = {v.strip() for value in head.all("content-length") for v in value.split(",")}
    if codings:
        if lengths and request:
            raise HttpError("both Transfer-Encoding and Content-Length")  # a smuggling attempt
        if head.all("transfer-encoding")[-1].split(",")[-1].strip().lower() != "chunked":
            if request:
                raise HttpError("a request body must end with the chunked coding")
            return "close", 0
        return "chunked", 0
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise HttpError(f"bad Content-Length {sorted(lengths)}", 400 if request else 502)
        return "length", int(next(iter(lengths)))
    return ("length", 0) if request else ("close", 0)


async def _copy_exact(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        writer.write(data)
        n -= len(data)
        await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy a chunked body chunk by chunk (extensions dropped, trailers kept)."""
    while True:
        line = await reader.readuntil(b"\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise HttpError("negative chunk size")
        if size == 0:
            trailers = b""
            while (line := await reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
                trailers += line
            writer.write(b"0\r\n" + trailers + b"\r\n")
            await writer.drain()
            return
        writer.write(b"%x\r\n" % size)
        await _copy_exact(reader, writer, size)
        if (await reader.readuntil(b"\n")).strip():
            raise HttpError("chunk data longer than its size")
        writer.write(b"\r\n")


async def _copy_until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, chunk: bool) -> None:
    while data := await reader.read(CHUNK):
        writer.write(b"%x\r\n%b\r\n" % (len(data), data) if chunk else data)
        await writer.drain()
    if chunk:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _encode_head(first: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [first, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(RuntimeError, OSError):
        writer.close()


@dataclass(eq=False)
class _Upstream:
    """One connection to an instance."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    counters: VersionCounters
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.counters.open_connections -= 1
            _close(self.writer)


@dataclass(eq=False)
class _Instance:
    backend: Backend
    counters: VersionCounters
    draining: bool = False
    removed: bool = False
    busy: int = 0
    idle_pool: list[_Upstream] = field(default_factory=list)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.busy += 1
        self.idle.clear()

    def leave(self) -> None:
        self.busy -= 1
        if self.busy == 0:
            self.idle.set()

    def close_pool(self) -> None:
        while self.idle_pool:
            self.idle_pool.pop().close()


async def _wait_idle(inst: _Instance) -> None:
    await inst.idle.wait()


class _ClientGone(Exception):
    """The client went away; nothing is left to answer."""


class Router:
    """The router of one service. Control methods are plain calls made on the router's event loop.

    `await router.start()` listens on (host, port) (port 0 picks a free one, then `router.port`
    tells it); `add(backend)`, `set_weights({...})`, `drain(id)`, `remove(id)` change where requests
    go while it runs; `snapshot()` and `metrics_text()` read its counters; `await router.stop()`.
    """

    def __init__(
        self,
        service: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sticky: StickyKey | None = None,
        force_header: tuple[str, str] | None = ("X-Canary", "always"),
        pool_size: int = 32,
        idle_timeout: float = 75.0,
        connect_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self._port = port
        self.sticky = sticky
        self.force_header = (force_header[0].lower(), force_header[1].lower()) if force_header else None
        self.pool_size = pool_size
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._instances: dict[str, _Instance] = {}
        self._weights: dict[str, float] = {}
        self._order: list[str] = []  # versions, newest first
        self._counters: dict[str, VersionCounters] = {}
        self._unrouted: dict[int, int] = {}
        self._clients: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._round_robin = itertools.count()
        # Not for security: spreads unkeyed requests by weight (tests pass a seeded one).
        self._random = rng or random.Random()  # noqa: S311

    # --- control -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (the real one once started with port 0)."""
        return self._port

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    @property
    def versions(self) -> list[str]:
        """Versions known to the router, newest first (the order canary spans are laid out in)."""
        return list(self._order)

    def backends(self) -> list[Backend]:
        return [i.backend for i in self._instances.values()]

    def _see(self, version: str) -> VersionCounters:
        if version not in self._order:
            self._order.insert(0, version)
        return self._counters.setdefault(version, VersionCounters())

    def add(self, backend: Backend) -> None:
        """Start sending requests to `backend` (as its version's weight says). Conflict if its id is taken."""
        if backend.id in self._instances:
            raise Conflict(f"router {self.service}: instance {backend.id!r} is already routed")
        self._instances[backend.id] = _Instance(backend, self._see(backend.version))

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Replace the weights {version: weight}; the next request of every connection follows them."""
        checked = routing.check_weights(weights)
        for version in checked:
            self._see(version)
        self._weights = checked

    def drain(self, instance_id: str) -> Awaitable[None]:
        """Send no new request to the instance; the result completes when its last request or tunnel ends."""
        inst = self._get(instance_id)
        inst.draining = True
        inst.close_pool()
        return asyncio.ensure_future(_wait_idle(inst))

    def undrain(self, instance_id: str) -> None:
        """Send requests to a drained instance again."""
        self._get(instance_id).draining = False

    def remove(self, instance_id: str) -> None:
        """Forget the instance (drain it first: requests still on it finish, but nothing waits for them)."""
        inst = self._instances.pop(instance_id, None)
        if inst is None:
            raise NotFound(f"router {self.service}: no instance {instance_id!r}")
        inst.removed = True
        inst.draining = True
        inst.close_pool()

    def _get(self, instance_id: str) -> _Instance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise NotFound(f"router {self.service}: no instance {instance_id!r}") from None

    def snapshot(self) -> RouterSnapshot:
        """The counters now, per version: what the release engine's analysis reads."""
        return RouterSnapshot(
            service=self.service,
            versions={v: c.snapshot() for v, c in self._counters.items()},
            unrouted=dict(self._unrouted),
            client_connections=len(self._clients),
        )

    def metrics_text(self) -> str:
        """The counters in the Prometheus text format."""
        return render_prometheus([self.snapshot()])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=MAX_HEAD)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close client connections and the idle upstream pools."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = list(self._clients)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for inst in self._instances.values():
            inst.close_pool()

    # --- choosing an instance ------------------------------------------------------------------

    def _candidates(self, head: _Head) -> tuple[list[_Instance], int]:
        """Instances to try in order for a request, or ([], 502 | 503)."""
        live: dict[str, list[_Instance]] = {}
        any_instance = False
        for inst in self._instances.values():
            any_instance = True
            if not inst.draining:
                live.setdefault(inst.backend.version, []).append(inst)
        if not live:
            return [], 503 if any_instance else 502
        key = self.sticky.extract(head.headers, head.parts[1]) if self.sticky else None
        version: str | None = None
        if self.force_header is not None:
            forced = head.get(self.force_header[0])
            if forced is not None and forced.strip().lower() == self.force_header[1]:
                version = routing.newest(self._order, live)
        if version is None:
            point = routing.key_point(key) if key is not None else self._random.random()
            version = routing.choose_version(point, self._weights, self._order, live)
        if version is None:
            return [], 502
        pool = live[version]
        if key is not None:
            by_id = {inst.backend.id: inst for inst in pool}
            return [by_id[i] for i in routing.rendezvous(key, by_id)], 0
        start = next(self._round_robin) % len(pool)
        return pool[start:] + pool[:start], 0

    async def _connect(self, inst: _Instance) -> tuple[_Upstream, bool]:
        """An upstream connection to the instance: an idle pooled one (reused=True) or a new one."""
        while inst.idle_pool:
            conn = inst.idle_pool.pop()
            if conn.reader.at_eof() or conn.writer.is_closing():
                conn.close()
                continue
            return conn, True
        backend = inst.backend
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(backend.host, backend.port, limit=MAX_HEAD)
        inst.counters.open_connections += 1
        return _Upstream(reader, writer, inst.counters), False

    def _release(self, inst: _Instance, conn: _Upstream) -> None:
        if inst.draining or conn.closed or len(inst.idle_pool) >= self.pool_size:
            conn.close()
        else:
            inst.idle_pool.append(conn)

    # --- serving -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        peer = writer.get_extra_info("peername")
        client_ip = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        try:
            first = True
            while True:
                try:
                    if first:
                        head = await _read_head(reader)
                    else:
                        async with asyncio.timeout(self.idle_timeout):
                            head = await _read_head(reader)
                except HttpError as exc:
                    self._answer(writer, exc.status, str(exc), keep=False)
                    break
                except TimeoutError:
                    break
                if head is None:
                    break
                first = False
                if not await self._exchange(head, reader, writer, client_ip):
                    break
        except (_ClientGone, *_IO_ERRORS):
            pass
        except asyncio.CancelledError:
            # stop() cancels client connections; ending quietly keeps Python 3.11's start_server
            # from logging each one as an error (it calls task.exception() on the cancelled task).
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            _close(writer)

    def _answer(self, writer: asyncio.StreamWriter, status: int, text: str, *, keep: bool) -> None:
        body = (text + "\n").encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        if not keep:
            headers.append(("Connection", "close"))
        writer.write(_encode_head(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", headers) + body)

    async def _exchange(
        self, head: _Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_ip: str
    ) -> bool:
        """Serve one request; True when the client connection may carry the next one."""
        method, target, version = head.parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self._answer(writer, 505, f"unsupported protocol {version[:20]!r}", keep=False)
            return False
        connection = head.tokens("connection")
        keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        try:
            body_kind, body_length = _framing(head, request=True)
        except HttpError as exc:
            self._answer(writer, exc.status, str(exc), keep=False)
            return False
        upgrade = "upgrade" in connection and (head.get("upgrade") or "").strip().lower() == "websocket"
        if "100-continue" in head.tokens("expect") and version == "HTTP/1.1":
            # We answer the expectation ourselves and stream the body: the instance never sees it.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        candidates, refusal = self._candidates(head)
        if not candidates:
            self._unrouted[refusal] = self._unrouted.get(refusal, 0) + 1
            why = "every instance is draining" if refusal == 503 else "no instance to send it to"
            self._answer(writer, refusal, f"{self.service}: {why}", keep=False)
            await writer.drain()
            return False

        headers = [(k, v) for k, v in head.headers if k.lower() not in HOP_BY_HOP and k.lower() not in connection]
        headers = [(k, v) for k, v in headers if k.lower() not in ("expect", "x-forwarded-for", "x-forwarded-proto")]
        forwarded = head.get("x-forwarded-for")
        headers.append(("X-Forwarded-For", f"{forwarded}, {client_ip}" if forwarded else client_ip))
        headers.append(("X-Forwarded-Proto", head.get("x-forwarded-proto") or "http"))
        if head.get("host") is None:
            backend = candidates[0].backend
            headers.append(("Host", f"{backend.host}:{backend.port}"))
        if upgrade:
            headers += [("Connection", "Upgrade"), ("Upgrade", head.get("upgrade") or "websocket")]
        elif body_kind == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        request_head = _encode_head(f"{method} {target} HTTP/1.1", headers)

        started = time.perf_counter()
        status = 0
        inst: _Instance | None = None
        try:
            try:
                inst, conn, response = await self._send(
                    candidates, request_head, reader, writer, body_kind, body_length, upgrade
                )
            except HttpError as exc:
                status = exc.status
                self._answer(writer, exc.status, f"{self.service}: {exc}", keep=False)
                return False
            status = int(response.parts[1])
            tunnel = upgrade and status == 101
            try:
                if tunnel:
                    return await self._tunnel(inst, conn, response, reader, writer, started)
                return await self._respond(method, version, keep, inst, conn, response, writer, upgrade)
            except HttpError as exc:
                conn.close()
                status = exc.status
                self._answer(writer, exc.status, f"{self.service}: {exc}", keep=False)
                return False
            finally:
                inst.leave()
                if not tunnel:
                    inst.counters.in_flight -= 1
        finally:
            counters = inst.counters if inst is not None else self._counters[candidates[0].backend.version]
            if status != 101:
                counters.observe(status or 499, time.perf_counter() - started)

    async def _send(
        self,
        candidates: list[_Instance],
        request_head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        body_kind: str,
        body_length: int,
        upgrade: bool,
    ) -> tuple[_Instance, _Upstream, _Head]:
        """Send the request to the first candidate that takes it; its final response head.

        The instance comes back entered (busy): the caller must `leave()` it. When an instance
        refuses the connection the next candidate is tried; a pooled connection the instance closed
        meanwhile is retried once on a new connection when the request has no body to replay.
        """
        has_body = body_kind == "chunked" or body_length > 0
        attempt = 0
        while True:
            if attempt > len(candidates):
                raise HttpError("no instance could be reached", 502)
            inst = candidates[min(attempt, len(candidates) - 1)]
            attempt += 1
            try:
                conn, reused = await self._connect(inst)
            except (OSError, TimeoutError):
                continue
            inst.enter()
            inst.counters.in_flight += 1
            answered = False
            try:
                conn.writer.write(request_head)
                if body_kind == "chunked":
                    await _copy_chunked(reader, conn.writer)
                elif body_length:
                    await _copy_exact(reader, conn.writer, body_length)
                else:
                    await conn.writer.drain()
                response = await self._response_head(conn, writer)
                if response is not None:
                    answered = True
                    return inst, conn, response
            except _IO_ERRORS:
                if has_body and reader.at_eof():
                    raise _ClientGone from None
            finally:
                if not answered:
                    conn.close()
                    inst.leave()
                    inst.counters.in_flight -= 1
            if not (reused and not has_body and not upgrade):
                raise HttpError("the instance closed the connection before answering", 502)
            attempt -= 1  # the same instance, on a new connection

    async def _response_head(self, conn: _Upstream, writer: asyncio.StreamWriter) -> _Head | None:
        """The instance's final response head; interim 1xx (but 101) answers are passed on."""
        while True:
            try:
                head = await _read_head(conn.reader)
            except HttpError as exc:
                raise HttpError(f"the instance sent a bad response: {exc}", 502) from None
            if head is None:
                return None
            if not head.parts[0].startswith("HTTP/1.") or not head.parts[1].isdigit():
                raise HttpError(f"the instance answered {head.parts[0][:20]!r}", 502)
            code = int(head.parts[1])
            if 100 <= code < 200 and code != 101:
                if code != 100:  # we already sent our own 100 Continue
                    writer.write(_encode_head(" ".join(head.parts).rstrip(), head.headers))
                continue
            return head

    async def _respond(
        self,
        method: str,
        client_version: str,
        keep: bool,
        inst: _Instance,
        conn: _Upstream,
        response: _Head,
        writer: asyncio.StreamWriter,
        upgrade: bool,
    ) -> bool:
        code = int(response.parts[1])
        if method == "HEAD" or code in _NO_BODY_CODES:
            kind, length = "length", 0
        else:
            kind, length = _framing(response, request=False)
        connection = response.tokens("connection")
        reusable = not upgrade and kind != "close" and response.parts[0] == "HTTP/1.1" and "close" not in connection
        headers = [(k, v) for k, v in response.headers if k.lower() not in HOP_BY_HOP and k.lower() not in connection]
        chunk_to_client = kind == "chunked" or (kind == "close" and client_version == "HTTP/1.1")
        if kind == "close" and not chunk_to_client:
            keep = False
        if chunk_to_client:
            headers.append(("Transfer-Encoding", "chunked"))
        if not keep:
            headers.append(("Connection", "close"))
        elif client_version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        out_head = _encode_head(f"HTTP/1.1 {response.parts[1]} {response.parts[2]}", headers)
        try:
            if kind == "chunked":
                writer.write(out_head)
                await _copy_chunked(conn.reader, writer)
            elif kind == "length":
                # The head goes out with the body's first part: one send instead of two for small answers.
                first = await conn.reader.read(min(length, CHUNK)) if length else b""
                if length and not first:
                    raise asyncio.IncompleteReadError(b"", length)
                writer.write(out_head + first)
                if length > len(first):
                    await _copy_exact(conn.reader, writer, length - len(first))
                else:
                    await writer.drain()
            else:
                writer.write(out_head)
                await _copy_until_close(conn.reader, writer, chunk=chunk_to_client)
        except (HttpError, *_IO_ERRORS):
            # The head is out: the only honest signal left to the client is to close.
            conn.close()
            raise _ClientGone from None
        if reusable:
            self._release(inst, conn)
        else:
            conn.close()
        return keep

    async def _tunnel(
        self,
        inst: _Instance,
        conn: _Upstream,
        response: _Head,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        started: float,
    ) -> bool:
        """Pass the 101 on, then splice bytes both ways until either side closes."""
        inst.counters.in_flight -= 1  # a tunnel is counted in websockets_open instead
        inst.counters.observe(101, time.perf_counter() - started)
        inst.counters.websockets_open += 1
        try:
            writer.write(_encode_head(" ".join(response.parts).rstrip(), response.headers))
            pipes = [
                asyncio.ensure_future(_pipe(reader, conn.writer)),
                asyncio.ensure_future(_pipe(conn.reader, writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            inst.counters.websockets_open -= 1
            conn.close()
        return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(*_IO_ERRORS):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()


class AdminServer:
    """A small HTTP listener serving `/metrics` (Prometheus text of every router given) and `/healthz`."""

    def __init__(self, routers: Sequence[Router], host: str = "127.0.0.1", port: int = 0) -> None:
        self.routers = list(routers)
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=MAX_HEAD)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await _read_head(reader)
            if head is None:
                return
            path = head.parts[1].partition("?")[0]
            if head.parts[0] not in ("GET", "HEAD"):
                code, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                text = render_prometheus(r.snapshot() for r in self.routers)
                code, ctype, body = "200 OK", "text/plain; version=0.0.4; charset=utf-8", text.encode()
            elif path == "/healthz":
                code, ctype, body = "200 OK", "text/plain", b"ok\n"
            else:
                code, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")]
            writer.write(_encode_head(f"HTTP/1.1 {code}", headers) + (body if head.parts[0] == "GET" else b""))
            await writer.drain()
        except (HttpError, *_IO_ERRORS):
            pass
        finally:
            _close(writer)
