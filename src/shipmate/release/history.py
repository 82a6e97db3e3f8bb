"""Releases and rollouts in the control-plane store: the release engine's I/O edge.

Called by the CLI (`up`, `deploy`, `history`, `rollback`, `rollout ...`) and by the local
runtime that runs the engine. Values go in and out through `codec` as JSON; the store itself
(`shipmate.store`) knows nothing of their shape.
"""

from __future__ import annotations

import json

from shipmate.errors import Conflict, NotFound
from shipmate.release import codec
from shipmate.release.models import TERMINAL, Release, Rollout
from shipmate.store.db import Store


class History:
    """One store's releases and rollouts."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- releases ---------------------------------------------------------------------------

    def numbers(self, environment: str) -> list[int]:
        return self.store.release_numbers(environment)

    def get(self, environment: str, number: int) -> Release:
        data = self.store.release(environment, number)
        if data is None:
            known = ", ".join(map(str, self.numbers(environment))) or "none"
            raise NotFound(f"no release {number} of {environment} (releases kept: {known})")
        return codec.from_json(Release, json.loads(data))

    def current(self, environment: str) -> Release | None:
        env = self.store.environment(environment)
        if env is None or env.release is None:
            return None
        return self.get(environment, env.release)

    def previous(self, environment: str, current: int) -> int | None:
        """The release that ran before `current` became the current one (what a rollback goes back
        to): the origin of the last rollout that ended on it, else the release numbered before it."""
        for rollout in reversed(self.rollouts(environment)):
            arrived = rollout.phase == "promoted" or (rollout.phase == "rolled-back" and rollout.kind == "rollback")
            if arrived and rollout.to_release == current and rollout.from_release is not None:
                if rollout.from_release in self.numbers(environment):
                    return rollout.from_release
                break
        earlier = [n for n in self.numbers(environment) if n < current]
        return earlier[-1] if earlier else None

    def next_number(self, environment: str) -> int:
        numbers = self.numbers(environment)
        return (numbers[-1] if numbers else 0) + 1

    def add(self, release: Release, *, keep: int) -> None:
        """Store a release and prune the oldest beyond `keep` (never the current one or one a live
        rollout uses)."""
        self.store.add_release(release.environment, release.number, release.created_at,
                               json.dumps(codec.to_json(release), sort_keys=True))
        env = self.store.environment(release.environment)
        protect = {release.number, *([env.release] if env is not None and env.release is not None else [])}
        active = self.active(release.environment)
        if active is not None:
            protect |= {active.to_release, *([active.from_release] if active.from_release is not None else [])}
        self.store.prune_releases(release.environment, keep, protect)

    # --- rollouts ---------------------------------------------------------------------------

    def save(self, rollout: Rollout) -> None:
        self.store.put_rollout(rollout.id, rollout.environment, rollout.phase,
                               json.dumps(codec.to_json(rollout), sort_keys=True), created_at=rollout.started_at)

    def rollouts(self, environment: str) -> list[Rollout]:
        return [codec.from_json(Rollout, json.loads(row.data)) for row in self.store.rollouts(environment)]

    def active(self, environment: str) -> Rollout | None:
        """The rollout of an environment that has not ended, if any (there is at most one)."""
        live = [r for r in self.store.rollouts(environment) if r.phase not in TERMINAL]
        return codec.from_json(Rollout, json.loads(live[-1].data)) if live else None

    def latest(self, environment: str) -> Rollout | None:
        rows = self.store.rollouts(environment)
        return codec.from_json(Rollout, json.loads(rows[-1].data)) if rows else None

    def request(self, environment: str, request: str) -> Rollout:
        """Leave a person's request for the engine on the live rollout; Conflict when there is none."""
        live = self.active(environment)
        if live is None:
            raise Conflict(f"no rollout of {environment} is in progress")
        self.store.request(live.id, request)
        return live

    def take_request(self, rollout_id: str) -> str:
        return self.store.take_request(rollout_id)
