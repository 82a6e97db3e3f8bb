"""ws-gateway: pushes a room's live events to its players' WebSockets.

    GET /ws?roomId=ROOM&token=TOKEN[&after=SEQ]   WebSocket upgrade

The token is a player token from the api-server's join (HS256, the same key rules: current key or
`jwt-signing-key.previous`), and must be for `roomId`. Refusals are plain HTTP: 400 (no roomId or
token), 401 (bad token), 403 (token for another room), 429 (MAX_CONNECTIONS_PER_ROOM sockets
already), 503 (not ready or stopping), 500 (FAULT_RATE). Once open, the gateway sends
`{"type": "hello", "roomId", "player", "after", "instance"}` after its NATS subscription to
`rooms.<roomId>.events` is active, then every event published there with a seq above `after`, as
the api-server published it (`{roomId, seq, type, payload, at}`), in arrival order. It sends no
past events: a client reads those from `GET /api/rooms/{id}/events` (the gateway has no
database) and fills any gap the same way. Messages from the client are ignored.

Presence: while a player has a socket here, its id is in the Redis set
`werewolves:room:<roomId>:online` (expiring two minutes after the last refresh).

`/healthz`, `/readyz` and `/version` are answered over plain HTTP on the same port. On SIGTERM the
gateway stops accepting, closes sockets with 1001 (going away) so clients reconnect elsewhere,
and exits. Config: MAX_CONNECTIONS_PER_ROOM, plus those of `service.py`. Secrets:
jwt-signing-key (and .previous), redis-url, nats-url.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import redis.asyncio as aioredis
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from werewolves import tokens
from werewolves.clients import connect_nats, connect_redis, connect_with_retry, redis_ok, room_subject
from werewolves.secrets import SecretsDir, SigningKeys
from werewolves.service import ConfigError, Endpoints, Settings, exit_config, load_or_exit, run

SERVICE = "ws-gateway"
DEFAULT_PORT = 8081
QUEUE_LIMIT = 1000
ONLINE_TTL = 120
REFRESH_EVERY = 30.0

log = logging.getLogger("werewolves.gateway")


def _response(status: int, body: dict[str, Any]) -> Response:
    data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                       ("Connection", "close")])
    return Response(status, HTTPStatus(status).phrase, headers, data)


@dataclass
class _Socket:
    room: str
    player: str
    after: int
    queue: asyncio.Queue[tuple[int, str]] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))


@dataclass
class _Room:
    subscription: Subscription | None = None
    sockets: dict[ServerConnection, _Socket] = field(default_factory=dict)


class Gateway:
    def __init__(self, settings: Settings, secrets: SecretsDir, max_per_room: int) -> None:
        self.settings = settings
        self.secrets = secrets
        self.keys = SigningKeys(secrets)
        self.max_per_room = max_per_room
        self.nats: Nats | None = None
        self.redis: aioredis.Redis | None = None
        self.endpoints = Endpoints(settings, self.ready)
        self._rooms: dict[str, _Room] = {}
        # Sockets between the handshake and their handler; weak, so a handshake that fails after
        # process_request leaves nothing behind.
        self._accepted: weakref.WeakKeyDictionary[ServerConnection, _Socket] = weakref.WeakKeyDictionary()
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def ready(self) -> bool:
        return self.nats is not None and self.nats.is_connected and await redis_ok(self.redis)

    async def serve(self, stop: asyncio.Event) -> None:
        self.keys.signing()
        redis_url = self.secrets.read("redis-url")
        nats_url = self.secrets.read("nats-url")
        server: Server = await serve(self._handler, "0.0.0.0", self.settings.port,  # noqa: S104 - all interfaces
                                     process_request=self._process_request, ping_interval=20, ping_timeout=20)
        log.info("listening on port %d", self.settings.port)
        refresher: asyncio.Task[None] | None = None
        try:
            self.redis = await connect_with_retry("Redis", lambda: connect_redis(redis_url), stop)
            self.nats = await connect_with_retry("NATS", lambda: connect_nats(nats_url, self.settings.instance), stop)
            if self.nats is not None and self.redis is not None:
                log.info("ready: Redis and NATS connected")
                refresher = asyncio.create_task(self._refresh_presence(stop))
            await stop.wait()
        finally:
            log.info("stopping: closing %d socket(s)", sum(len(r.sockets) for r in self._rooms.values()))
            self.endpoints.draining = True
            server.close()  # no new connections; open sockets are closed with 1001 (going away)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=5.0)
            if refresher is not None:
                refresher.cancel()
            if self.nats is not None:
                await self.nats.drain()
            if self.redis is not None:
                await self.redis.aclose()

    # --- the opening handshake -----------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return _response(200, {"status": "ok"})
        if url.path == "/readyz":
            ready = await self.endpoints.readiness()
            return _response(200 if ready else 503, {"ready": ready})
        if url.path == "/version":
            return _response(200, self.settings.version_body())
        if url.path != "/ws":
            return _response(404, {"error": f"no such path: {url.path}; WebSockets are at /ws"})
        if self.endpoints.draining or self.nats is None or not self.nats.is_connected:
            return _response(503, {"error": "not ready; try again"})
        if self.endpoints.fault():
            return _response(500, {"error": "injected fault (FAULT_RATE)"})
        query = dict(parse_qsl(url.query))
        room, token = query.get("roomId"), query.get("token")
        if not room or not token:
            return _response(400, {"error": "connect to /ws?roomId=ROOM&token=TOKEN[&after=SEQ]"})
        try:
            claims = tokens.verify(token, self.keys.accepted())
        except tokens.InvalidToken as error:
            return _response(401, {"error": f"invalid token: {error}"})
        if claims.get("room") != room or not isinstance(claims.get("sub"), str):
            return _response(403, {"error": f"this token is for another room than {room}"})
        try:
            after = int(query.get("after", "0"))
        except ValueError:
            return _response(400, {"error": "after must be a whole number (a seq)"})
        if len(self._rooms.get(room, _Room()).sockets) >= self.max_per_room:
            return _response(429, {"error": f"room {room} has {self.max_per_room} sockets already "
                                            "(MAX_CONNECTIONS_PER_ROOM)"})
        self._accepted[connection] = _Socket(room, str(claims["sub"]), after)
        return None

    # --- an open socket ------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        sock = self._accepted.pop(ws, None)
        if sock is None:
            await ws.close(1011, "internal error")
            return
        try:
            await self._join(ws, sock)
        except (NatsError, TimeoutError) as error:  # NATS refused or is away: the client comes back later
            log.warning("room %s: cannot subscribe (%s)", sock.room, type(error).__name__)
            await ws.close(1013, "try again later")
            return
        try:
            await self._online(sock, present=True)
            await ws.send(json.dumps({"type": "hello", "roomId": sock.room, "player": sock.player,
                                      "after": sock.after, "instance": self.settings.instance}))
            log.info("room %s: %s connected", sock.room, sock.player)
            sender = asyncio.create_task(self._send_events(ws, sock))
            receiver = asyncio.create_task(self._ignore_incoming(ws))
            _, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        except ConnectionClosed:
            pass
        finally:
            await self._leave(ws, sock)
            await self._online(sock, present=False)
            log.info("room %s: %s disconnected", sock.room, sock.player)

    async def _send_events(self, ws: ServerConnection, sock: _Socket) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                seq, text = await sock.queue.get()
                if seq > sock.after:
                    await ws.send(text)

    @staticmethod
    async def _ignore_incoming(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    async def _join(self, ws: ServerConnection, sock: _Socket) -> None:
        if self.nats is None:
            raise NatsError("not connected")
        async with self._lock:
            room = self._rooms.setdefault(sock.room, _Room())
            room.sockets[ws] = sock
            if room.subscription is None:
                try:
                    room.subscription = await self.nats.subscribe(room_subject(sock.room),
                                                                  cb=self._deliver_to(room))
                    await self.nats.flush(timeout=2)  # the server has the subscription: nothing is missed now
                except BaseException:
                    del room.sockets[ws]
                    if not room.sockets:
                        self._rooms.pop(sock.room, None)
                    raise

    def _deliver_to(self, room: _Room) -> Callable[[Msg], Awaitable[None]]:
        async def deliver(msg: Msg) -> None:
            try:
                seq = int(json.loads(msg.data)["seq"])
                text = msg.data.decode("utf-8")
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed event on %s", msg.subject)
                return
            for ws, sock in list(room.sockets.items()):
                try:
                    sock.queue.put_nowait((seq, text))
                except asyncio.QueueFull:
                    log.warning("room %s: %s is too slow; closing its socket", sock.room, sock.player)
                    task = asyncio.create_task(ws.close(1013, "too slow"))
                    self._closing.add(task)  # keep a reference until it is done
                    task.add_done_callback(self._closing.discard)

        return deliver

    async def _leave(self, ws: ServerConnection, sock: _Socket) -> None:
        async with self._lock:
            room = self._rooms.get(sock.room)
            if room is None:
                return
            room.sockets.pop(ws, None)
            if not room.sockets:
                del self._rooms[sock.room]
                if room.subscription is not None and self.nats is not None and not self.nats.is_closed:
                    with contextlib.suppress(Exception):
                        await room.subscription.unsubscribe()

    # --- presence ------------------------------------------------------------------------------

    async def _online(self, sock: _Socket, *, present: bool) -> None:
        if self.redis is None:
            return
        key = f"werewolves:room:{sock.room}:online"
        try:
            if present:
                await self.redis.sadd(key, sock.player)
                await self.redis.expire(key, ONLINE_TTL)
            elif not any(s.player == sock.player for s in self._rooms.get(sock.room, _Room()).sockets.values()):
                await self.redis.srem(key, sock.player)
        except (aioredis.RedisError, OSError) as error:
            log.warning("room %s: presence not recorded in Redis (%s)", sock.room, type(error).__name__)

    async def _refresh_presence(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_EVERY):
                    await stop.wait()
            if self.redis is None:
                continue
            for room_id, room in list(self._rooms.items()):
                key = f"werewolves:room:{room_id}:online"
                try:
                    players = {s.player for s in room.sockets.values()}
                    if players:
                        await self.redis.sadd(key, *players)
                        await self.redis.expire(key, ONLINE_TTL)
                except (aioredis.RedisError, OSError) as error:
                    log.warning("presence refresh failed (%s)", type(error).__name__)
                    break


def main() -> None:
    settings = load_or_exit(SERVICE, DEFAULT_PORT)
    try:
        max_per_room = settings.integer("MAX_CONNECTIONS_PER_ROOM", 20, minimum=1)
    except ConfigError as error:
        exit_config(SERVICE, error)
    gateway = Gateway(settings, SecretsDir(settings.secrets_dir), max_per_room)

    run(settings, gateway.serve)


if __name__ == "__main__":
    main()
