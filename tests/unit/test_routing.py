"""The router's pure decisions: weights, the monotonic canary layout, rendezvous, sticky keys, counters."""

from __future__ import annotations

import math

import pytest

from shipmate.errors import UserError
from shipmate.targets.local import routing
from shipmate.targets.local.routing import StickyKey
from shipmate.targets.local.traffic import RouterSnapshot, VersionCounters, render_prometheus

KEYS = [f"room-{i}" for i in range(5000)]
ORDER = ["v2", "v1"]  # newest first


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v1=95,v2=5", {"v1": 95.0, "v2": 5.0}),
        ("v1:100 v2:0", {"v1": 100.0, "v2": 0.0}),
        ("blue=0.5, green=0.5", {"blue": 0.5, "green": 0.5}),
        ("", {}),
    ],
)
def test_parse_weights(text: str, expected: dict[str, float]) -> None:
    assert routing.parse_weights(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v1", "is not VERSION=WEIGHT"),
        ("=5", "is not VERSION=WEIGHT"),
        ("v1=x", "v1: 'x' is not a number"),
        ("v1=-1", "must be a number >= 0"),
        ("v1=inf", "must be a number >= 0"),
        ("v1=0,v2=0", "at least one version needs a weight above 0"),
        ("v1=1,v1=2", "given twice"),
    ],
)
def test_parse_weights_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        routing.parse_weights(text)


def test_layout_newest_first_and_covers_unit_interval() -> None:
    spans = routing.layout({"v1": 95, "v2": 5}, ORDER)
    assert spans == [("v2", 0.0, 0.05), ("v1", 0.05, 1.0)]
    assert routing.layout({"v1": 1, "v2": 1, "v3": 1}, ["v3"])[-1][2] == 1.0
    assert routing.layout({"v1": 0, "v2": 100}, ORDER) == [("v2", 0.0, 1.0)]
    assert routing.layout({}, ORDER) == []


def test_key_points_are_stable_and_uniform() -> None:
    points = [routing.key_point(k) for k in KEYS]
    assert points == [routing.key_point(k) for k in KEYS]
    assert all(0.0 <= p < 1.0 for p in points)
    below = sum(p < 0.25 for p in points) / len(points)
    assert abs(below - 0.25) < 0.03


def test_growing_canary_keeps_its_keys_and_moves_only_what_it_must() -> None:
    previous: dict[str, str] = {}
    for canary in (0, 5, 25, 50, 100):
        weights = {"v1": 100 - canary, "v2": canary}
        now = {k: routing.version_at(routing.key_point(k), weights, ORDER) or "" for k in KEYS}
        for key, version in previous.items():
            if version == "v2":
                assert now[key] == "v2", key  # a key on the canary stays there
        moved = sum(previous.get(k) != now[k] for k in KEYS) if previous else 0
        share = sum(v == "v2" for v in now.values()) / len(KEYS)
        assert abs(share - canary / 100) < 0.03
        if previous:
            before = sum(v == "v2" for v in previous.values())
            assert moved == sum(v == "v2" for v in now.values()) - before  # only stable -> canary moves
        previous = now
    # Rolling back moves only the canary's keys back, and they return to it when it comes back.
    back = {k: routing.version_at(routing.key_point(k), {"v1": 95, "v2": 5}, ORDER) for k in KEYS}
    again = {k: routing.version_at(routing.key_point(k), {"v1": 95, "v2": 5}, ORDER) for k in KEYS}
    assert back == again


def test_choose_version_falls_back_only_when_the_wanted_version_has_no_instance() -> None:
    weights = {"v1": 90, "v2": 10}
    assert routing.choose_version(0.01, weights, ORDER, {"v1", "v2"}) == "v2"
    assert routing.choose_version(0.5, weights, ORDER, {"v1", "v2"}) == "v1"
    assert routing.choose_version(0.01, weights, ORDER, {"v1"}) == "v1"
    assert routing.choose_version(0.5, weights, ORDER, {"v2"}) == "v2"
    assert routing.choose_version(0.5, {"v1": 100, "v2": 0}, ORDER, {"v2"}) == "v2"
    assert routing.choose_version(0.5, weights, ORDER, set()) is None
    assert routing.choose_version(0.5, {}, ORDER, {"v1", "v2"}) == "v2"
    assert routing.newest(ORDER, {"v1", "v2"}) == "v2"
    assert routing.newest(ORDER, {"v1"}) == "v1"


@pytest.mark.parametrize(
    ("weights", "order", "available"),
    [
        ({"v1": 95, "v2": 5}, ORDER, {"v1", "v2"}),
        ({"v1": 95, "v2": 5}, ORDER, {"v1"}),
        ({"v1": 95, "v2": 5}, ORDER, {"v2"}),
        ({"v1": 100, "v2": 0}, ORDER, {"v2"}),
        ({"v1": 50, "v2": 50}, ORDER, {"v1", "v3"}),
        ({"v1": 1, "v2": 2, "v3": 1}, ["v3", "v2", "v1"], {"v1", "v3"}),
        ({"v1": 1, "v4": 1}, ORDER, {"v1", "v2", "v4"}),  # a weighted version missing from the order
        ({}, ORDER, {"v1", "v2"}),
        ({"v1": 100}, ORDER, set()),
    ],
)
def test_split_chooses_what_choose_version_chooses(
    weights: dict[str, float], order: list[str], available: set[str]
) -> None:
    split = routing.split(weights, order, available)
    for point in [i / 1000 for i in range(1000)] + [0.05, 0.25, 0.5, 1 - 1e-12]:
        assert split.choose(point) == routing.choose_version(point, weights, order, available), point


def test_rendezvous_moves_only_the_keys_of_a_removed_instance() -> None:
    ids = ["a", "b", "c", "d"]
    first = {k: routing.rendezvous(k, ids)[0] for k in KEYS}
    assert {k: routing.rendezvous(k, reversed(ids))[0] for k in KEYS} == first  # order-independent
    counts = {i: sum(v == i for v in first.values()) for i in ids}
    assert all(abs(n / len(KEYS) - 0.25) < 0.03 for n in counts.values())
    without_b = {k: routing.rendezvous(k, ["a", "c", "d"])[0] for k in KEYS}
    for key, inst in first.items():
        if inst != "b":
            assert without_b[key] == inst


@pytest.mark.parametrize(
    ("spec", "headers", "target", "expected"),
    [
        ("header:X-Room", [("x-room", " r1 ")], "/", "r1"),
        ("header:X-Room", [("X-Other", "r1")], "/", None),
        ("query:roomId", [], "/join?x=1&roomId=r%202#frag", "r 2"),
        ("query:roomId", [], "/join", None),
        ("cookie:roomId", [("Cookie", 'a=1; roomId="r3"; b=2')], "/", "r3"),
        ("cookie:roomId", [("Cookie", "roomIdx=1")], "/", None),
    ],
)
def test_sticky_key_extraction(spec: str, headers: list[tuple[str, str]], target: str, expected: str | None) -> None:
    assert StickyKey.parse(spec).extract(headers, target) == expected


@pytest.mark.parametrize("spec", ["roomId", "body:roomId", "query:", "header: "])
def test_sticky_key_spec_errors(spec: str) -> None:
    with pytest.raises(UserError, match="must be header:NAME"):
        StickyKey.parse(spec)


def test_counters_snapshot_quantiles_and_exposition() -> None:
    counters = VersionCounters()
    for seconds in [0.001] * 90 + [0.2] * 9 + [20.0]:
        counters.observe(200, seconds)
    counters.observe(503, 0.004)
    snap = counters.snapshot()
    assert (snap.requests, snap.errors_5xx, snap.by_code) == (101, 1, {200: 100, 503: 1})
    assert snap.buckets[0] == (0.005, 91)
    assert snap.buckets[-1] == (math.inf, 101)
    assert snap.latency_quantile(0.5) < 0.005
    assert 0.1 < snap.latency_quantile(0.95) <= 0.25
    assert snap.latency_quantile(1.0) == 10.0
    assert snap.error_rate == pytest.approx(1 / 101)
    router = RouterSnapshot(service='a"b', versions={"v1": snap}, unrouted={502: 2}, client_connections=3)
    text = render_prometheus([router])
    assert 'shipmate_router_requests_total{service="a\\"b",version="v1",code="503"} 1' in text
    assert 'shipmate_router_request_duration_seconds_bucket{service="a\\"b",version="v1",le="+Inf"} 101' in text
    assert 'shipmate_router_unrouted_requests_total{service="a\\"b",code="502"} 2' in text
    later = RouterSnapshot(service="s", versions={"v1": snap}, unrouted={}, client_connections=0)
    empty = RouterSnapshot(service="s", versions={}, unrouted={}, client_connections=0)
    assert later.delta(empty) == {"v1": (101, 1)}
