"""The local router: one HTTP/1.1 listener per exposed service, splitting traffic between versions.

Called in-process by whoever runs the local target (the supervisor wires instances and weights to
it; the release engine reads `snapshot()`); tests and `benchmarks/router.py` drive it directly. It
must not know about supervisors, stores or strategies: it is told which instances exist, which
weights apply and which instance to drain, and it answers with counters. Where a request goes is
decided by the pure `routing` module; what was counted lives in the pure `traffic` module.

What it does:
- keep-alive on both sides: each instance has a small pool of idle upstream connections;
- request and response bodies are streamed (Content-Length, chunked, or until close), never held
  whole; hop-by-hop headers are dropped and `X-Forwarded-For`/`X-Forwarded-Proto` set;
- `Upgrade: websocket` is passed through: after the instance's 101 the bytes are spliced both ways
  until either side closes;
- 502 when there is no instance (or the chosen one cannot be reached), 503 when every instance is
  draining;
- `set_weights` applies to the next request of every connection; requests already sent finish on
  their instance; `drain` stops new requests to an instance and tells when it is idle.

How: both ends of a connection are `asyncio.Protocol`s and an exchange (one request and its
response) is a small state machine driven by their callbacks, so a request costs no task switch:
the client's bytes are parsed where they arrive, the head goes to a pooled upstream connection
with one `write`, and the answer goes back the same way. Heads stay bytes; the request head is
forwarded as the client's own header lines minus the ones removed. Back-pressure is the transports'
own: when one side's write buffer is full, the other side stops reading until it drains. Only
opening a new upstream connection runs as a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import cast

from shipmate.errors import Conflict, NotFound
from shipmate.targets.local import routing
from shipmate.targets.local.routing import Backend, StickyKey
from shipmate.targets.local.traffic import RouterSnapshot, VersionCounters, render_prometheus

MAX_HEAD = 64 * 1024
# What one side may have received and not yet passed on before its reading pauses (pipelined requests).
BUFFER_LIMIT = 128 * 1024
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Not passed on from a request: the router sets these itself (or answers `Expect` itself).
_REQUEST_DROP = HOP_BY_HOP | {b"expect", b"x-forwarded-for", b"x-forwarded-proto"}
_NO_BODY_CODES = frozenset({204, 304})
_NO_TOKENS: frozenset[bytes] = frozenset()
_REASONS = {400: "Bad Request", 502: "Bad Gateway", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}

# Body framings (RFC 9112 6.3).
_LENGTH, _CHUNKED, _CLOSE = 0, 1, 2
# Phases of an exchange's response.
_HEAD, _BODY, _DONE = 0, 1, 2


class HttpError(Exception):
    """A malformed message from a client or an instance; `status` is what a client should get."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _text(data: bytes | bytearray) -> str:
    return data.decode("latin-1")


class _Head:
    """A parsed request or response head: its first line split in up to three, its header lines,
    and their names (lowercased once) and stripped values, in order."""

    __slots__ = ("first", "line", "lines", "names", "values")

    def __init__(self, raw: bytes) -> None:
        lines = raw.split(b"\r\n")
        self.line = lines[0]
        first = self.line.split(b" ", 2)
        if len(first) < 2:
            raise HttpError(f"bad first line {_text(self.line[:80])!r}")
        self.first = first
        del lines[0]
        names: list[bytes] = []
        values: list[bytes] = []
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep or not name or name.strip() != name:  # also an obs-folded line (starts with a space)
                raise HttpError(f"bad header line {_text(line[:80])!r}")
            names.append(name.lower())
            values.append(value.strip())
        self.lines = lines
        self.names = names
        self.values = values

    def get(self, name: bytes) -> bytes | None:
        """The first value of a header (by lowercased name)."""
        names = self.names
        return self.values[names.index(name)] if name in names else None

    def all(self, name: bytes) -> list[bytes]:
        if name not in self.names:
            return []
        return [v for n, v in zip(self.names, self.values, strict=True) if n == name]

    def tokens(self, name: bytes) -> set[bytes]:
        return {t.strip().lower() for value in self.all(name) for t in value.split(b",") if t.strip()}

    def forward(self, drop: frozenset[bytes], connection: AbstractSet[bytes]) -> list[bytes]:
        """The header lines, minus those named in `drop` or in the Connection header."""
        names = self.names
        return [line for n, line in zip(names, self.lines, strict=True) if n not in drop and n not in connection]

    def raw(self) -> bytes:
        """The head as received (its first line right-stripped), to pass on unchanged."""
        return b"\r\n".join([self.line.rstrip(), *self.lines, b"", b""])


def _unchanged(head: _Head) -> bool:
    """Whether a response head goes to the client exactly as it came: HTTP/1.1 with a reason, no hop-by-hop header."""
    first = head.first
    return first[0] == b"HTTP/1.1" and len(first) == 3 and HOP_BY_HOP.isdisjoint(head.names)


def _framing(head: _Head, *, request: bool) -> tuple[int, int]:
    """(_CHUNKED | _LENGTH | _CLOSE, length) of a message body, per RFC 9112 6.3."""
    names = head.names
    if b"transfer-encoding" not in names and names.count(b"content-length") == 1:
        value = head.values[names.index(b"content-length")]
        if value.isdigit():  # the usual case, settled without the sets below
            return _LENGTH, int(value)
    codings = head.tokens(b"transfer-encoding")
    lengths = {v.strip() for value in head.all(b"content-length") for v in value.split(b",")}
    if codings:
        if lengths and request:
            raise HttpError("both Transfer-Encoding and Content-Length")  # a smuggling attempt
        if head.all(b"transfer-encoding")[-1].split(b",")[-1].strip().lower() != b"chunked":
            if request:
                raise HttpError("a request body must end with the chunked coding")
            return _CLOSE, 0
        return _CHUNKED, 0
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise HttpError(f"bad Content-Length {sorted(_text(v) for v in lengths)}", 400 if request else 502)
        return _LENGTH, int(next(iter(lengths)))
    return (_LENGTH, 0) if request else (_CLOSE, 0)


class _Chunks:
    """Re-frames a chunked body as it arrives: chunk extensions dropped, trailers kept."""

    __slots__ = ("left", "state", "trailers")

    _SIZE, _DATA, _DATA_END, _TRAILERS = range(4)

    def __init__(self) -> None:
        self.state = self._SIZE
        self.left = 0
        self.trailers = bytearray(b"0\r\n")

    def feed(self, buf: bytearray, out: list[bytes]) -> bool:
        """Take what it can from `buf` and append what to pass on to `out`; True once the body is whole."""
        while buf:
            if self.state == self._DATA:
                n = min(self.left, len(buf))
                out.append(bytes(buf[:n]))
                del buf[:n]
                self.left -= n
                if not self.left:
                    self.state = self._DATA_END
                continue
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise HttpError(f"a chunk line over {MAX_HEAD} bytes")
                return False
            line = bytes(buf[: end + 1])
            del buf[: end + 1]
            if self.state == self._SIZE:
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0:
                    raise HttpError("negative chunk size")
                if size == 0:
                    self.state = self._TRAILERS
                else:
                    out.append(b"%x\r\n" % size)
                    self.left = size
                    self.state = self._DATA
            elif self.state == self._DATA_END:
                if line.strip():
                    raise HttpError("chunk data longer than its size")
                out.append(b"\r\n")
                self.state = self._SIZE
            elif line in (b"\r\n", b"\n"):
                out.append(bytes(self.trailers) + b"\r\n")
                return True
            else:
                self.trailers += line
                if len(self.trailers) > MAX_HEAD:
                    raise HttpError(f"trailers over {MAX_HEAD} bytes")
        return False


@dataclass(eq=False)
class _Instance:
    backend: Backend
    counters: VersionCounters
    draining: bool = False
    removed: bool = False
    busy: int = 0
    idle_pool: list[_Upstream] = field(default_factory=list)
    idle_waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def leave(self) -> None:
        self.busy -= 1
        if self.busy == 0 and self.idle_waiters:
            for waiter in self.idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.idle_waiters.clear()

    def close_pool(self) -> None:
        while self.idle_pool:
            self.idle_pool.pop().close()


@dataclass(frozen=True)
class _Table:
    """What choosing an instance needs that only changes with weights and instances (rebuilt then)."""

    live: dict[str, list[_Instance]]  # instances that take requests, by version
    refusal: int  # 503 when every instance drains, 502 when there is none (when `live` is empty)
    split: routing.Split
    newest: str | None


class _Upstream(asyncio.Protocol):
    """One connection to an instance: idle in its pool, or carrying one exchange."""

    __slots__ = ("buf", "closed", "counters", "exchange", "inst", "reading_paused", "transport", "write_full")

    def __init__(self, inst: _Instance) -> None:
        self.inst = inst
        self.counters = inst.counters
        self.buf = bytearray()
        self.exchange: _Exchange | None = None
        self.closed = False
        self.write_full = False
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.counters.open_connections += 1

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.close()  # an idle connection has nothing to say: it is out of step
        else:
            exchange.upstream_data(data)

    def eof_received(self) -> bool:
        if self.exchange is not None:
            self.exchange.upstream_ended()
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        if self.exchange is not None:
            self.exchange.upstream_ended()

    def pause_writing(self) -> None:
        self.write_full = True
        if self.exchange is not None:
            self.exchange.client.sync_reading()

    def resume_writing(self) -> None:
        self.write_full = False
        if self.exchange is not None:
            self.exchange.client.sync_reading()

    def sync_reading(self) -> None:
        """Read unless the client this connection answers cannot take more."""
        exchange = self.exchange
        pause = exchange is not None and exchange.client.write_full
        if pause != self.reading_paused and not self.closed:
            self.reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _forget(self) -> None:
        if not self.closed:
            self.closed = True
            self.counters.open_connections -= 1
            pool = self.inst.idle_pool
            if self.exchange is None and self in pool:
                pool.remove(self)

    def close(self) -> None:
        if not self.closed:
            self._forget()
            self.transport.close()


class _Client(asyncio.Protocol):
    """One client connection: parses request heads from what arrives and runs one exchange at a time."""

    __slots__ = (
        "buf",
        "closed",
        "eof",
        "exchange",
        "idle_at",
        "ip",
        "reading_paused",
        "router",
        "timer",
        "transport",
        "write_full",
    )

    def __init__(self, router: Router) -> None:
        self.router = router
        self.buf = bytearray()
        self.exchange: _Exchange | None = None
        self.closed = False
        self.eof = False
        self.write_full = False
        self.reading_paused = False
        self.idle_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.ip = b"unknown"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.ip = str(peer[0]).encode("latin-1")
        self.router._clients.add(self)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            end = len(data) - 4
            if not self.buf and 0 < end <= MAX_HEAD and data.find(b"\r\n\r\n") == end and data[:2] != b"\r\n":
                # One whole request head and nothing else (the usual case): no need to buffer it.
                self.router._begin(self, data[:end])
                return
            self.buf += data
            self.next_request()
        elif exchange.tunnel:
            cast(_Upstream, exchange.up).transport.write(data)
        else:
            self.buf += data
            if exchange.up is not None and not exchange.request_done:
                exchange.pump()
            elif len(self.buf) > BUFFER_LIMIT:
                self.sync_reading()

    def eof_received(self) -> bool:
        # The client may only have shut down its sending side: its answer still goes out (then we close).
        self.eof = True
        exchange = self.exchange
        if exchange is None:
            self.next_request()
        elif exchange.tunnel:
            exchange.end_tunnel()
        elif exchange.up is not None and not exchange.request_done:
            exchange.pump()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.router._clients.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.exchange is not None:
            self.exchange.client_gone()

    def pause_writing(self) -> None:
        self.write_full = True
        if self.exchange is not None and self.exchange.up is not None:
            self.exchange.up.sync_reading()

    def resume_writing(self) -> None:
        self.write_full = False
        if self.exchange is not None and self.exchange.up is not None:
            self.exchange.up.sync_reading()

    def sync_reading(self) -> None:
        """Read unless enough is buffered or the instance this client sends to cannot take more."""
        exchange = self.exchange
        pause = len(self.buf) > BUFFER_LIMIT or (
            exchange is not None and exchange.up is not None and exchange.up.write_full
        )
        # After an end of stream the transport reads no more (reading again would report the end again).
        if pause != self.reading_paused and not self.closed and not self.eof:
            self.reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def next_request(self) -> None:
        """Start the exchange of the next request head in the buffer, if it is whole."""
        buf = self.buf
        while buf.startswith(b"\r\n"):  # tolerate stray blank lines between messages (RFC 9112 2.2)
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if end > MAX_HEAD or len(buf) > MAX_HEAD:
                self.answer(431, f"message head over {MAX_HEAD} bytes")
            elif self.eof:
                if buf.strip():
                    self.answer(400, "connection closed inside a message head")
                else:
                    self.close()
            elif self.reading_paused:
                self.sync_reading()
            return
        raw = bytes(buf[:end])
        del buf[: end + 4]
        self.router._begin(self, raw)
        if self.reading_paused and self.exchange is None:
            self.sync_reading()

    def done(self, keep: bool) -> None:
        """The exchange is over: wait for the next request, or close."""
        self.exchange = None
        if self.closed:
            return
        if not keep:
            self.close()
            return
        router = self.router
        self.idle_at = router._loop.time()
        if self.timer is None:
            self.timer = router._loop.call_at(self.idle_at + router.idle_timeout, self._idle_check)
        if self.buf or self.eof or self.reading_paused:
            self.next_request()

    def _idle_check(self) -> None:
        self.timer = None
        if self.closed or self.exchange is not None:
            return  # `done` arms the timer again
        due = self.idle_at + self.router.idle_timeout
        if self.router._loop.time() >= due:
            self.close()
        else:
            self.timer = self.router._loop.call_at(due, self._idle_check)

    def answer(self, status: int, text: str) -> None:
        """Answer the router's own response and close: after an error the stream may be out of step."""
        if self.closed:
            return
        body = (text + "\n").encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%b" % (status, _REASONS.get(status, "Error").encode(), len(body), body)
        )
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.router._clients.discard(self)
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.transport.close()


class _Exchange:
    """One request: from its head to the end of its response (or of its WebSocket tunnel).

    Driven by the client's and the upstream connection's callbacks. The instance is entered (busy,
    in flight) from the moment a connection to it carries the request until the exchange ends.
    """

    # What changes as the exchange goes on starts as these class defaults: fewer stores per request.
    attempt = 0  # candidates tried so far
    inst: _Instance | None = None
    up: _Upstream | None = None  # the connection carrying the request, once there is one
    reused = False  # `up` came from the pool
    over = False
    tunnel = False
    phase = _HEAD
    status = 0
    resp_kind = _LENGTH
    resp_left = 0
    resp_chunks: _Chunks | None = None
    chunk_out = False  # the response is chunked on its way to the client
    reusable = False  # `up` may carry another request once the response is whole

    def __init__(
        self,
        router: Router,
        client: _Client,
        request: bytes,
        candidates: list[_Instance],
        *,
        head_method: bool,
        http10: bool,
        keep: bool,
        upgrade: bool,
        body_kind: int,
        body_length: int,
    ) -> None:
        self.router = router
        self.client = client
        self.request = request
        self.candidates = candidates
        self.counters = candidates[0].counters  # every candidate is of the one chosen version
        self.head_method = head_method
        self.http10 = http10
        self.keep = keep
        self.upgrade = upgrade
        self.body_kind = body_kind
        self.body_left = body_length
        self.has_body = body_kind == _CHUNKED or body_length > 0
        self.request_done = not self.has_body
        self.chunks = _Chunks() if body_kind == _CHUNKED else None
        self.started = time.perf_counter()

    # --- reaching an instance ------------------------------------------------------------------

    def next_candidate(self) -> None:
        """Send the request to the next candidate (a refused connection moves on to the next one)."""
        if self.over:
            return
        candidates = self.candidates
        if self.attempt > len(candidates):
            self.fail(HttpError("no instance could be reached", 502))
            return
        inst = candidates[min(self.attempt, len(candidates) - 1)]
        self.attempt += 1
        pool = inst.idle_pool
        while pool:
            up = pool.pop()
            if not up.closed:
                self.attach(inst, up, reused=True)
                return
        self.router._open(self, inst)

    def attach(self, inst: _Instance, up: _Upstream, *, reused: bool) -> None:
        """`up` (pooled, or just opened) carries the request from now on."""
        if self.over:  # the client went away meanwhile
            self.router._release(inst, up)
            return
        self.inst = inst
        self.up = up
        self.reused = reused
        inst.busy += 1
        self.counters.in_flight += 1
        up.exchange = self
        if up.closed:
            self.upstream_ended()
            return
        if self.request_done:
            up.transport.write(self.request)
        elif self.body_kind == _LENGTH and len(self.client.buf) >= self.body_left:
            # A small body that is here already goes out with the head, in one send.
            buf = self.client.buf
            up.transport.write(self.request + buf[: self.body_left])
            del buf[: self.body_left]
            self.body_left = 0
            self.request_done = True
            if self.client.reading_paused:
                self.client.sync_reading()
        else:
            up.transport.write(self.request)
            self.pump()
        if self.client.write_full:
            up.sync_reading()

    def pump(self) -> None:
        """Pass on what the client sent of the request body."""
        up = cast(_Upstream, self.up)
        client = self.client
        buf = client.buf
        if self.chunks is None:
            n = min(len(buf), self.body_left)
            if n:
                up.transport.write(bytes(buf[:n]))
                del buf[:n]
                self.body_left -= n
            done = not self.body_left
        else:
            out: list[bytes] = []
            try:
                done = self.chunks.feed(buf, out)
            except HttpError as exc:
                self.fail(exc)
                return
            if out:
                up.transport.write(b"".join(out))
        if client.reading_paused:
            client.sync_reading()  # what was held back is on its way
        if done:
            self.request_done = True
        elif client.eof:
            self.client_gone()  # the client stopped inside its body

    # --- the response ----------------------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        up = cast(_Upstream, self.up)
        if self.tunnel:
            self.client.transport.write(data)
        elif self.phase == _HEAD:
            if up.buf:
                up.buf += data
                data = bytes(up.buf)
                up.buf.clear()
            self._response_heads(data)
        elif self.resp_kind == _LENGTH and not up.buf:
            left = self.resp_left
            if len(data) > left:
                up.buf += data[left:]
                data = data[:left]
            self.client.transport.write(data)
            self.resp_left = left - len(data)
            if not self.resp_left:
                self.finish()
        else:
            up.buf += data
            self._relay()

    def _response_heads(self, data: bytes) -> None:
        """Read response heads from `data` (what came and was not read yet): interim ones (1xx but 101) are
        passed on, the final one starts the body. What is left of `data` is kept in the connection's buffer."""
        up = cast(_Upstream, self.up)
        at = 0
        while True:
            while data.startswith(b"\r\n", at):
                at += 2
            end = data.find(b"\r\n\r\n", at)
            if end < 0 or end - at > MAX_HEAD:
                if end - at > MAX_HEAD or len(data) - at > MAX_HEAD:
                    self.fail(HttpError(f"the instance sent a bad response: message head over {MAX_HEAD} bytes", 502))
                else:
                    up.buf += data[at:]
                return
            try:
                head = _Head(data[at:end])
            except HttpError as exc:
                self.fail(HttpError(f"the instance sent a bad response: {exc}", 502))
                return
            version, code = head.first[0], head.first[1]
            if not version.startswith(b"HTTP/1.") or not code.isdigit():
                self.fail(HttpError(f"the instance answered {_text(version[:20])!r}", 502))
                return
            status = int(code)
            if not 100 <= status < 200 or status == 101:
                break
            if status != 100:  # we already sent our own 100 Continue
                self.client.transport.write(head.raw())
            at = end + 4
        self.status = status
        if self.upgrade and status == 101:
            up.buf += data[end + 4 :]
            self._start_tunnel(head)
            return
        try:
            if self.head_method or status in _NO_BODY_CODES:
                kind, length = _LENGTH, 0
            else:
                kind, length = _framing(head, request=False)
        except HttpError as exc:
            self.fail(exc)
            return
        self.phase = _BODY
        self.resp_kind = kind
        self.resp_left = length
        body = end + 4
        if kind == _LENGTH and self.keep and not self.http10 and _unchanged(head):
            # The usual answer: its head goes on as it came, with what is here of its body, in one send.
            self.reusable = not self.upgrade
            stop = body + length
            if at == 0 and stop >= len(data):
                self.client.transport.write(data)
                self.resp_left -= len(data) - body
            else:
                self.client.transport.write(data[at:stop])
                up.buf += data[stop:]
                self.resp_left -= min(length, len(data) - body)
            if not self.resp_left:
                self.finish()
            return
        connection = head.tokens(b"connection")
        self.reusable = (
            not self.upgrade and kind != _CLOSE and head.first[0] == b"HTTP/1.1" and b"close" not in connection
        )
        lines = [b"HTTP/1.1 %b %b" % (code, head.first[2] if len(head.first) > 2 else b"")]
        lines += head.forward(HOP_BY_HOP, connection)
        self.chunk_out = kind == _CHUNKED or (kind == _CLOSE and not self.http10)
        if kind == _CLOSE and not self.chunk_out:
            self.keep = False
        if self.chunk_out:
            lines.append(b"Transfer-Encoding: chunked")
        if not self.keep:
            lines.append(b"Connection: close")
        elif self.http10:
            lines.append(b"Connection: keep-alive")
        lines += [b"", b""]
        out = b"\r\n".join(lines)
        if kind == _LENGTH:
            # The head goes out with what is here of the body: one send for a small answer.
            stop = body + length
            self.client.transport.write(out + data[body:stop])
            up.buf += data[stop:]
            self.resp_left -= min(length, len(data) - body)
            if not self.resp_left:
                self.finish()
            return
        if kind == _CHUNKED:
            self.resp_chunks = _Chunks()
        self.client.transport.write(out)
        up.buf += data[body:]
        self._relay()

    def _relay(self) -> None:
        """Pass on what the instance sent of the response body."""
        buf = cast(_Upstream, self.up).buf
        if not buf:
            return
        transport = self.client.transport
        if self.resp_kind == _LENGTH:
            n = min(self.resp_left, len(buf))
            transport.write(bytes(buf[:n]))
            del buf[:n]
            self.resp_left -= n
            if not self.resp_left:
                self.finish()
        elif self.resp_chunks is not None:
            out: list[bytes] = []
            try:
                done = self.resp_chunks.feed(buf, out)
            except HttpError:
                if out:
                    transport.write(b"".join(out))
                self.abort()
                return
            if out:
                transport.write(b"".join(out))
            if done:
                self.finish()
        else:
            data = bytes(buf)
            buf.clear()
            transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunk_out else data)

    def upstream_ended(self) -> None:
        """The instance closed the connection (or it broke) while it carried this exchange."""
        if self.over:
            return
        if self.tunnel:
            self.end_tunnel()
        elif self.phase == _BODY:
            if self.resp_kind == _CLOSE:
                if self.chunk_out:
                    self.client.transport.write(b"0\r\n\r\n")
                self.finish()
            else:
                self.abort()  # the head is out: the only honest signal left to the client is to close
        elif cast(_Upstream, self.up).buf.strip():
            self.fail(HttpError("the instance sent a bad response: connection closed inside a message head", 502))
        else:
            if self.has_body and self.client.eof:
                self.client_gone()
            elif self.reused and not self.has_body and not self.upgrade:
                # A pooled connection the instance closed meanwhile: the same instance, on another connection.
                self._detach(close=True)
                self.attempt -= 1
                self.next_candidate()
            else:
                self.fail(HttpError("the instance closed the connection before answering", 502))

    # --- endings ---------------------------------------------------------------------------------

    def _detach(self, *, close: bool) -> None:
        """Let go of the upstream connection and the instance (the pool takes the connection back if it can)."""
        up, inst = self.up, self.inst
        if up is None or inst is None:
            return
        self.up = None
        up.exchange = None
        if close:
            up.close()
        else:
            self.router._release(inst, up)
        if not self.tunnel:
            self.counters.in_flight -= 1
        inst.leave()

    def finish(self) -> None:
        """The response is whole."""
        self.over = True
        self.phase = _DONE
        up = cast(_Upstream, self.up)
        # Reused only when it is in step: the whole request went out and nothing extra came back.
        self._detach(close=not (self.reusable and self.request_done and not up.buf))
        self.counters.observe(self.status, time.perf_counter() - self.started)
        self.client.done(self.keep and self.request_done)

    def fail(self, exc: HttpError) -> None:
        """Nothing of the response went out: the client gets the router's own answer, then the connection closes."""
        if self.phase != _HEAD:
            self.abort()  # a bad request body noticed while its response streams back
            return
        self.over = True
        self._detach(close=True)
        self.counters.observe(exc.status, time.perf_counter() - self.started)
        self.client.exchange = None
        self.client.answer(exc.status, f"{self.router.service}: {exc}")

    def abort(self) -> None:
        """Part of the response went out and the rest cannot follow: close both sides."""
        self.over = True
        self._detach(close=True)
        self.counters.observe(self.status or 499, time.perf_counter() - self.started)
        self.client.exchange = None
        self.client.close()

    def client_gone(self) -> None:
        if self.over:
            return
        if self.tunnel:
            self.end_tunnel()
        else:
            self.abort()

    def _start_tunnel(self, head: _Head) -> None:
        """Pass the 101 on, then splice bytes both ways until either side closes."""
        self.tunnel = True
        self.counters.in_flight -= 1  # a tunnel is counted in websockets_open instead
        self.counters.observe(101, time.perf_counter() - self.started)
        self.counters.websockets_open += 1
        up = cast(_Upstream, self.up)
        client = self.client
        client.transport.write(head.raw() + up.buf)
        up.buf.clear()
        if client.buf:
            up.transport.write(bytes(client.buf))
            client.buf.clear()
        if client.eof:
            self.end_tunnel()

    def end_tunnel(self) -> None:
        if self.over:
            return
        self.over = True
        self.counters.websockets_open -= 1
        self._detach(close=True)
        self.client.exchange = None
        self.client.close()


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
        self.force_header = force_header
        self.pool_size = pool_size
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._instances: dict[str, _Instance] = {}
        self._weights: dict[str, float] = {}
        self._order: list[str] = []  # versions, newest first
        self._counters: dict[str, VersionCounters] = {}
        self._unrouted: dict[int, int] = {}
        self._table: _Table | None = None  # None after a change of weights or instances: rebuilt when next needed
        self._clients: set[_Client] = set()
        self._connecting: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop  # set by start()
        self._round_robin = itertools.count()
        # Not for security: spreads unkeyed requests by weight (tests pass a seeded one).
        self._random = rng or random.Random()  # noqa: S311

    # --- control -------------------------------------------------------------------------------

    @property
    def force_header(self) -> tuple[str, str] | None:
        """(header name, value), lowercased: a request carrying it goes to the newest version."""
        return self._force_header

    @force_header.setter
    def force_header(self, value: tuple[str, str] | None) -> None:
        self._force_header = (value[0].lower(), value[1].lower()) if value else None
        self._force = (
            (self._force_header[0].encode("latin-1", "replace"), self._force_header[1].encode("latin-1", "replace"))
            if self._force_header
            else None
        )

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
            self._table = None
        return self._counters.setdefault(version, VersionCounters())

    def add(self, backend: Backend) -> None:
        """Start sending requests to `backend` (as its version's weight says). Conflict if its id is taken."""
        if backend.id in self._instances:
            raise Conflict(f"router {self.service}: instance {backend.id!r} is already routed")
        self._instances[backend.id] = _Instance(backend, self._see(backend.version))
        self._table = None

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Replace the weights {version: weight}; the next request of every connection follows them."""
        checked = routing.check_weights(weights)
        for version in checked:
            self._see(version)
        self._weights = checked
        self._table = None

    def drain(self, instance_id: str) -> Awaitable[None]:
        """Send no new request to the instance; the result completes when its last request or tunnel ends."""
        inst = self._get(instance_id)
        inst.draining = True
        inst.close_pool()
        self._table = None
        idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if inst.busy:
            inst.idle_waiters.append(idle)
        else:
            idle.set_result(None)
        return idle

    def undrain(self, instance_id: str) -> None:
        """Send requests to a drained instance again."""
        self._get(instance_id).draining = False
        self._table = None

    def remove(self, instance_id: str) -> None:
        """Forget the instance (drain it first: requests still on it finish, but nothing waits for them)."""
        inst = self._instances.pop(instance_id, None)
        if inst is None:
            raise NotFound(f"router {self.service}: no instance {instance_id!r}")
        inst.removed = True
        inst.draining = True
        inst.close_pool()
        self._table = None

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
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(lambda: _Client(self), self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close client connections and the idle upstream pools."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connecting = list(self._connecting)
        for task in connecting:
            task.cancel()
        for client in list(self._clients):
            if client.exchange is not None:
                client.exchange.client_gone()
            client.close()
        self._clients.clear()
        if server is not None:
            await server.wait_closed()
        await asyncio.gather(*connecting, return_exceptions=True)
        for inst in self._instances.values():
            inst.close_pool()

    # --- choosing an instance ------------------------------------------------------------------

    def _build_table(self) -> _Table:
        live: dict[str, list[_Instance]] = {}
        for inst in self._instances.values():
            if not inst.draining:
                live.setdefault(inst.backend.version, []).append(inst)
        refusal = 0 if live else 503 if self._instances else 502
        table = _Table(
            live, refusal, routing.split(self._weights, self._order, live), routing.newest(self._order, live)
        )
        self._table = table
        return table

    def _sticky_key(self, head: _Head, target: bytes) -> str | None:
        sticky = cast(StickyKey, self.sticky)
        if sticky.source == "query":
            return sticky.extract((), _text(target))
        name = b"cookie" if sticky.source == "cookie" else sticky.name.lower().encode("latin-1", "replace")
        values = head.all(name)
        if not values:
            return None
        return sticky.extract([(_text(name), _text(value)) for value in values], "")

    def _candidates(self, head: _Head, target: bytes) -> tuple[list[_Instance], int]:
        """Instances to try in order for a request, or ([], 502 | 503)."""
        table = self._table or self._build_table()
        if not table.live:
            return [], table.refusal
        key = self._sticky_key(head, target) if self.sticky is not None else None
        version: str | None = None
        if self._force is not None:
            forced = head.get(self._force[0])
            if forced is not None and forced.strip().lower() == self._force[1]:
                version = table.newest
        if version is None:
            point = routing.key_point(key) if key is not None else self._random.random()
            version = table.split.choose(point)
        if version is None:
            return [], 502
        pool = table.live[version]
        if key is not None:
            by_id = {inst.backend.id: inst for inst in pool}
            return [by_id[i] for i in routing.rendezvous(key, by_id)], 0
        start = next(self._round_robin) % len(pool)
        return (pool[start:] + pool[:start]) if start else pool, 0

    def _open(self, exchange: _Exchange, inst: _Instance) -> None:
        task = asyncio.ensure_future(self._connect(exchange, inst))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, exchange: _Exchange, inst: _Instance) -> None:
        """Open a connection to the instance for the exchange (or try its next candidate)."""
        backend = inst.backend
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, up = await loop.create_connection(lambda: _Upstream(inst), backend.host, backend.port)
        except (OSError, TimeoutError):
            exchange.next_candidate()
            return
        exchange.attach(inst, up, reused=False)

    def _release(self, inst: _Instance, up: _Upstream) -> None:
        if inst.draining or up.closed or up.buf or len(inst.idle_pool) >= self.pool_size:
            up.close()
            return
        inst.idle_pool.append(up)
        if up.reading_paused:
            up.sync_reading()  # an idle connection reads, to notice when the instance closes it

    # --- serving -------------------------------------------------------------------------------

    def _begin(self, client: _Client, raw: bytes) -> None:
        """Start serving the request whose head is `raw` (or answer it and close)."""
        try:
            head = _Head(raw)
        except HttpError as exc:
            client.answer(exc.status, str(exc))
            return
        first = head.first
        method, target = first[0], first[1]
        version = first[2] if len(first) > 2 else b""
        if version != b"HTTP/1.1" and version != b"HTTP/1.0":
            client.answer(505, f"unsupported protocol {_text(version[:20])!r}")
            return
        http10 = version == b"HTTP/1.0"
        names = head.names
        # Most requests name none of the headers the router rewrites: their head goes on as it came.
        untouched = _REQUEST_DROP.isdisjoint(names) and not http10
        connection: AbstractSet[bytes] = _NO_TOKENS
        if untouched and b"content-length" not in names:
            keep, upgrade, body_kind, body_length = True, False, _LENGTH, 0
        else:
            connection = head.tokens(b"connection")
            keep = b"keep-alive" in connection if http10 else b"close" not in connection
            try:
                body_kind, body_length = _framing(head, request=True)
            except HttpError as exc:
                client.answer(exc.status, str(exc))
                return
            upgrade = b"upgrade" in connection and (head.get(b"upgrade") or b"").strip().lower() == b"websocket"
            if not http10 and b"100-continue" in head.tokens(b"expect"):
                # We answer the expectation ourselves and stream the body: the instance never sees it.
                client.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        candidates, refusal = self._candidates(head, target)
        if not candidates:
            self._unrouted[refusal] = self._unrouted.get(refusal, 0) + 1
            why = "every instance is draining" if refusal == 503 else "no instance to send it to"
            client.answer(refusal, f"{self.service}: {why}")
            return

        if untouched:
            lines = [raw, b"X-Forwarded-For: " + client.ip, b"X-Forwarded-Proto: http"]
        else:
            lines = [b"%b %b HTTP/1.1" % (method, target), *head.forward(_REQUEST_DROP, connection)]
            forwarded = head.get(b"x-forwarded-for")
            lines.append(b"X-Forwarded-For: " + (forwarded + b", " + client.ip if forwarded else client.ip))
            lines.append(b"X-Forwarded-Proto: " + (head.get(b"x-forwarded-proto") or b"http"))
        if b"host" not in names:
            backend = candidates[0].backend
            lines.append(b"Host: %b:%d" % (backend.host.encode("latin-1"), backend.port))
        if upgrade:
            lines += [b"Connection: Upgrade", b"Upgrade: " + (head.get(b"upgrade") or b"websocket")]
        elif body_kind == _CHUNKED:
            lines.append(b"Transfer-Encoding: chunked")
        lines += [b"", b""]

        exchange = _Exchange(
            self,
            client,
            b"\r\n".join(lines),
            candidates,
            head_method=method == b"HEAD",
            http10=http10,
            keep=keep,
            upgrade=upgrade,
            body_kind=body_kind,
            body_length=body_length,
        )
        client.exchange = exchange
        exchange.next_candidate()


def _encode_head(first: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [first, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    """The next message head from a stream, or None on a clean end of stream before its first byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError("connection closed inside a message head") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError(f"message head over {MAX_HEAD} bytes", 431) from exc
    raw = raw[:-4]
    while raw.startswith(b"\r\n"):
        raw = raw[2:]
    return _Head(raw) if raw else None


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
            method = head.first[0]
            path = head.first[1].partition(b"?")[0]
            if method not in (b"GET", b"HEAD"):
                code, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == b"/metrics":
                text = render_prometheus(r.snapshot() for r in self.routers)
                code, ctype, body = "200 OK", "text/plain; version=0.0.4; charset=utf-8", text.encode()
            elif path == b"/healthz":
                code, ctype, body = "200 OK", "text/plain", b"ok\n"
            else:
                code, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")]
            writer.write(_encode_head(f"HTTP/1.1 {code}", headers) + (body if method == b"GET" else b""))
            await writer.drain()
        except (HttpError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(RuntimeError, OSError):
                writer.close()
