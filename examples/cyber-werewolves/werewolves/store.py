"""PostgreSQL: the schema, a small connection pool, and every query of the api-server.

All game state lives here, so any api-server replica can serve any request: an operation on a
room opens a transaction and locks the room's row (`SELECT ... FOR UPDATE`) before it reads
anything else, which serialises the moves of one room across replicas and never deadlocks (one
lock, always taken first). Events get a per-room sequence number (`rooms.last_seq`) in the same
transaction, so a room's events are numbered 1, 2, 3... without gaps.

Tables (created at start when missing, under an advisory lock so replicas starting together do
not race): `rooms`, `players`, `moves` (this game's moves, one per player and phase) and
`events` (id bigserial, room_id, seq, type, payload jsonb, created_at), the table the
`events-export` backup of shipmate.yaml exports.

Called by `rooms.py` (game operations) and `api.py` (readiness). It knows the rules only as
`game.Player` and `game.Move` values; it must not decide what a move does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from werewolves.game import Move, Player

Connection = psycopg.AsyncConnection[DictRow]

SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    status          text NOT NULL DEFAULT 'lobby',    -- lobby | running | over
    phase           text NOT NULL DEFAULT 'lobby',    -- lobby | night | day | vote | over
    round           integer NOT NULL DEFAULT 0,
    phase_deadline  timestamptz,
    winner          text,
    last_seq        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rooms_running_deadline ON rooms (phase_deadline) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS players (
    room_id  text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    id       text NOT NULL,
    seat     integer NOT NULL,
    name     text NOT NULL,
    kind     text NOT NULL,                            -- human | bot
    role     text,                                     -- werewolf | villager, once dealt
    alive    boolean NOT NULL DEFAULT true,
    PRIMARY KEY (room_id, id),
    UNIQUE (room_id, seat)
);
CREATE TABLE IF NOT EXISTS moves (
    room_id     text NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    round       integer NOT NULL,
    phase       text NOT NULL,
    player_id   text NOT NULL,
    action      text NOT NULL,
    target      text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (room_id, round, phase, player_id)
);
CREATE TABLE IF NOT EXISTS events (
    id          bigserial PRIMARY KEY,
    room_id     text NOT NULL,
    seq         integer NOT NULL,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (room_id, seq)
);
"""
_SCHEMA_LOCK = 0x776F6C66  # any constant; pg_advisory_xact_lock serialises schema creation


class NoSuchRoom(Exception):
    """No room has this id."""


@dataclass(frozen=True)
class Event:
    """One row of `events`, as published on NATS and served by the API."""

    room_id: str
    seq: int
    type: str
    payload: dict[str, Any]
    at: str

    def to_json(self) -> dict[str, Any]:
        return {"roomId": self.room_id, "seq": self.seq, "type": self.type, "payload": self.payload, "at": self.at}

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _event(row: DictRow) -> Event:
    return Event(row["room_id"], row["seq"], row["type"], row["payload"], _iso(row["created_at"]) or "")


async def _one(cur: psycopg.AsyncCursor[DictRow]) -> DictRow:
    """The row a RETURNING or an aggregate always gives."""
    row = await cur.fetchone()
    if row is None:
        raise psycopg.DataError("the statement returned no row")
    return row


def _player(row: DictRow) -> Player:
    return Player(row["id"], row["seat"], row["name"], row["kind"], row["role"], row["alive"])


class Database:
    """A pool of at most `size` connections, opened on first use and replaced when broken."""

    def __init__(self, url: str, size: int = 4) -> None:
        self._url = url
        self._slots: asyncio.Queue[Connection | None] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(None)

    async def open(self) -> None:
        """Connect once and create the schema if it is missing."""
        async with self.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            await conn.execute(SCHEMA)

    async def _connect(self) -> Connection:
        return await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=5,
                                                     row_factory=dict_row, application_name="werewolves")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        conn = await self._slots.get()
        try:
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    await conn.close()
                conn = None
                conn = await self._connect()
            yield conn
        finally:
            if conn is not None and (conn.closed or conn.broken):
                await conn.close()
                conn = None
            self._slots.put_nowait(conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        """A read-only transaction that sees one snapshot of the database."""
        async with self.transaction() as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(1.0), self.connection() as conn:
                await conn.execute("SELECT 1")
        except (TimeoutError, psycopg.Error, OSError):
            return False
        return True

    async def close(self) -> None:
        while not self._slots.empty():
            conn = self._slots.get_nowait()
            if conn is not None:
                await conn.close()

    # --- reads outside a room's lock ----------------------------------------------------------

    async def count_open_rooms(self, conn: Connection) -> int:
        cur = await conn.execute("SELECT count(*) AS n FROM rooms WHERE status <> 'over' "
                                 "AND created_at > now() - interval '6 hours'")
        return int((await _one(cur))["n"])

    async def expired_rooms(self, conn: Connection, limit: int = 20) -> list[str]:
        cur = await conn.execute("SELECT id FROM rooms WHERE status = 'running' AND phase_deadline < now() "
                                 "ORDER BY phase_deadline LIMIT %s", (limit,))
        return [row["id"] for row in await cur.fetchall()]

    async def events(self, conn: Connection, room_id: str, after: int, limit: int) -> list[Event]:
        cur = await conn.execute("SELECT room_id, seq, type, payload, created_at FROM events "
                                 "WHERE room_id = %s AND seq > %s ORDER BY seq LIMIT %s", (room_id, after, limit))
        return [_event(row) for row in await cur.fetchall()]

    async def room(self, conn: Connection, room_id: str) -> dict[str, Any]:
        cur = await conn.execute("SELECT * FROM rooms WHERE id = %s", (room_id,))
        row = await cur.fetchone()
        if row is None:
            raise NoSuchRoom(room_id)
        return _room(row)

    async def players(self, conn: Connection, room_id: str) -> list[Player]:
        cur = await conn.execute("SELECT * FROM players WHERE room_id = %s ORDER BY seat", (room_id,))
        return [_player(row) for row in await cur.fetchall()]

    async def moves(self, conn: Connection, room_id: str, round_: int, phase: str) -> list[Move]:
        cur = await conn.execute("SELECT player_id, action, target FROM moves WHERE room_id = %s AND round = %s "
                                 "AND phase = %s ORDER BY created_at, player_id", (room_id, round_, phase))
        return [Move(row["player_id"], row["action"], row["target"]) for row in await cur.fetchall()]


def _room(row: DictRow) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "status": row["status"], "phase": row["phase"],
            "round": row["round"], "deadline": _iso(row["phase_deadline"]), "winner": row["winner"],
            "lastSeq": row["last_seq"], "createdAt": _iso(row["created_at"])}


class RoomTx:
    """One room inside a transaction, its row locked until the transaction ends. Events emitted
    here are numbered in order; `events` lists them for publishing once the transaction commits."""

    def __init__(self, db: Database, conn: Connection, room: dict[str, Any]) -> None:
        self.db = db
        self.conn = conn
        self.room = room
        self.events: list[Event] = []

    @classmethod
    async def create(cls, db: Database, conn: Connection, room_id: str, name: str) -> RoomTx:
        cur = await conn.execute("INSERT INTO rooms (id, name) VALUES (%s, %s) RETURNING *", (room_id, name))
        return cls(db, conn, _room(await _one(cur)))

    @classmethod
    async def lock(cls, db: Database, conn: Connection, room_id: str) -> RoomTx:
        cur = await conn.execute("SELECT * FROM rooms WHERE id = %s FOR UPDATE", (room_id,))
        row = await cur.fetchone()
        if row is None:
            raise NoSuchRoom(room_id)
        return cls(db, conn, _room(row))

    @property
    def id(self) -> str:
        return str(self.room["id"])

    async def emit(self, type_: str, payload: dict[str, Any]) -> Event:
        seq = int(self.room["lastSeq"]) + 1
        cur = await self.conn.execute(
            "INSERT INTO events (room_id, seq, type, payload) VALUES (%s, %s, %s, %s) "
            "RETURNING room_id, seq, type, payload, created_at", (self.id, seq, type_, Jsonb(payload)))
        row = await _one(cur)
        await self.conn.execute("UPDATE rooms SET last_seq = %s WHERE id = %s", (seq, self.id))
        self.room["lastSeq"] = seq
        event = _event(row)
        self.events.append(event)
        return event

    async def players(self) -> list[Player]:
        return await self.db.players(self.conn, self.id)

    async def overdue(self) -> bool:
        """True when the current phase's deadline has passed."""
        cur = await self.conn.execute("SELECT phase_deadline < now() AS due FROM rooms WHERE id = %s", (self.id,))
        return bool((await _one(cur))["due"])

    async def moves(self) -> list[Move]:
        return await self.db.moves(self.conn, self.id, int(self.room["round"]), str(self.room["phase"]))

    async def add_player(self, player_id: str, seat: int, name: str, kind: str) -> None:
        await self.conn.execute("INSERT INTO players (room_id, id, seat, name, kind) VALUES (%s, %s, %s, %s, %s)",
                                (self.id, player_id, seat, name, kind))

    async def set_roles(self, roles: dict[str, str]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany("UPDATE players SET role = %s WHERE room_id = %s AND id = %s",
                                  [(role, self.id, pid) for pid, role in roles.items()])

    async def kill(self, player_id: str) -> None:
        await self.conn.execute("UPDATE players SET alive = false WHERE room_id = %s AND id = %s",
                                (self.id, player_id))

    async def add_move(self, move: Move) -> None:
        await self.conn.execute(
            "INSERT INTO moves (room_id, round, phase, player_id, action, target) VALUES (%s, %s, %s, %s, %s, %s)",
            (self.id, self.room["round"], self.room["phase"], move.player, move.action, move.target))

    async def enter_phase(self, phase: str, round_: int, seconds: float | None) -> None:
        """Move to `phase` of `round_`; its deadline is `seconds` from now (None: no deadline)."""
        status = "over" if phase == "over" else "running"
        cur = await self.conn.execute(
            "UPDATE rooms SET phase = %s, round = %s, status = %s, "
            "phase_deadline = CASE WHEN %s::float8 IS NULL THEN NULL "
            "ELSE now() + make_interval(secs => %s::float8) END "
            "WHERE id = %s RETURNING *", (phase, round_, status, seconds, seconds, self.id))
        self.room = _room(await _one(cur)) | {"lastSeq": self.room["lastSeq"]}

    async def finish(self, winner: str) -> None:
        await self.enter_phase("over", int(self.room["round"]), None)
        await self.conn.execute("UPDATE rooms SET winner = %s WHERE id = %s", (winner, self.id))
        self.room["winner"] = winner
