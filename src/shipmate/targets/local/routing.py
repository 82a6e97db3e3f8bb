"""Where the local router sends a request: versions by weight, sticky keys, instances by rendezvous.

Called by `shipmate.targets.local.router` (a `Split` each time its weights or instances change,
the rest for every request), and by tests with plain values. Every decision here is a pure function
of its arguments: this module must not do I/O, read a clock or draw random numbers (the router
passes the random point in).

The layout that makes canaries monotonic: a request gets a point in [0, 1), from the hash of its
sticky key or from a random draw. The versions share [0, 1) in order, newest first, each taking a
span the size of its share of the total weight. With a stable `v1` and a canary `v2`:

    weights {v1: 95, v2: 5}    v2 = [0, 0.05)   v1 = [0.05, 1)
    weights {v1: 75, v2: 25}   v2 = [0, 0.25)   v1 = [0.25, 1)

so when the canary grows, every key already on it stays there and only the keys it must take move;
when it shrinks (or rolls back to 0) only keys leave it. Within a version a keyed request goes to
the instance ranked first by rendezvous (highest random weight) hashing, so adding or draining one
instance moves only the keys that were on it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from shipmate.errors import UserError

StickySource = Literal["header", "query", "cookie"]
_SOURCES: tuple[StickySource, ...] = ("header", "query", "cookie")


@dataclass(frozen=True)
class Backend:
    """One instance the router may send requests to: its id, version label and address."""

    id: str
    version: str
    host: str
    port: int


def parse_weights(text: str) -> dict[str, float]:
    """`"v1=95,v2=5"` (also `v1:95 v2:5`) -> {"v1": 95.0, "v2": 5.0}, validated by `check_weights`."""
    weights: dict[str, float] = {}
    for part in text.replace(",", " ").split():
        name, sep, value = part.replace(":", "=").partition("=")
        if not sep or not name:
            raise UserError(f"weights: {part!r} is not VERSION=WEIGHT (e.g. v1=95,v2=5)")
        if name in weights:
            raise UserError(f"weights: version {name!r} is given twice")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UserError(f"weights: {name}: {value!r} is not a number") from None
    return check_weights(weights)


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The weights as a new dict, or UserError if one is negative or not finite, or all are 0."""
    out: dict[str, float] = {}
    for name, value in weights.items():
        weight = float(value)
        if not name:
            raise UserError("weights: a version name is empty")
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"weights: {name}: must be a number >= 0 (got {value})")
        out[name] = weight
    if out and sum(out.values()) <= 0:
        raise UserError(f"weights: at least one version needs a weight above 0 (got {out})")
    return out


def _hash64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


def key_point(key: str) -> float:
    """The point in [0, 1) of a sticky key: the same key always gets the same point."""
    return _hash64("point\0" + key) / 2.0**64


def layout(weights: Mapping[str, float], order: Sequence[str]) -> list[tuple[str, float, float]]:
    """The spans [start, end) of [0, 1) per version with weight above 0, newest first.

    `order` lists versions newest first; versions with a weight but missing from `order` follow, by name.
    """
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        return []
    ranked = [v for v in order if v in weights]
    ranked += sorted(v for v in weights if v not in set(order))
    spans: list[tuple[str, float, float]] = []
    start = 0.0
    for version in ranked:
        weight = weights[version]
        if weight <= 0:
            continue
        end = start + weight / total
        spans.append((version, start, end))
        start = end
    # Rounding must not leave a gap at the top: the last span ends at exactly 1.
    last_version, last_start, _ = spans[-1]
    spans[-1] = (last_version, last_start, 1.0)
    return spans


def version_at(point: float, weights: Mapping[str, float], order: Sequence[str]) -> str | None:
    """The version whose span holds `point`, or None when no version has a weight."""
    for version, start, end in layout(weights, order):
        if start <= point < end:
            return version
    return None


def choose_version(
    point: float, weights: Mapping[str, float], order: Sequence[str], available: Iterable[str]
) -> str | None:
    """The version for a request at `point`, among the versions that have an instance to take it.

    The version the weights give, if it is available. Otherwise (its instances are all draining or
    gone) the available version with the largest weight, then the newest available one, so that a
    request is never refused while some instance can serve it. None when nothing is available.
    """
    ready = set(available)
    if not ready:
        return None
    wanted = version_at(point, weights, order)
    if wanted in ready:
        return wanted
    return _fallback(weights, order, ready)


def _fallback(weights: Mapping[str, float], order: Sequence[str], ready: set[str]) -> str:
    """Where a request goes when the version its point falls in has no instance to take it."""
    weighted = [v for v in ready if weights.get(v, 0) > 0]
    if weighted:
        return max(weighted, key=lambda v: (weights[v], -_rank(v, order)))
    return min(ready, key=lambda v: (_rank(v, order), v))


@dataclass(frozen=True)
class Split:
    """`choose_version` worked out once for given weights, order and available versions.

    The router keeps one until its weights or instances change, so choosing a version for a
    request is a scan of a few spans instead of a new layout. `spans` are the layout's spans, each
    with the version a point in it gets (its own, or the fallback when its own is unavailable).
    """

    spans: tuple[tuple[str, float, float], ...]
    fallback: str | None

    def choose(self, point: float) -> str | None:
        """The same answer as `choose_version(point, weights, order, available)`."""
        for version, start, end in self.spans:
            if start <= point < end:
                return version
        return self.fallback


def split(weights: Mapping[str, float], order: Sequence[str], available: Iterable[str]) -> Split:
    """The `Split` of weights, order (newest first) and the versions that have an instance to take requests."""
    ready = set(available)
    if not ready:
        return Split((), None)
    fallback = _fallback(weights, order, ready)
    spans = tuple((v if v in ready else fallback, start, end) for v, start, end in layout(weights, order))
    return Split(spans, fallback)


def newest(order: Sequence[str], available: Iterable[str]) -> str | None:
    """The newest available version: where a tester header (`X-Canary: always`) sends a request."""
    ready = set(available)
    for version in order:
        if version in ready:
            return version
    return min(ready) if ready else None


def _rank(version: str, order: Sequence[str]) -> int:
    return order.index(version) if version in order else len(order)


def rendezvous(key: str, instance_ids: Iterable[str]) -> list[str]:
    """Instance ids ranked for `key` by rendezvous hashing, best first (ties broken by id)."""
    return sorted(instance_ids, key=lambda i: (-_hash64(key + "\0" + i), i))


@dataclass(frozen=True)
class StickyKey:
    """Where a request's sticky key is: a header, a query parameter or a cookie, by name."""

    source: StickySource
    name: str

    @classmethod
    def parse(cls, text: str) -> StickyKey:
        """`header:X-Room-Id`, `query:roomId` or `cookie:roomId`."""
        source, sep, name = text.partition(":")
        if not sep or not name.strip() or source not in _SOURCES:
            raise UserError(f"sticky key: {text!r} must be header:NAME, query:NAME or cookie:NAME")
        return cls(source=source, name=name.strip())

    def extract(self, headers: Sequence[tuple[str, str]], target: str) -> str | None:
        """The key of a request from its headers (name, value) and request target, or None."""
        if self.source == "header":
            wanted = self.name.lower()
            for name, value in headers:
                if name.lower() == wanted and value.strip():
                    return value.strip()
            return None
        if self.source == "query":
            _, sep, query = target.partition("?")
            if not sep:
                return None
            for name, value in parse_qsl(query.partition("#")[0], keep_blank_values=False):
                if name == self.name:
                    return value
            return None
        for name, value in headers:
            if name.lower() != "cookie":
                continue
            for pair in value.split(";"):
                cookie, eq, cookie_value = pair.strip().partition("=")
                if eq and cookie == self.name and cookie_value:
                    return cookie_value.strip('"')
        return None
