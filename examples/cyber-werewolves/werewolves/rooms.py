"""The game operations of the api-server: create a room, join, start, move, expire a phase, and
the views of a room. Each runs in one transaction with the room's row locked, applies the rules
of `game.py`, records every event in `events`, and returns the events for the caller to publish
once the transaction has committed.

Events (type: payload):

    room-created    {name}
    player-joined   {player, name, seat, kind}
    game-started    {players: [{id, name, seat, kind}], werewolves: n}
    phase-changed   {phase, round, deadline}
    player-killed   {player, name, role, round}                 (at the end of a night)
    player-spoke    {player, text}
    vote-cast       {voter, target}
    player-lynched  {player, name, role, votes: {id: n}}        (or no-lynch {votes})
    game-over       {winner, rounds, roles: {id: role}}

Night moves make no event until the night ends, so no event names a werewolf while it lives.

Called by `api.py` (HTTP and NATS handlers, the phase timer). It must not publish or talk HTTP.
"""

from __future__ import annotations

import random
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from werewolves import game
from werewolves.game import Move, Player
from werewolves.store import Database, Event, RoomTx

DEFAULT_DURATIONS = {"night": 60.0, "day": 120.0, "vote": 30.0}
DEFAULT_SIZE = 6


class Refused(Exception):
    """The operation is not possible now; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def parse_durations(text: str) -> dict[str, float]:
    """`night=60,day=120,vote=30` (seconds; an `s` suffix is allowed) -> seconds per phase."""
    durations = dict(DEFAULT_DURATIONS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in durations:
            raise ValueError(f"PHASE_DURATIONS: expected phase=seconds for night, day and vote (got {part!r})")
        try:
            seconds = float(value.strip().removesuffix("s"))
        except ValueError:
            raise ValueError(f"PHASE_DURATIONS: {name.strip()} must be a number of seconds (got {value!r})") from None
        if seconds <= 0:
            raise ValueError(f"PHASE_DURATIONS: {name.strip()} must be more than 0 seconds")
        durations[name.strip()] = seconds
    return durations


@dataclass(frozen=True)
class Rules:
    """The limits and timings of this deployment (MAX_ROOMS, MAX_PLAYERS, PHASE_DURATIONS)."""

    max_rooms: int
    max_players: int
    durations: Mapping[str, float]


class Rooms:
    def __init__(self, db: Database, rules: Rules, rng: random.Random | None = None) -> None:
        self.db = db
        self.rules = rules
        self._rng = rng or random.Random()  # noqa: S311 - a game, not security

    async def create(self, name: str) -> tuple[dict[str, Any], list[Event]]:
        async with self.db.transaction() as conn:
            if await self.db.count_open_rooms(conn) >= self.rules.max_rooms:
                raise Refused(f"the server holds its maximum of {self.rules.max_rooms} open rooms (MAX_ROOMS); "
                              "try again later", status=503)
            room = await RoomTx.create(self.db, conn, f"r-{_random.token_hex(5)}", name)
            await room.emit("room-created", {"name": name})
        return {"roomId": room.id, "name": name, "seq": room.room["lastSeq"]}, room.events

    async def join(self, room_id: str, name: str, kind: str = "human") -> tuple[Player, list[Event]]:
        async with self.db.transaction() as conn:
            room = await RoomTx.lock(self.db, conn, room_id)
            player = await self._add(room, await room.players(), name, kind)
        return player, room.events

    async def _add(self, room: RoomTx, players: list[Player], name: str, kind: str) -> Player:
        if room.room["status"] != "lobby":
            raise Refused(f"room {room.id} has started; join another room")
        if len(players) >= self.rules.max_players:
            raise Refused(f"room {room.id} is full ({self.rules.max_players} players, MAX_PLAYERS)")
        seat = max((p.seat for p in players), default=0) + 1
        player = Player(f"p{seat}", seat, name, kind, None, True)
        await room.add_player(player.id, seat, name, kind)
        await room.emit("player-joined", {"player": player.id, "name": name, "seat": seat, "kind": kind})
        players.append(player)
        return player

    async def start(self, room_id: str, player_id: str, size: int | None) -> tuple[dict[str, Any], list[Event]]:
        """Fill the room with bots up to `size` players, deal the roles, and begin the first night."""
        async with self.db.transaction() as conn:
            room = await RoomTx.lock(self.db, conn, room_id)
            players = await room.players()
            if player_id not in {p.id for p in players}:
                raise Refused(f"{player_id} is not in room {room_id}", status=403)
            if room.room["status"] != "lobby":
                raise Refused(f"room {room_id} has already started")
            want = max(size or DEFAULT_SIZE, len(players))
            if not game.MIN_PLAYERS <= want <= self.rules.max_players:
                raise Refused(f"size must be {game.MIN_PLAYERS} to {self.rules.max_players} (got {want})", status=400)
            while len(players) < want:
                await self._add(room, players, f"bot-{len(players) + 1}", "bot")
            roles = game.deal_roles([p.id for p in players], self._rng)
            await room.set_roles(roles)
            wolves = sum(1 for role in roles.values() if role == game.WEREWOLF)
            await room.emit("game-started", {
                "players": [{"id": p.id, "name": p.name, "seat": p.seat, "kind": p.kind} for p in players],
                "werewolves": wolves})
            await self._enter(room, "night", 1)
        return {"roomId": room_id, "players": len(players), "werewolves": wolves, "phase": "night", "round": 1}, \
            room.events

    async def _enter(self, room: RoomTx, phase: str, round_: int) -> None:
        seconds = self.rules.durations[phase]
        await room.enter_phase(phase, round_, seconds)
        await room.emit("phase-changed", {"phase": phase, "round": round_, "deadline": room.room["deadline"]})

    async def move(self, room_id: str, move: Move, *, bots_only: bool = False) -> tuple[dict[str, Any], list[Event]]:
        """Apply one player's move; end the phase when everyone who must act has acted."""
        async with self.db.transaction() as conn:
            room = await RoomTx.lock(self.db, conn, room_id)
            players = {p.id: p for p in await room.players()}
            actor = players.get(move.player)
            if actor is None:
                raise Refused(f"no player {move.player} in room {room_id}", status=404)
            if bots_only and actor.kind != "bot":
                raise Refused(f"{move.player} is not a bot: a human moves with its token over HTTP", status=403)
            phase = str(room.room["phase"])
            done = await room.moves()
            game.check_move(phase, actor, move, players, (m.player for m in done))
            await room.add_move(move)
            if move.action == "speak":
                await room.emit("player-spoke", {"player": actor.id, "text": move.text or ""})
            elif move.action == "vote":
                await room.emit("vote-cast", {"voter": actor.id, "target": move.target})
            done.append(move)
            ended = game.must_act(phase, players.values()) <= {m.player for m in done}
            if ended:
                await self._end_phase(room, list(players.values()), done)
        return {"accepted": True, "phase": phase, "round": room.room["round"], "phaseEnded": ended}, room.events

    async def _end_phase(self, room: RoomTx, players: list[Player], moves: list[Move]) -> None:
        phase, round_ = str(room.room["phase"]), int(room.room["round"])
        by_id = {p.id: p for p in players}
        dead: str | None = None
        if phase == "night":
            dead = game.night_victim(moves)
            if dead is not None:
                victim = by_id[dead]
                await room.emit("player-killed", {"player": dead, "name": victim.name, "role": victim.role,
                                                  "round": round_})
        elif phase == "vote":
            dead, votes = game.lynch(moves)
            if dead is None:
                await room.emit("no-lynch", {"votes": votes})
            else:
                victim = by_id[dead]
                await room.emit("player-lynched", {"player": dead, "name": victim.name, "role": victim.role,
                                                   "votes": votes})
        if dead is not None:
            await room.kill(dead)
            by_id[dead] = replace(by_id[dead], alive=False)
        won = game.winner(by_id.values())
        if won is not None:
            await room.finish(won)
            await room.emit("game-over", {"winner": won, "rounds": round_,
                                          "roles": {p.id: p.role for p in by_id.values()}})
            return
        following = game.next_phase(phase)
        await self._enter(room, following, round_ + 1 if following == "night" else round_)

    async def expire(self) -> list[Event]:
        """End every running phase whose deadline has passed, with the moves made by then."""
        async with self.db.connection() as conn:
            due = await self.db.expired_rooms(conn)
        events: list[Event] = []
        for room_id in due:
            async with self.db.transaction() as conn:
                room = await RoomTx.lock(self.db, conn, room_id)
                if room.room["status"] != "running" or not await room.overdue():
                    continue  # another replica ended it first
                await self._end_phase(room, await room.players(), await room.moves())
            events.extend(room.events)
        return events

    async def view(self, room_id: str, player_id: str | None) -> dict[str, Any]:
        """The public state of a room; with `player_id`, also what that player knows (`you`)."""
        async with self.db.snapshot() as conn:
            room = await self.db.room(conn, room_id)
            players = await self.db.players(conn, room_id)
            moves = await self.db.moves(conn, room_id, int(room["round"]), str(room["phase"]))
        over = room["status"] == "over"
        waiting = game.must_act(str(room["phase"]), players) - {m.player for m in moves}
        view: dict[str, Any] = {
            "roomId": room["id"], "name": room["name"], "status": room["status"], "phase": room["phase"],
            "round": room["round"], "deadline": room["deadline"], "winner": room["winner"],
            "lastSeq": room["lastSeq"], "waitingFor": len(waiting),
            "players": [{"id": p.id, "name": p.name, "seat": p.seat, "kind": p.kind, "alive": p.alive,
                         **({"role": p.role} if over or not p.alive else {})} for p in players],
        }
        me = next((p for p in players if p.id == player_id), None)
        if me is not None:
            view["you"] = {"id": me.id, "name": me.name, "role": me.role, "alive": me.alive,
                           "mustAct": me.id in waiting,
                           "pack": [p.id for p in players if me.role == game.WEREWOLF and p.role == game.WEREWOLF]}
        return view

    async def bots(self, room_id: str) -> dict[str, Any]:
        """What the bots of a room know, for the agent-runtime: the room's view plus each bot's
        role, its pack, and whether the current phase waits for it."""
        public = await self.view(room_id, None)
        async with self.db.snapshot() as conn:
            players = await self.db.players(conn, room_id)
            moves = await self.db.moves(conn, room_id, int(public["round"]), str(public["phase"]))
        waiting = game.must_act(str(public["phase"]), players) - {m.player for m in moves}
        wolves = [p.id for p in players if p.role == game.WEREWOLF]
        public["bots"] = [{"id": p.id, "role": p.role, "alive": p.alive, "mustAct": p.id in waiting,
                           "pack": wolves if p.role == game.WEREWOLF else []}
                          for p in players if p.kind == "bot"]
        return public

    async def events(self, room_id: str, after: int, limit: int) -> dict[str, Any]:
        async with self.db.snapshot() as conn:
            room = await self.db.room(conn, room_id)
            events = await self.db.events(conn, room_id, after, limit)
        return {"roomId": room_id, "lastSeq": room["lastSeq"], "events": [e.to_json() for e in events]}

