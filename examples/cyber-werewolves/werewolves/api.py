"""api-server: the game's HTTP API, its NATS request handlers and its phase timer.

HTTP (JSON bodies; a token is `Authorization: Bearer <token>` from join):

    POST /api/rooms                      {"name"?}                  -> 201 {roomId, name, seq}
    GET  /api/rooms/{id}                 [token: adds "you"]        -> 200 the room's state
    POST /api/rooms/{id}/join            {"name"?}                  -> 201 {roomId, playerId, seat, token, seq}
    POST /api/rooms/{id}/start           {"size"?} + token          -> 200 {roomId, players, werewolves, phase, round}
    POST /api/rooms/{id}/act             {"action", "target"?, "text"?} + token
                                                                    -> 200 {accepted, phase, round, phaseEnded}
    GET  /api/rooms/{id}/events?after=SEQ&limit=N                   -> 200 {roomId, lastSeq, events: [...]}
    GET  /healthz, /readyz, /version

Errors are `{"error": "..."}` with 400 (bad input), 401 (no or bad token), 403 (not yours), 404
(no such room or player), 409 (not now: wrong phase, dead, already moved, full, started), 503
(not ready, or MAX_ROOMS reached). A `roomId` query parameter is accepted on every path, so that a
router splitting traffic by `?roomId=` keeps a room on one version.

NATS (queue group `api-server`, so each request is answered by one replica): `werewolves.act`
takes a bot's move `{roomId, playerId, action, target?, text?}` (bots only: NATS itself is
authenticated by token, so it needs no JWT) and `werewolves.bots` `{roomId}` answers what the
room's bots know; replies are `{"ok": true, ...}` or `{"ok": false, "status", "error"}`. Each
event, once committed, is published on `rooms.<roomId>.events`.

Every replica also ends phases whose deadline (PHASE_DURATIONS) has passed. Config: MAX_ROOMS,
MAX_PLAYERS, PHASE_DURATIONS, plus those of `service.py`. Secrets: jwt-signing-key (and
jwt-signing-key.previous), database-url, redis-url, nats-url.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import psycopg
import redis.asyncio as aioredis
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from werewolves import tokens
from werewolves.clients import (
    ACT_SUBJECT,
    BOTS_SUBJECT,
    connect_nats,
    connect_redis,
    connect_with_retry,
    redis_ok,
    room_subject,
)
from werewolves.game import IllegalMove, Move
from werewolves.rooms import Refused, Rooms, Rules, parse_durations
from werewolves.secrets import SecretsDir, SigningKeys
from werewolves.service import ConfigError, Endpoints, Settings, exit_config, load_or_exit, run
from werewolves.store import Database, Event, NoSuchRoom
from werewolves.web import HttpError, Request, Response, Server, json_response

SERVICE = "api-server"
DEFAULT_PORT = 8080
QUEUE = "api-server"
TOKEN_LIFETIME = 6 * 3600
MEMBERS_TTL = 6 * 3600
_ROOM_PATH = re.compile(r"^/api/rooms/(?P<room>[A-Za-z0-9-]{1,64})(?:/(?P<verb>join|start|act|events))?/?$")

log = logging.getLogger("werewolves.api")


def _name(data: dict[str, Any], default: str) -> str:
    name = data.get("name", default)
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 40 or not name.isprintable():
        raise HttpError(400, "name must be 1 to 40 printable characters")
    return name.strip()


def _query_int(request: Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{key} must be a whole number (got {raw!r})") from None
    if not low <= value <= high:
        raise HttpError(400, f"{key} must be {low} to {high} (got {value})")
    return value


def _nats_request(msg: Msg) -> dict[str, Any]:
    data = json.loads(msg.data)
    if not isinstance(data, dict) or not isinstance(data.get("roomId"), str):
        raise HttpError(400, "expected a JSON object with roomId")
    return data


def _move(player_id: str, data: dict[str, Any]) -> Move:
    action, target, text = data.get("action"), data.get("target"), data.get("text")
    if not isinstance(action, str):
        raise HttpError(400, 'action is required: "kill" (night), "speak" (day) or "vote" (vote)')
    if target is not None and not isinstance(target, str):
        raise HttpError(400, "target must be a player id such as p3")
    if text is not None and not isinstance(text, str):
        raise HttpError(400, "text must be a string")
    return Move(player_id, action, target, text)


class ApiServer:
    def __init__(self, settings: Settings, secrets: SecretsDir, rules: Rules) -> None:
        self.settings = settings
        self.secrets = secrets
        self.keys = SigningKeys(secrets)
        self.rules = rules
        self.db: Database | None = None
        self.rooms: Rooms | None = None
        self.nats: Nats | None = None
        self.redis: aioredis.Redis | None = None
        self.endpoints = Endpoints(settings, self.ready, self.handle)
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------------

    async def ready(self) -> bool:
        return (self.db is not None and self.nats is not None and self.nats.is_connected
                and await redis_ok(self.redis) and await self.db.ping())

    async def serve(self, stop: asyncio.Event) -> None:
        self.keys.signing()  # fail now, not at the first join, when the key is missing
        database_url = self.secrets.read("database-url")
        redis_url = self.secrets.read("redis-url")
        nats_url = self.secrets.read("nats-url")
        http = Server(self.endpoints, "0.0.0.0", self.settings.port)  # noqa: S104 - a container listens on all interfaces
        await http.start()
        log.info("listening on port %d", http.port)
        timer: asyncio.Task[None] | None = None
        subscriptions: list[Subscription] = []
        try:
            db = Database(database_url)
            if await connect_with_retry("PostgreSQL", lambda: self._open(db), stop) is not None:
                self.db, self.rooms = db, Rooms(db, self.rules)
            self.redis = await connect_with_retry("Redis", lambda: connect_redis(redis_url), stop)
            self.nats = await connect_with_retry("NATS", lambda: connect_nats(nats_url, self.settings.instance), stop)
            if self.nats is not None and self.rooms is not None:
                subscriptions = [
                    await self.nats.subscribe(ACT_SUBJECT, queue=QUEUE, cb=self._spawn(self._on_act)),
                    await self.nats.subscribe(BOTS_SUBJECT, queue=QUEUE, cb=self._spawn(self._on_bots))]
                timer = asyncio.create_task(self._phase_timer(self.rooms, stop))
                log.info("ready: PostgreSQL, Redis and NATS connected")
            await stop.wait()
        finally:
            log.info("stopping: finishing requests in flight")
            self.endpoints.draining = True
            await http.shutdown(grace=5.0)
            for subscription in subscriptions:  # take no more bot moves; those taken are answered below
                await subscription.unsubscribe()
            pending = {*self._tasks, *([timer] if timer is not None else [])}  # the timer ends as stop is set
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            if timer is not None:
                timer.cancel()
            if self.nats is not None:
                await self.nats.drain()  # flush the last events, then close
            if self.redis is not None:
                await self.redis.aclose()
            if self.db is not None:
                await self.db.close()

    async def _open(self, db: Database) -> Database:
        await db.open()
        return db

    def _spawn(self, handler: Callable[[Msg], Coroutine[Any, Any, None]]) -> Callable[[Msg], Awaitable[None]]:
        """A NATS callback that handles each message in a task of its own, so one slow
        transaction does not hold up the next message."""

        async def callback(msg: Msg) -> None:
            task = asyncio.create_task(handler(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return callback

    async def _phase_timer(self, rooms: Rooms, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                events = await rooms.expire()
            except (psycopg.Error, OSError) as error:
                log.warning("phase timer: database error (%s)", type(error).__name__)
                events = []
            if events:
                log.info("phase timer ended a phase in %d room(s)", len({e.room_id for e in events}))
                await self.publish(events)
            try:
                async with asyncio.timeout(0.5):
                    await stop.wait()
            except TimeoutError:
                pass

    async def publish(self, events: list[Event]) -> None:
        """Publish committed events; a failure only delays them for clients (they read the API)."""
        if self.nats is None:
            return
        try:
            for event in events:
                await self.nats.publish(room_subject(event.room_id), event.encode())
        except NatsError as error:  # the events are safe in PostgreSQL; live delivery is best effort
            log.warning("could not publish %d event(s) to NATS (%s)", len(events), type(error).__name__)

    # --- HTTP ------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        if self.rooms is None:
            raise HttpError(503, "not ready: still connecting to PostgreSQL, Redis and NATS")
        try:
            return await self._route(request, self.rooms)
        except NoSuchRoom as error:
            raise HttpError(404, f"no room {error}") from None
        except (Refused, IllegalMove) as error:
            raise HttpError(error.status, str(error)) from None
        except psycopg.OperationalError as error:
            log.warning("%s %s: database unavailable (%s)", request.method, request.path, type(error).__name__)
            raise HttpError(503, "database unavailable; try again") from None

    async def _route(self, request: Request, rooms: Rooms) -> Response:
        if request.path.rstrip("/") == "/api/rooms":
            if request.method != "POST":
                raise HttpError(405, "use POST /api/rooms to create a room")
            created, events = await rooms.create(_name(request.json(), "room"))
            await self.publish(events)
            log.info("room %s created", created["roomId"])
            return json_response(201, created)
        match = _ROOM_PATH.match(request.path)
        if match is None:
            raise HttpError(404, f"no such path: {request.path}")
        room_id, verb = match["room"], match["verb"] or ""
        expected = "GET" if verb in ("", "events") else "POST"
        if request.method != expected:
            raise HttpError(405, f"use {expected} {request.path}")
        if verb == "":
            player = self._player(request, room_id) if request.bearer() else None
            view = await rooms.view(room_id, player)
            view["members"], view["online"] = await self._counts(room_id)
            return json_response(200, view)
        if verb == "events":
            after = _query_int(request, "after", 0, 0, 2**31 - 1)
            limit = _query_int(request, "limit", 1000, 1, 1000)
            return json_response(200, await rooms.events(room_id, after, limit))
        if verb == "join":
            joined, events = await rooms.join(room_id, _name(request.json(), "player"))
            await self.publish(events)
            await self._remember(room_id, joined.id)
            now = int(time.time())
            token = tokens.sign({"sub": joined.id, "room": room_id, "name": joined.name, "iat": now,
                                 "exp": now + TOKEN_LIFETIME}, self.keys.signing())
            log.info("room %s: %s joined", room_id, joined.id)
            return json_response(201, {"roomId": room_id, "playerId": joined.id, "seat": joined.seat,
                                       "token": token, "seq": events[-1].seq})
        player = self._player(request, room_id)
        body = request.json()
        if verb == "start":
            size = body.get("size")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
                raise HttpError(400, "size must be a whole number of players")
            started, events = await rooms.start(room_id, player, size)
            await self.publish(events)
            log.info("room %s: game started with %d players", room_id, started["players"])
            return json_response(200, started)
        result, events = await rooms.move(room_id, _move(player, body))
        await self.publish(events)
        return json_response(200, result)

    def _player(self, request: Request, room_id: str) -> str:
        """The player id of the request's token, which must be valid and for this room."""
        token = request.bearer()
        if token is None:
            raise HttpError(401, "send the token from join as Authorization: Bearer <token>")
        try:
            claims = tokens.verify(token, self.keys.accepted())
        except tokens.InvalidToken as error:
            raise HttpError(401, f"invalid token: {error}") from None
        if claims.get("room") != room_id or not isinstance(claims.get("sub"), str):
            raise HttpError(403, f"this token is for another room than {room_id}")
        return str(claims["sub"])

    async def _remember(self, room_id: str, player_id: str) -> None:
        if self.redis is None:
            return
        key = f"werewolves:room:{room_id}:members"
        try:
            await self.redis.sadd(key, player_id)
            await self.redis.expire(key, MEMBERS_TTL)
        except (aioredis.RedisError, OSError) as error:
            log.warning("room %s: could not count the member in Redis (%s)", room_id, type(error).__name__)

    async def _counts(self, room_id: str) -> tuple[int | None, int | None]:
        """Members (joined through any replica) and players online (connected to a gateway)."""
        if self.redis is None:
            return None, None
        try:
            members = await self.redis.scard(f"werewolves:room:{room_id}:members")
            online = await self.redis.scard(f"werewolves:room:{room_id}:online")
        except (aioredis.RedisError, OSError):
            return None, None
        return int(members), int(online)

    # --- NATS ------------------------------------------------------------------------------------

    async def _reply(self, msg: Msg, work: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        try:
            answer: dict[str, Any] = {"ok": True, **await work(_nats_request(msg))}
        except NoSuchRoom as error:
            answer = {"ok": False, "status": 404, "error": f"no room {error}"}
        except (Refused, IllegalMove, HttpError) as error:
            answer = {"ok": False, "status": error.status, "error": str(error)}
        except ValueError:
            answer = {"ok": False, "status": 400, "error": "the request is not JSON"}
        except psycopg.Error as error:
            log.warning("%s: database error (%s)", msg.subject, type(error).__name__)
            answer = {"ok": False, "status": 503, "error": "database unavailable; try again"}
        if msg.reply:
            try:
                await msg.respond(json.dumps(answer, separators=(",", ":")).encode())
            except NatsError as error:  # the requester may have gone; nothing else to do
                log.warning("%s: could not reply (%s)", msg.subject, type(error).__name__)

    async def _on_act(self, msg: Msg) -> None:
        async def act(data: dict[str, Any]) -> dict[str, Any]:
            if self.rooms is None:
                raise HttpError(503, "not ready")
            player = data.get("playerId")
            if not isinstance(player, str):
                raise HttpError(400, "playerId is required")
            result, events = await self.rooms.move(data["roomId"], _move(player, data), bots_only=True)
            await self.publish(events)
            return result

        await self._reply(msg, act)

    async def _on_bots(self, msg: Msg) -> None:
        async def bots(data: dict[str, Any]) -> dict[str, Any]:
            if self.rooms is None:
                raise HttpError(503, "not ready")
            return await self.rooms.bots(data["roomId"])

        await self._reply(msg, bots)


def main() -> None:
    settings = load_or_exit(SERVICE, DEFAULT_PORT)
    try:
        rules = Rules(max_rooms=settings.integer("MAX_ROOMS", 5000, minimum=1),
                      max_players=settings.integer("MAX_PLAYERS", 12, minimum=4),
                      durations=parse_durations(settings.environ.get("PHASE_DURATIONS", "")))
    except (ConfigError, ValueError) as error:
        exit_config(SERVICE, error)
    server = ApiServer(settings, SecretsDir(settings.secrets_dir), rules)

    run(settings, server.serve)


if __name__ == "__main__":
    main()
