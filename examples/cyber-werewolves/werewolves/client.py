"""A scripted player: plays one game end to end through the API and the gateway, then checks it.

    python3 -m werewolves.client --api http://127.0.0.1:8080 --ws ws://127.0.0.1:8081 \\
        [--players 6] [--humans 1] [--timeout 60] [--json]

It creates a room, joins it as `--humans` human players, opens a WebSocket for the first one
(passing `after=` the last seq it has seen, so the gateway sends only what follows), waits for the
gateway's hello, starts the game with bots up to `--players`, and makes its humans' moves
whenever the rules wait for them. After `game-over` it reads the room's events back from
`GET /api/rooms/{id}/events` and checks that the events that came over the WebSocket are exactly
those after the `after` it passed: same seqs (no gap, no duplicate) and same types, up to
game-over. Then it prints a short summary (`--json`: one JSON object) and exits 0; on any failure
it prints one line `error: <reason>` on stderr and exits 1 (2 for bad arguments).

Used by `make demo`, by hand, and by the end-to-end tests. It talks to the services only through
their public HTTP and WebSocket interfaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from werewolves import game
from werewolves.web import HttpClient


class Failure(Exception):
    """Why the game or its check failed, in one line."""


@dataclass(frozen=True)
class Human:
    id: str
    name: str
    token: str


def _expect(status: int, body: Any, want: int, what: str) -> dict[str, Any]:
    if status != want or not isinstance(body, dict):
        detail = body.get("error") if isinstance(body, dict) else body
        raise Failure(f"{what}: HTTP {status} (expected {want}): {detail}")
    return body


class Game:
    def __init__(self, api: str, ws: str, players: int, humans: int, rng: random.Random) -> None:
        self.http = HttpClient(api)
        self.ws_base = ws.rstrip("/")
        self.size = players
        self.human_count = humans
        self.rng = rng
        self.room = ""
        self.humans: list[Human] = []
        self.moves = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _q(self) -> str:
        return f"?roomId={quote(self.room)}"  # lets a router keep the room on one version

    async def play(self, seconds: float) -> dict[str, Any]:
        """Play one game within `seconds`; the summary, or Failure."""
        began = time.monotonic()
        deadline = began + seconds
        try:
            created = _expect(*await self.http.request("POST", "/api/rooms", {"name": "scripted-game"}),
                              want=201, what="create a room")
            self.room = created["roomId"]
            after = created["seq"]
            for n in range(1, self.human_count + 1):
                joined = _expect(*await self.http.request("POST", f"/api/rooms/{self.room}/join{self._q()}",
                                                          {"name": f"human-{n}"}), want=201, what="join")
                self.humans.append(Human(joined["playerId"], f"human-{n}", joined["token"]))
                after = joined["seq"]
            url = (f"{self.ws_base}/ws?roomId={quote(self.room)}&token={quote(self.humans[0].token)}"
                   f"&after={after}")
            try:
                async with connect(url, open_timeout=10, close_timeout=2) as ws:
                    live = await self._live(ws, after, deadline)
            except InvalidStatus as error:
                raise Failure(f"the gateway refused the WebSocket: HTTP {error.response.status_code}") from None
            except (OSError, TimeoutError) as error:
                raise Failure(f"cannot open the WebSocket at {self.ws_base}: {error}") from None
            for task in list(self._tasks):
                await task
            return await self._check(after, live, time.monotonic() - began)
        finally:
            for task in self._tasks:
                task.cancel()
            await self.http.close()

    async def _live(self, ws: ClientConnection, after: int, deadline: float) -> list[dict[str, Any]]:
        """Start the game and collect the WebSocket's events until game-over; humans move meanwhile."""
        hello = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        if hello.get("type") != "hello":
            raise Failure(f"the gateway's first message is not a hello: {hello.get('type')!r}")
        start = await self.http.request("POST", f"/api/rooms/{self.room}/start{self._q()}", {"size": self.size},
                                        token=self.humans[0].token)
        _expect(*start, want=200, what="start the game")
        live: list[dict[str, Any]] = []
        over: dict[str, Any] | None = None
        while True:
            for task in [t for t in self._tasks if t.done()]:
                task.result()  # a human's move that failed ends the game here
            remaining = deadline - time.monotonic()
            if over is not None:
                # Events from several api-server replicas may arrive out of order: wait for the gaps.
                seqs = {e["seq"] for e in live}
                if seqs >= set(range(after + 1, over["seq"] + 1)):
                    return live
                remaining = min(remaining, 2.0)
            if remaining <= 0:
                if over is not None:
                    return live
                raise Failure(f"no game-over within the timeout (room {self.room}, {len(live)} live events)")
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=remaining)
            except TimeoutError:
                continue
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                raise Failure(f"the WebSocket closed before game-over (code {code})") from None
            event = json.loads(message)
            live.append(event)
            if event["type"] == "phase-changed":
                payload = event["payload"]
                for human in self.humans:
                    task = asyncio.create_task(self._move(human, payload["phase"], payload["round"]))
                    self._tasks.add(task)
            elif event["type"] == "game-over":
                over = event

    async def _move(self, human: Human, phase: str, round_: int) -> None:
        status, view = await self.http.request("GET", f"/api/rooms/{self.room}{self._q()}", token=human.token)
        view = _expect(status, view, 200, "read the room")
        you = view["you"]
        if view["phase"] != phase or view["round"] != round_ or not you["mustAct"]:
            return
        players = [game.Player(p["id"], p["seat"], p["name"], p["kind"], p.get("role"), p["alive"])
                   for p in view["players"]]
        me = game.Player(you["id"], 0, you["name"], "human", you["role"], you["alive"])
        move = game.choose_move(phase, me, players, you["pack"], self.rng)
        status, body = await self.http.request(
            "POST", f"/api/rooms/{self.room}/act{self._q()}",
            {"action": move.action, "target": move.target, "text": move.text}, token=human.token)
        if status == 409:
            return  # the phase ended (its deadline) between the read and the move
        _expect(status, body, 200, f"{human.name}'s {move.action}")
        self.moves += 1

    async def _check(self, after: int, live: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        status, body = await self.http.request("GET", f"/api/rooms/{self.room}/events{self._q()}&after=0&limit=1000")
        stored = _expect(status, body, 200, "read the events back")["events"]
        seqs = [e["seq"] for e in stored]
        if seqs != list(range(1, len(seqs) + 1)):
            raise Failure(f"the API's events are not numbered 1..{len(seqs)} without gaps: {seqs}")
        if not stored or stored[-1]["type"] != "game-over":
            raise Failure("the API's last event is not game-over")
        received = [e["seq"] for e in live]
        if len(received) != len(set(received)):
            dups = sorted({s for s in received if received.count(s) > 1})
            raise Failure(f"the WebSocket delivered seq {dups} more than once")
        expected = [(e["seq"], e["type"]) for e in stored if e["seq"] > after]
        got = sorted((e["seq"], e["type"]) for e in live)
        if got != expected:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            raise Failure(f"WebSocket events differ from the API's: missing {missing[:5]}, unexpected {extra[:5]}")
        over = stored[-1]["payload"]
        started = next(e for e in stored if e["type"] == "game-started")["payload"]
        return {"room": self.room, "players": len(started["players"]), "humans": len(self.humans),
                "bots": sum(1 for p in started["players"] if p["kind"] == "bot"),
                "werewolves": started["werewolves"], "rounds": over["rounds"], "winner": over["winner"],
                "events": len(stored), "websocketEvents": len(live), "after": after, "humanMoves": self.moves,
                "seconds": round(seconds, 2)}


def summary_text(s: dict[str, Any]) -> str:
    def n(count: int, word: str) -> str:
        return f"{count} {word}" if count == 1 else f"{count} {word}s"

    return (f"room {s['room']}: {n(s['players'], 'player')} ({n(s['humans'], 'human')}, {n(s['bots'], 'bot')}, "
            f"{n(s['werewolves'], 'werewolf').replace('werewolfs', 'werewolves')}), {n(s['rounds'], 'round')}, "
            f"winner: {s['winner']}\n"
            f"{s['events']} events; the {s['websocketEvents']} after seq {s['after']} came over the WebSocket "
            f"and match GET /api/rooms/{s['room']}/events; {s['seconds']}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m werewolves.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, help="the api-server's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--ws", required=True, help="the ws-gateway's base URL, e.g. ws://127.0.0.1:8081")
    parser.add_argument("--players", type=int, default=6, help="players in the game, bots included (default 6)")
    parser.add_argument("--humans", type=int, default=1, help="human players this client plays (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole game (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the humans' choices")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.humans <= args.players:
        parser.error("--humans must be between 1 and --players")
    game_ = Game(args.api, args.ws, args.players, args.humans, random.Random(args.seed))  # noqa: S311 - a game
    try:
        summary = asyncio.run(game_.play(args.timeout))
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)  # noqa: T201 - the CLI's one line
        return 1
    except (OSError, ValueError) as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(summary) if args.json else summary_text(summary))  # noqa: T201 - the CLI's output
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
