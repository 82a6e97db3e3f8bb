"""agent-runtime: plays the bots' moves.

It listens to `rooms.*.events` in the NATS queue group `agent-runtime` (with several replicas,
each event reaches one of them). On each `phase-changed` it asks the api-server what the room's
bots know (`werewolves.bots`), picks each waiting bot's move with `game.choose_move`, and sends
the moves one by one (`werewolves.act`), all by NATS request/reply: no service discovery and no
database. A move refused because the phase has moved on is normal and logged at debug level;
when no agent answers at all, the api-server's phase deadline moves the game on.

Bots play by simple rules; the `agno-openai-api-key` secret is only checked for presence and
nothing leaves this machine. FAULT_RATE here is the share of phases whose bot moves are skipped.
HTTP on PORT serves only /healthz, /readyz (NATS connected) and /version. Config:
AGENT_CONCURRENCY (rooms played at once), plus those of `service.py`. Secrets: nats-url.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from werewolves import game
from werewolves.clients import ACT_SUBJECT, BOTS_SUBJECT, connect_nats, connect_with_retry
from werewolves.secrets import SecretsDir
from werewolves.service import ConfigError, Endpoints, Settings, exit_config, load_or_exit, run
from werewolves.web import Server

SERVICE = "agent-runtime"
DEFAULT_PORT = 9090
EVENTS = "rooms.*.events"
QUEUE = "agent-runtime"
REQUEST_TIMEOUT = 5.0

log = logging.getLogger("werewolves.agents")


class Agents:
    def __init__(self, settings: Settings, secrets: SecretsDir, concurrency: int) -> None:
        self.settings = settings
        self.secrets = secrets
        self.nats: Nats | None = None
        self.endpoints = Endpoints(settings, self.ready)
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def ready(self) -> bool:
        return self.nats is not None and self.nats.is_connected

    async def serve(self, stop: asyncio.Event) -> None:
        nats_url = self.secrets.read("nats-url")
        if self.secrets.read_optional("agno-openai-api-key") is None:
            log.info("no language model key: bots play by rules")
        else:
            log.info("a language model key is present but unused: bots play by rules")
        http = Server(self.endpoints, "0.0.0.0", self.settings.port)  # noqa: S104 - all interfaces
        await http.start()
        log.info("listening on port %d", http.port)
        subscription: Subscription | None = None
        try:
            self.nats = await connect_with_retry("NATS", lambda: connect_nats(nats_url, self.settings.instance), stop)
            if self.nats is not None:
                subscription = await self.nats.subscribe(EVENTS, queue=QUEUE, cb=self._on_event)
                log.info("ready: NATS connected, playing bots")
            await stop.wait()
        finally:
            log.info("stopping: finishing %d room(s) in play", len(self._tasks))
            self.endpoints.draining = True
            await http.shutdown(grace=2.0)
            if subscription is not None:  # events go to the other replicas from now on
                await subscription.unsubscribe()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=5.0)
            if self.nats is not None:
                await self.nats.drain()

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = json.loads(msg.data)
            kind, room = event["type"], str(event["roomId"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed event on %s", msg.subject)
            return
        if kind != "phase-changed":
            return
        payload = event.get("payload") or {}
        task = asyncio.create_task(self._play(room, str(payload.get("phase")), int(payload.get("round", 0))))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.nats is None:
            raise NatsError("not connected")
        reply = await self.nats.request(subject, json.dumps(body).encode(), timeout=REQUEST_TIMEOUT)
        answer = json.loads(reply.data)
        return answer if isinstance(answer, dict) else {"ok": False, "error": "not a JSON object"}

    async def _play(self, room: str, phase: str, round_: int) -> None:
        """Every waiting bot of `room` makes its move for this phase."""
        async with self._slots:
            if self.endpoints.fault():
                log.warning("room %s: injected fault (FAULT_RATE): bots skip %s of round %d", room, phase, round_)
                return
            try:
                view = await self._request(BOTS_SUBJECT, {"roomId": room})
                if not view.get("ok") or view.get("phase") != phase or view.get("round") != round_:
                    return  # the game has moved on (or ended) since the event
                moved = 0
                for bot in view["bots"]:
                    if bot["mustAct"]:
                        moved += await self._move(room, phase, round_, view, bot)
                if moved:
                    log.info("room %s: %d bot move(s) at %s of round %d", room, moved, phase, round_)
            except (NatsError, TimeoutError) as error:
                log.warning("room %s: no answer from the api-server (%s); the phase deadline will move on",
                            room, type(error).__name__)

    async def _move(self, room: str, phase: str, round_: int, view: dict[str, Any], bot: dict[str, Any]) -> int:
        players = [game.Player(p["id"], p["seat"], p["name"], p["kind"], p.get("role"), p["alive"])
                   for p in view["players"]]
        me = next(p for p in players if p.id == bot["id"])
        me = game.Player(me.id, me.seat, me.name, me.kind, bot["role"], me.alive)
        # Wolves of one pack share the night's seed, so they pick the same victim.
        seed = f"{room}:{round_}:{phase}" + ("" if phase == "night" else f":{me.id}")
        move = game.choose_move(phase, me, players, bot["pack"], random.Random(seed))  # noqa: S311 - a game
        answer = await self._request(ACT_SUBJECT, {"roomId": room, "playerId": move.player, "action": move.action,
                                                   "target": move.target, "text": move.text})
        if not answer.get("ok"):
            log.debug("room %s: %s's move refused: %s", room, me.id, answer.get("error"))
            return 0
        return 1


def main() -> None:
    settings = load_or_exit(SERVICE, DEFAULT_PORT)
    try:
        concurrency = settings.integer("AGENT_CONCURRENCY", 8, minimum=1)
    except ConfigError as error:
        exit_config(SERVICE, error)
    agents = Agents(settings, SecretsDir(settings.secrets_dir), concurrency)

    run(settings, agents.serve)


if __name__ == "__main__":
    main()
