"""The rules of the game, pure: roles, who must act in each phase, which moves are legal, how a
phase resolves, who has won, and how a bot chooses its move. No I/O, no clock, no global random.

A game: players join a room in the lobby; `start` fills it with bots and deals the roles (one
werewolf per four players, at least one; everyone else a villager). Then rounds of three phases:

    night  every living werewolf picks a victim (`kill`); the most picked dies (a tie: the one
           picked first). No event names the wolves.
    day    every living player says something (`speak`).
    vote   every living player votes for someone else (`vote`); the most voted is lynched (a tie:
           nobody).

A phase ends as soon as everyone who must act has acted (or at its deadline, whatever was done by
then counts). The villagers win when no werewolf is alive; the werewolves win when they are at
least as many as the others.

Called by `store`-backed room operations in `api.py`, by `agents.py` (bot moves) and by
`client.py` (the scripted human's moves).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

WEREWOLF = "werewolf"
VILLAGER = "villager"
MIN_PLAYERS = 4
PHASES = ("night", "day", "vote")
ACTION_OF = {"night": "kill", "day": "speak", "vote": "vote"}
MAX_TEXT = 280
_LINES = ("I watched {name} closely last night.", "{name} is far too quiet.",
          "Trust me, I am a simple villager.", "Something about {name} smells of wolf.",
          "Let us not rush to judge {name}.")


class IllegalMove(Exception):
    """A move the rules do not allow now; `status` is the HTTP status that says why (403 or 409)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Player:
    id: str
    seat: int
    name: str
    kind: str  # "human" | "bot"
    role: str | None
    alive: bool


@dataclass(frozen=True)
class Move:
    """One player's action in the current phase, in the order they were made."""

    player: str
    action: str
    target: str | None = None
    text: str | None = None


def wolves_for(size: int) -> int:
    return max(1, size // 4)


def deal_roles(player_ids: Sequence[str], rng: random.Random) -> dict[str, str]:
    """Roles for a game of these players: `wolves_for(n)` werewolves at random, the rest villagers."""
    wolves = set(rng.sample(list(player_ids), wolves_for(len(player_ids))))
    return {pid: WEREWOLF if pid in wolves else VILLAGER for pid in player_ids}


def living(players: Iterable[Player]) -> list[Player]:
    return [p for p in players if p.alive]


def must_act(phase: str, players: Iterable[Player]) -> set[str]:
    """The ids of the players whose move the phase waits for."""
    if phase == "night":
        return {p.id for p in players if p.alive and p.role == WEREWOLF}
    if phase in ("day", "vote"):
        return {p.id for p in players if p.alive}
    return set()


def check_move(phase: str, actor: Player, move: Move, players: Mapping[str, Player], done: Iterable[str]) -> None:
    """IllegalMove unless `actor` may make `move` now."""
    if phase not in ACTION_OF:
        raise IllegalMove(f"no moves in the {phase} phase")
    if not actor.alive:
        raise IllegalMove(f"{actor.id} is dead")
    if move.action != ACTION_OF[phase]:
        raise IllegalMove(f"the {phase} phase takes {ACTION_OF[phase]!r} moves, not {move.action!r}")
    if actor.id not in must_act(phase, players.values()):
        raise IllegalMove(f"{actor.id} has no move at {phase}", status=403)
    if actor.id in set(done):
        raise IllegalMove(f"{actor.id} has already moved this {phase}")
    if move.action == "speak":
        if move.text is not None and len(move.text) > MAX_TEXT:
            raise IllegalMove(f"text is at most {MAX_TEXT} characters", status=400)
        return
    target = players.get(move.target or "")
    if target is None:
        raise IllegalMove(f"{move.action} needs a target: the id of a player in this room", status=400)
    if not target.alive:
        raise IllegalMove(f"{target.id} is already dead")
    if target.id == actor.id:
        raise IllegalMove(f"{actor.id} cannot {move.action} themself")
    if move.action == "kill" and target.role == WEREWOLF:
        raise IllegalMove(f"werewolves do not kill werewolves ({target.id} is one)")


def night_victim(moves: Sequence[Move]) -> str | None:
    """The most picked victim; a tie goes to the one picked first."""
    picks = [m.target for m in moves if m.action == "kill" and m.target]
    if not picks:
        return None
    counts = Counter(picks)
    top = max(counts.values())
    return next(t for t in picks if counts[t] == top)


def lynch(moves: Sequence[Move]) -> tuple[str | None, dict[str, int]]:
    """The most voted player (None on a tie or without votes) and the count of each."""
    counts = Counter(m.target for m in moves if m.action == "vote" and m.target)
    ranked = counts.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None, dict(counts)
    return ranked[0][0], dict(counts)


def winner(players: Iterable[Player]) -> str | None:
    """"werewolves", "villagers", or None while the game goes on."""
    alive = living(players)
    wolves = sum(1 for p in alive if p.role == WEREWOLF)
    if wolves == 0:
        return "villagers"
    if wolves >= len(alive) - wolves:
        return "werewolves"
    return None


def next_phase(phase: str) -> str:
    return PHASES[(PHASES.index(phase) + 1) % len(PHASES)]


def choose_move(phase: str, me: Player, players: Sequence[Player], wolves: Iterable[str],
                rng: random.Random) -> Move:
    """A simple player's move: wolves kill and vote against villagers, villagers vote at random,
    everyone says a line. `wolves` is what `me` knows of the werewolves (its pack, if it is one);
    pass an rng seeded by room and round so that wolves of one pack pick the same victim."""
    pack = set(wolves)
    others = [p for p in players if p.alive and p.id != me.id]
    if me.role == WEREWOLF:
        others = [p for p in others if p.id not in pack] or others
    others.sort(key=lambda p: p.seat)
    target = rng.choice(others) if others else None
    if phase == "day":
        name = target.name if target is not None else "nobody"
        return Move(me.id, "speak", text=rng.choice(_LINES).format(name=name))
    return Move(me.id, ACTION_OF[phase], target.id if target is not None else None)
