"""Test helpers for the router: an asyncio HTTP/1.1 + WebSocket backend and a small keep-alive client.

Used by tests/integration/test_router.py and benchmarks/router.py. Written on asyncio streams only,
so the tests exercise the router against an independent implementation of the protocol.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return lines[0], headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    if (header(headers, "transfer-encoding") or "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(header(headers, "content-length") or 0)
    return await reader.readexactly(length)


def ws_frame(payload: bytes, *, opcode: int = 1, mask: bool) -> bytes:
    first = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        length = bytes([bit | n])
    elif n < 65536:
        length = bytes([bit | 126]) + struct.pack("!H", n)
    else:
        length = bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return first + length + payload
    key = os.urandom(4)
    return first + length + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def ws_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b1, b2 = await reader.readexactly(2)
    n = b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4) if b2 & 0x80 else b""
    data = await reader.readexactly(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return b1 & 0x0F, data


@dataclass
class Backend:
    """One instance: answers /info, /echo, /chunked, /slow, /status, /stream, /gated-upload, /big,
    /dribble, /early-hints, /hang-up-next and /ws."""

    name: str
    version: str
    port: int = 0
    connections: int = 0
    requests: int = 0
    sent: int = 0  # body bytes /big has handed to the kernel so far
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    hang_up: set[asyncio.StreamWriter] = field(default_factory=set)  # connections to close on their next request
    got_first_part: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _tag(self) -> list[tuple[str, str]]:
        return [("X-Instance", self.name), ("X-Version", self.version)]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        self.connections += 1
        try:
            while (head := await read_head(reader)) is not None:
                if writer in self.hang_up:
                    break  # like a server whose keep-alive timeout fired just as the request came
                self.requests += 1
                if not await self.answer(head[0], head[1], reader, writer):
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop() ends the connection; Python 3.11's start_server logs a cancelled handler as an error
        finally:
            if task is not None:
                self.tasks.discard(task)
            self.hang_up.discard(writer)
            writer.close()

    def send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: list[tuple[str, str]],
        *,
        head: bool = False,
    ) -> None:
        headers = [*self._tag(), ("Content-Length", str(len(body))), *extra]
        lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers), "", ""]
        writer.write("\r\n".join(lines).encode() + (b"" if head else body))

    async def answer(
        self, first: str, headers: list[tuple[str, str]], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        method, target, _ = first.split(" ", 2)
        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        if url.path == "/ws":
            return await self.websocket(headers, reader, writer)
        if url.path == "/gated-upload":
            # Proves the router streams request bodies: it answers after reading a first part.
            length = int(header(headers, "content-length") or 0)
            first_part = await reader.readexactly(1024)
            self.got_first_part.set()
            if "wait" in query:
                await self.gate.wait()  # reads nothing more until the test opens the gate
            rest = await reader.readexactly(length - 1024)
            body = json.dumps({"length": len(first_part) + len(rest)}).encode()
            self.send(writer, 200, body, [])
            return True
        body = await read_body(reader, headers)
        if url.path == "/echo":
            digest = hashlib.sha256(body).hexdigest()
            self.send(writer, 200, body, [("X-Sha256", digest)])
        elif url.path == "/slow":
            await asyncio.sleep(float(query.get("s", "0.2")))
            self.send(writer, 200, self.name.encode(), [])
        elif url.path == "/status":
            self.send(writer, int(query.get("code", "200")), b"status", [])
        elif url.path == "/chunked":
            n, size = int(query.get("n", "10")), int(query.get("size", "1000"))
            head = b"HTTP/1.1 200 OK\r\nX-Instance: %b\r\nTransfer-Encoding: chunked\r\n\r\n"
            writer.write(head % self.name.encode())
            for i in range(n):
                chunk = bytes([97 + i % 26]) * size
                writer.write(b"%x;ext=1\r\n%b\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\nX-Trailer: done\r\n\r\n")
        elif url.path == "/stream":
            # Proves the router streams response bodies: the rest waits for the test to open the gate.
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n" + b"a" * 1024)
            await writer.drain()
            await self.gate.wait()
            writer.write(b"b" * 1024)
        elif url.path == "/big":
            # A large body written as fast as the kernel takes it: `sent` tells how far it got.
            size, part = int(query["mb"]) * 1024 * 1024, 256 * 1024
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for i in range(size // part):
                writer.write(bytes([97 + i % 26]) * part)
                await writer.drain()
                self.sent += part
        elif url.path == "/dribble":
            # A response (an interim one, then the final one) in pieces of three bytes, each sent on its own.
            message = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            message += b"HTTP/1.1 200 OK\r\nX-Instance: %b\r\nContent-Length: 10\r\n\r\n0123456789" % self.name.encode()
            for start in range(0, len(message), 3):
                writer.write(message[start : start + 3])
                await writer.drain()
                await asyncio.sleep(0.001)
        elif url.path == "/early-hints":
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            await writer.drain()
            self.send(writer, 200, b"hinted", [])
        elif url.path == "/hang-up-next":
            self.hang_up.add(writer)
            self.send(writer, 200, b"bye next time", [])
        elif url.path == "/until-close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 5000)
            await writer.drain()
            return False
        else:
            info = {
                "instance": self.name,
                "version": self.version,
                "method": method,
                "target": target,
                "headers": headers,
                "body_length": len(body),
            }
            body = json.dumps(info).encode()
            self.send(writer, 200, body, [("Content-Type", "application/json")], head=method == "HEAD")
        await writer.drain()
        return True

    async def websocket(
        self, headers: list[tuple[str, str]], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        key = header(headers, "sec-websocket-key") or ""
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\nX-Instance: {self.name}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        while True:
            opcode, data = await ws_read(reader)
            if opcode == 8:
                writer.write(ws_frame(data[:2], opcode=8, mask=False))
                await writer.drain()
                return False
            writer.write(ws_frame(f"{self.name}:".encode() + data, opcode=opcode, mask=False))
            await writer.drain()


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.reader.at_eof():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.connects += 1
        return self.reader, self.writer

    async def send_head(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        _, writer = await self._ensure()
        lines = [f"{method} {target} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers), "", ""]
        writer.write("\r\n".join(lines).encode())

    async def read_response(self, method: str = "GET") -> Response:
        reader, _ = await self._ensure()
        head = await read_head(reader)
        if head is None:
            raise ConnectionError("closed before a response")
        first, headers = head
        status = int(first.split(" ")[1])
        if method == "HEAD":
            body = b""
        elif header(headers, "transfer-encoding") or header(headers, "content-length"):
            body = await read_body(reader, headers)
        else:
            body = await reader.read()
        if (header(headers, "connection") or "").lower() == "close":
            await self.close()
        return Response(status, headers, body)

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Response:
        extra = list(headers or [])
        if body or method in ("POST", "PUT"):
            extra.append(("Content-Length", str(len(body))))
        await self.send_head(method, target, extra)
        assert self.writer is not None
        self.writer.write(body)
        return await self.read_response(method)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class WebSocket:
    """A WebSocket client connection opened through the router."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, instance: str) -> None:
        self.reader, self.writer, self.instance = reader, writer, instance

    @classmethod
    async def connect(cls, port: int, target: str = "/ws", headers: list[tuple[str, str]] | None = None) -> WebSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {target} HTTP/1.1",
            "Host: test",
            "Upgrade: websocket",
            "Connection: keep-alive, Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers or []),
            "",
            "",
        ]
        writer.write("\r\n".join(lines).encode())
        head = await read_head(reader)
        assert head is not None
        assert head[0].startswith("HTTP/1.1 101"), head
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324
        assert header(head[1], "sec-websocket-accept") == expected
        return cls(reader, writer, header(head[1], "x-instance") or "")

    async def echo(self, text: str) -> str:
        self.writer.write(ws_frame(text.encode(), mask=True))
        opcode, data = await ws_read(self.reader)
        assert opcode == 1
        return data.decode()

    async def close(self) -> None:
        self.writer.write(ws_frame(struct.pack("!H", 1000), opcode=8, mask=True))
        opcode, _ = await ws_read(self.reader)
        assert opcode == 8
        assert await self.reader.read() == b""  # the server closed the connection after its close frame
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
