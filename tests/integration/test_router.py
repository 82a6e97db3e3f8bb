"""The local router over real sockets on 127.0.0.1, in front of in-process asyncio backends.

Each test runs its own event loop with a deadline, so a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import asyncio
import functools
import random
from asyncio.subprocess import PIPE, STDOUT
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import pytest

from shipmate.targets.local import routing
from shipmate.targets.local.router import AdminServer, Router
from shipmate.targets.local.routing import Backend as Route
from shipmate.targets.local.routing import StickyKey
from tests.integration.router_support import Backend, Client, WebSocket

pytestmark = pytest.mark.integration

P = ParamSpec("P")
PROMTOOL = "/usr/bin/promtool"


def loop_test(timeout: float) -> Callable[[Callable[P, Coroutine[Any, Any, None]]], Callable[P, None]]:
    def wrap(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            async def bounded() -> None:
                async with asyncio.timeout(timeout):
                    await fn(*args, **kwargs)

            asyncio.run(bounded())

        return run

    return wrap


async def setup(
    layout: dict[str, int], weights: dict[str, float] | None = None, **options: Any
) -> tuple[Router, dict[str, Backend]]:
    """Backends named v1-a, v1-b, ... per version, and a started router in front of them."""
    router = Router("api", rng=random.Random(7), **options)  # noqa: S311 (a seeded split, not security)
    backends: dict[str, Backend] = {}
    for version, count in layout.items():
        for i in range(count):
            name = f"{version}-{'abcdefgh'[i]}"
            backends[name] = await Backend(name, version).start()
            router.add(Route(name, version, "127.0.0.1", backends[name].port))
    router.set_weights(weights or {v: 1 for v in layout})
    await router.start()
    return router, backends


async def teardown(router: Router, backends: dict[str, Backend], *clients: Client) -> None:
    for client in clients:
        await client.close()
    await router.stop()
    for backend in backends.values():
        await backend.stop()


@loop_test(10)
async def test_get_post_and_headers() -> None:
    router, backends = await setup({"v1": 1})
    client = Client(router.port)
    info = (await client.request("GET", "/info?x=1", [("X-Forwarded-For", "10.0.0.9")])).json()
    assert info["target"] == "/info?x=1"
    got = {k.lower(): v for k, v in info["headers"]}  # type: ignore[union-attr]
    assert got["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["host"] == "test"

    hop = [("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers")]
    info = (await client.request("GET", "/info", [*hop, ("X-End", "2")])).json()
    names = {k.lower() for k, _ in info["headers"]}  # type: ignore[union-attr]
    assert "x-end" in names
    assert not names & {"connection", "x-hop", "keep-alive", "te"}

    body = bytes(range(256)) * 4000  # 1 MB
    resp = await client.request("POST", "/echo", body=body)
    assert (resp.status, resp.body) == (200, body)

    await client.send_head("POST", "/echo", [("Transfer-Encoding", "chunked")])
    assert client.writer is not None
    for part in (b"hello ", b"chunked ", b"world"):
        client.writer.write(b"%x\r\n%b\r\n" % (len(part), part))
    client.writer.write(b"0\r\n\r\n")
    resp = await client.read_response()
    assert (resp.status, resp.body) == (200, b"hello chunked world")

    resp = await client.request("HEAD", "/info")
    assert resp.status == 200
    assert int(resp.header("content-length") or 0) > 0
    resp = await client.request("GET", "/status?code=404")
    assert resp.status == 404
    resp = await client.request("GET", "/until-close")  # close-delimited upstream: re-chunked to the client
    assert (resp.status, resp.body, resp.header("transfer-encoding")) == (200, b"z" * 5000, "chunked")
    assert (await client.request("GET", "/info")).status == 200
    assert client.connects == 1
    await teardown(router, backends, client)


@loop_test(10)
async def test_bodies_are_streamed_both_ways() -> None:
    router, backends = await setup({"v1": 1})
    backend = backends["v1-a"]
    client = Client(router.port)
    await client.send_head("GET", "/stream", [])
    assert client.reader is not None
    # The first half arrives while the backend still holds the second: nothing waits for the whole body.
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert b"Content-Length: 2048" in head
    assert await client.reader.readexactly(1024) == b"a" * 1024
    backend.gate.set()
    assert await client.reader.readexactly(1024) == b"b" * 1024

    await client.send_head("POST", "/gated-upload", [("Content-Length", str(4096))])
    assert client.writer is not None
    client.writer.write(b"x" * 1024)
    await asyncio.wait_for(backend.got_first_part.wait(), 5)  # the backend has a part before we send the rest
    client.writer.write(b"y" * 3072)
    resp = await client.read_response()
    assert resp.json() == {"length": 4096}
    await teardown(router, backends, client)


@loop_test(10)
async def test_keep_alive_reuses_upstream_connections() -> None:
    router, backends = await setup({"v1": 1})
    clients = [Client(router.port) for _ in range(4)]

    async def loop(client: Client) -> None:
        for _ in range(50):
            assert (await client.request("GET", "/info")).status == 200

    await asyncio.gather(*(loop(c) for c in clients))
    assert [c.connects for c in clients] == [1, 1, 1, 1]
    assert backends["v1-a"].requests == 200
    assert backends["v1-a"].connections <= 4  # one per concurrent request at most, then reused
    assert router.snapshot().versions["v1"].open_connections == backends["v1-a"].connections
    await teardown(router, backends, *clients)


@loop_test(10)
async def test_chunked_response_with_extensions_and_trailers() -> None:
    router, backends = await setup({"v1": 1})
    client = Client(router.port)
    resp = await client.request("GET", "/chunked?n=200&size=3000")
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.body == b"".join(bytes([97 + i % 26]) * 3000 for i in range(200))
    assert (await client.request("GET", "/info")).status == 200  # the connection is still in step
    await teardown(router, backends, client)


@loop_test(10)
async def test_websocket_echo_through_the_router() -> None:
    router, backends = await setup({"v1": 2}, sticky=StickyKey("query", "roomId"))
    sockets = [await WebSocket.connect(router.port, f"/ws?roomId=r{i}") for i in range(6)]
    for i, ws in enumerate(sockets):
        for j in range(20):
            assert await ws.echo(f"r{i}-{j}" * (j * 50 + 1)) == f"{ws.instance}:" + f"r{i}-{j}" * (j * 50 + 1)
    snap = router.snapshot().versions["v1"]
    assert snap.websockets_open == 6
    assert snap.by_code[101] == 6
    for ws in sockets:
        await ws.close()
    await asyncio.sleep(0.05)
    assert router.snapshot().versions["v1"].websockets_open == 0
    assert router.snapshot().versions["v1"].open_connections == 0
    await teardown(router, backends)


@loop_test(15)
async def test_weights_split_requests() -> None:
    router, backends = await setup({"v1": 2, "v2": 1}, {"v1": 80, "v2": 20})
    clients = [Client(router.port) for _ in range(8)]
    seen: Counter[str] = Counter()

    async def loop(client: Client) -> None:
        for _ in range(250):
            resp = await client.request("GET", "/status")
            seen[resp.header("x-version") or ""] += 1

    await asyncio.gather(*(loop(c) for c in clients))
    assert sum(seen.values()) == 2000
    assert abs(seen["v2"] / 2000 - 0.20) < 0.03, seen
    assert abs(backends["v1-a"].requests - backends["v1-b"].requests) < 100  # round robin within v1
    snap = router.snapshot().versions
    assert (snap["v1"].requests, snap["v2"].requests) == (seen["v1"], seen["v2"])
    router.set_weights({"v1": 0, "v2": 100})
    assert {(await clients[0].request("GET", "/status")).header("x-version") for _ in range(20)} == {"v2"}
    # A tester's header reaches the newest version whatever the weights.
    router.set_weights({"v1": 100, "v2": 0})
    forced = await clients[1].request("GET", "/status", [("X-Canary", "always")])
    assert forced.header("x-version") == "v2"
    await teardown(router, backends, *clients)


@loop_test(15)
async def test_sticky_keys_stay_on_their_version_as_the_canary_grows() -> None:
    router, backends = await setup({"v1": 2, "v2": 2}, {"v1": 95, "v2": 5}, sticky=StickyKey("header", "X-Room"))
    keys = [f"room-{i}" for i in range(400)]
    clients = [Client(router.port) for _ in range(4)]

    async def where(key: str, client: Client) -> str:
        resp = await client.request("GET", "/status", [("X-Room", key)])
        return resp.header("x-instance") or ""

    async def phase() -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(keys), len(clients)):
            batch = keys[start : start + len(clients)]
            got = await asyncio.gather(*(where(k, c) for k, c in zip(batch, clients, strict=False)))
            out.update(zip(batch, got, strict=True))
        return out

    history = []
    for canary in (5, 25, 50):
        router.set_weights({"v1": 100 - canary, "v2": canary})
        now = await phase()
        assert now == await phase()  # the same key, the same instance, every time
        for key, instance in now.items():
            expected = routing.version_at(routing.key_point(key), router.weights, router.versions)
            assert instance.startswith(f"{expected}-")
        if history:
            before = history[-1]
            for key in keys:
                if before[key].startswith("v2-"):
                    assert now[key] == before[key]  # on the canary: stays, on the same instance
                elif now[key].startswith("v1-"):
                    assert now[key] == before[key]  # stayed on stable: did not move at all
        share = sum(i.startswith("v2-") for i in now.values()) / len(keys)
        assert abs(share - canary / 100) < 0.06
        history.append(now)
    await teardown(router, backends, *clients)


@loop_test(10)
async def test_no_instance_is_502_and_all_draining_is_503() -> None:
    router = Router("api")
    await router.start()
    client = Client(router.port)
    assert (await client.request("GET", "/")).status == 502
    backend = await Backend("v1-a", "v1").start()
    router.add(Route("v1-a", "v1", "127.0.0.1", backend.port))
    router.set_weights({"v1": 100})
    assert (await client.request("GET", "/info")).status == 200
    await asyncio.wait_for(router.drain("v1-a"), 2)
    assert (await client.request("GET", "/info")).status == 503
    router.undrain("v1-a")
    assert (await client.request("GET", "/info")).status == 200
    router.remove("v1-a")
    # An instance that refuses connections is skipped for the next one; with none left, 502.
    await backend.stop()
    router.add(Route("gone", "v1", "127.0.0.1", backend.port))
    assert (await client.request("GET", "/info")).status == 502
    live = await Backend("v1-b", "v1").start()
    router.add(Route("v1-b", "v1", "127.0.0.1", live.port))
    for _ in range(10):
        assert (await client.request("GET", "/info")).status == 200
    assert router.snapshot().unrouted == {502: 1, 503: 1}
    await teardown(router, {"live": live}, client)


@loop_test(10)
async def test_drain_waits_for_in_flight_requests() -> None:
    router, backends = await setup({"v1": 2})
    slow = [Client(router.port) for _ in range(4)]
    slow_requests = [asyncio.ensure_future(c.request("GET", "/slow?s=0.4")) for c in slow]
    await asyncio.sleep(0.1)
    busy = {name for name, b in backends.items() if b.requests}
    assert busy == {"v1-a", "v1-b"}
    drained = router.drain("v1-a")
    fast = Client(router.port)
    for _ in range(10):
        assert (await fast.request("GET", "/status")).header("x-instance") == "v1-b"
    assert not drained.done()  # its slow requests are still running
    await asyncio.wait_for(drained, 2)
    results = await asyncio.gather(*slow_requests)
    assert all(r.status == 200 for r in results)
    router.remove("v1-a")
    assert [b.id for b in router.backends()] == ["v1-b"]
    await teardown(router, backends, *slow, fast)


@loop_test(25)
async def test_live_changes_under_load_lose_nothing() -> None:
    sticky = StickyKey("cookie", "roomId")
    router, backends = await setup({"v1": 2, "v2": 2}, {"v1": 95, "v2": 5}, sticky=sticky)
    epoch = 0
    stop = asyncio.Event()
    errors: list[str] = []
    observed: dict[str, set[tuple[int, str]]] = {}  # key -> (epoch, version) of requests within one epoch
    epochs: list[tuple[dict[str, float], list[str]]] = [(router.weights, router.versions)]
    done = Counter[str]()

    async def http_client(n: int) -> None:
        client = Client(router.port)
        i = 0
        while not stop.is_set():
            key = f"room-{n}-{i % 7}"
            i += 1
            started = epoch
            try:
                if i % 5 == 0:
                    resp = await client.request("POST", "/echo", [("Cookie", f"roomId={key}")], body=b"p" * 5000)
                    ok = resp.status == 200 and resp.body == b"p" * 5000
                else:
                    resp = await client.request("GET", "/slow?s=0.01", [("Cookie", f"roomId={key}")])
                    ok = resp.status == 200
            except (OSError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{key}: {exc!r}")
                continue
            if not ok:
                errors.append(f"{key}: {resp.status}")
            done["http"] += 1
            if started == epoch:
                observed.setdefault(key, set()).add((epoch, resp.header("x-version") or ""))
        await client.close()

    async def ws_client(n: int) -> None:
        ws = await WebSocket.connect(router.port, "/ws", [("Cookie", f"roomId=ws-{n}")])
        j = 0
        while not stop.is_set():
            j += 1
            reply = await ws.echo(f"m{j}")
            if reply != f"{ws.instance}:m{j}":
                errors.append(f"ws {n}: {reply}")
            done["ws"] += 1
            await asyncio.sleep(0.01)
        await ws.close()

    workers = [asyncio.ensure_future(http_client(n)) for n in range(12)]
    workers += [asyncio.ensure_future(ws_client(n)) for n in range(4)]

    async def change(weights: dict[str, float]) -> None:
        nonlocal epoch
        router.set_weights(weights)
        epoch += 1
        epochs.append((router.weights, router.versions))
        await asyncio.sleep(0.3)

    await asyncio.sleep(0.3)
    await change({"v1": 75, "v2": 25})
    # Drain one instance of each version (the other keeps the version available), restart it, bring it back.
    for name in ("v1-a", "v2-b"):
        drain = router.drain(name)
        await change({"v1": 50, "v2": 50})
        await asyncio.sleep(0.2)
        # A WebSocket on it keeps it busy until it closes; removing it lets what runs on it finish.
        await asyncio.wait({drain}, timeout=0.2)
        router.remove(name)
        router.add(Route(name, name[:2], "127.0.0.1", backends[name].port))
    await change({"v1": 95, "v2": 5})
    await change({"v1": 0, "v2": 100})
    await change({"v1": 100, "v2": 0})
    stop.set()
    await asyncio.gather(*workers)

    assert errors == []
    assert done["http"] > 500
    assert done["ws"] > 100
    # A sticky key is only ever where the weights of its epoch put it: it moved only when its version changed.
    for key, seen in observed.items():
        for when, version in seen:
            weights, order = epochs[when]
            assert version == routing.version_at(routing.key_point(key), weights, order), (key, when)
    snap = router.snapshot()
    assert sum(v.errors_5xx for v in snap.versions.values()) == 0
    assert snap.unrouted == {}
    await teardown(router, backends)


@loop_test(15)
async def test_metrics_text_is_valid_and_counts_match() -> None:
    router, backends = await setup({"v1": 1, "v2": 1}, {"v1": 50, "v2": 50})
    admin = AdminServer([router])
    await admin.start()
    client = Client(router.port)
    codes: Counter[tuple[str, int]] = Counter()
    for i in range(100):
        resp = await client.request("GET", f"/status?code={500 if i % 10 == 0 else 200}")
        codes[(resp.header("x-version") or "", resp.status)] += 1
    metrics = Client(admin.port)
    resp = await metrics.request("GET", "/metrics")
    assert resp.status == 200
    assert resp.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    text = resp.body.decode()
    promtool = await asyncio.create_subprocess_exec(
        PROMTOOL, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await promtool.communicate(text.encode())
    assert promtool.returncode == 0, out.decode()
    for (version, code), count in codes.items():
        assert f'shipmate_router_requests_total{{service="api",version="{version}",code="{code}"}} {count}\n' in text
    snap = router.snapshot().versions
    for version in ("v1", "v2"):
        assert snap[version].requests == sum(n for (v, _), n in codes.items() if v == version)
        assert snap[version].errors_5xx == codes[(version, 500)]
        assert f'_count{{service="api",version="{version}"}} {snap[version].requests}\n' in text
        assert snap[version].latency_quantile(0.99) < 0.1
    assert "shipmate_router_client_connections" in router.metrics_text()
    await admin.stop()
    await teardown(router, backends, client, metrics)
