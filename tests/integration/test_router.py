"""The local router over real sockets on 127.0.0.1, in front of in-process asyncio backends.

Each test runs its own event loop with a deadline, so a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import asyncio
import functools
import random
import socket
from asyncio.subprocess import PIPE, STDOUT
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import pytest

from shipmate.targets.local import routing
from shipmate.targets.local.router import AdminServer, Router
from shipmate.targets.local.routing import Backend as Route
from shipmate.targets.local.routing import StickyKey
from tests.integration.router_support import Backend, Client, Response, WebSocket, read_body, read_head

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


# --- the protocol paths: heads and bodies in odd pieces, pipelining, back-pressure, retries --------


async def raw_connection(port: int, *, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection that sends each write at once (no Nagle), optionally with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def response(reader: asyncio.StreamReader, method: str = "GET") -> Response:
    head = await read_head(reader)
    assert head is not None
    status = int(head[0].split(" ")[1])
    body = b"" if method == "HEAD" else await read_body(reader, head[1])
    return Response(status, head[1], body)


@loop_test(15)
async def test_a_request_split_across_many_segments() -> None:
    router, backends = await setup({"v1": 1})
    reader, writer = await raw_connection(router.port)
    body = b"0123456789" * 30
    message = b"POST /echo?split=1 HTTP/1.1\r\nHost: test\r\nX-Split: yes\r\nContent-Length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )
    for i in range(len(message)):  # one byte per send
        writer.write(message[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0.0005)
    resp = await response(reader)
    assert (resp.status, resp.body) == (200, body)
    # The same for a head alone, cut at every awkward place: inside "\r\n\r\n" and inside a header name.
    head = b"GET /info HTTP/1.1\r\nHost: test\r\nX-Cut: here\r\n\r\n"
    for cut in (head.index(b"X-C") + 1, len(head) - 3, len(head) - 2, len(head) - 1):
        writer.write(head[:cut])
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(head[cut:])
        info = (await response(reader)).json()
        assert ["X-Cut", "here"] in info["headers"]  # type: ignore[operator]
    # And an answer that comes back in pieces: the interim head, the final head and the body, three bytes a time.
    writer.write(b"GET /dribble HTTP/1.1\r\nHost: test\r\n\r\n")
    interim = await read_head(reader)
    assert interim is not None
    assert interim[0] == "HTTP/1.1 103 Early Hints"
    resp = await response(reader)
    assert (resp.status, resp.header("x-instance"), resp.body) == (200, "v1-a", b"0123456789")
    writer.write(b"GET /status HTTP/1.1\r\nHost: test\r\n\r\n")
    assert (await response(reader)).status == 200
    assert backends["v1-a"].connections == 1  # the upstream connection stayed in step, and was reused
    writer.close()
    await teardown(router, backends)


@loop_test(10)
async def test_pipelined_requests_are_answered_in_order() -> None:
    router, backends = await setup({"v1": 1})
    reader, writer = await raw_connection(router.port)
    writer.write(
        b"GET /status?code=201 HTTP/1.1\r\nHost: test\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello"
        b"\r\n"  # a stray blank line between messages is tolerated
        b"GET /chunked?n=3&size=10 HTTP/1.1\r\nHost: test\r\n\r\n"
        b"HEAD /info HTTP/1.1\r\nHost: test\r\n\r\n"
        b"GET /status?code=202 HTTP/1.1\r\nHost: test\r\n\r\n"
    )
    assert (await response(reader)).status == 201
    assert (await response(reader)).body == b"hello"
    assert (await response(reader)).body == b"a" * 10 + b"b" * 10 + b"c" * 10
    assert (await response(reader, "HEAD")).status == 200
    assert (await response(reader)).status == 202
    assert backends["v1-a"].connections == 1
    snap = router.snapshot().versions["v1"]
    assert (snap.requests, snap.in_flight) == (5, 0)
    writer.close()
    await teardown(router, backends)


@loop_test(10)
async def test_a_body_that_arrives_slowly() -> None:
    router, backends = await setup({"v1": 1})
    reader, writer = await raw_connection(router.port)
    body = bytes(range(256)) * 12
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body))
    for start in range(0, len(body), 300):
        writer.write(body[start : start + 300])
        await asyncio.sleep(0.02)
    resp = await response(reader)
    assert (resp.status, resp.body) == (200, body)
    # Chunked, a chunk at a time, the size line itself in two pieces.
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    for part in (b"slow ", b"chunked ", b"body"):
        writer.write(b"%x" % len(part))
        await asyncio.sleep(0.02)
        writer.write(b";note=1\r\n%b\r\n" % part)
        await asyncio.sleep(0.02)
    writer.write(b"0\r\n\r\n")
    resp = await response(reader)
    assert (resp.status, resp.body) == (200, b"slow chunked body")
    writer.close()
    await teardown(router, backends)


@loop_test(20)
async def test_a_large_response_to_a_slow_reader_applies_back_pressure() -> None:
    router, backends = await setup({"v1": 1})
    backend = backends["v1-a"]
    reader, writer = await raw_connection(router.port, rcvbuf=16 * 1024)
    mb = 96
    writer.write(b"GET /big?mb=%d HTTP/1.1\r\nHost: test\r\n\r\n" % mb)
    await asyncio.sleep(0.5)
    stalled = backend.sent
    await asyncio.sleep(0.3)
    # The client reads nothing: the backend is held back (socket buffers are all that is in flight).
    assert backend.sent == stalled
    assert stalled < mb * 1024 * 1024 // 2
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Content-Length: %d" % (mb * 1024 * 1024) in head
    got, part = 0, 256 * 1024
    while got < mb * 1024 * 1024:
        data = await reader.readexactly(part)
        assert data == bytes([97 + (got // part) % 26]) * part
        got += part
    assert backend.sent == mb * 1024 * 1024
    writer.write(b"GET /status HTTP/1.1\r\nHost: test\r\n\r\n")  # still in step
    assert (await response(reader)).status == 200
    writer.close()
    await teardown(router, backends)


@loop_test(20)
async def test_a_large_request_body_to_a_slow_instance_applies_back_pressure() -> None:
    router, backends = await setup({"v1": 1})
    backend = backends["v1-a"]
    reader, writer = await raw_connection(router.port)
    size = 96 * 1024 * 1024
    writer.write(b"POST /gated-upload?wait=1 HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % size)
    part = b"u" * (1024 * 1024)
    sent = 0

    async def upload() -> None:
        nonlocal sent
        while sent < size:
            writer.write(part)
            await writer.drain()
            sent += len(part)

    uploading = asyncio.ensure_future(upload())
    await asyncio.wait_for(backend.got_first_part.wait(), 5)
    await asyncio.sleep(0.5)
    stalled = sent
    await asyncio.sleep(0.3)
    assert sent == stalled  # the backend reads nothing more: the client is held back
    assert stalled < size // 2
    backend.gate.set()
    await asyncio.wait_for(uploading, 15)
    assert (await response(reader)).json() == {"length": size}
    writer.close()
    await teardown(router, backends)


@loop_test(10)
async def test_a_pooled_connection_the_instance_dropped_is_retried() -> None:
    router, backends = await setup({"v1": 1})
    client = Client(router.port)
    assert (await client.request("GET", "/hang-up-next")).status == 200
    # The pooled connection is closed by the instance when the next request arrives on it: sent again, on a new one.
    resp = await client.request("GET", "/status")
    assert resp.status == 200
    assert backends["v1-a"].connections == 2
    # A request with a body is not sent twice: the client learns that it failed.
    assert (await client.request("GET", "/hang-up-next")).status == 200
    resp = await client.request("POST", "/echo", body=b"once")
    assert resp.status == 502
    assert b"closed the connection before answering" in resp.body
    snap = router.snapshot().versions["v1"]
    assert (snap.by_code, snap.in_flight) == ({200: 3, 502: 1}, 0)
    assert snap.open_connections == 0  # the instance dropped the last one, and the router did not keep it
    await teardown(router, backends, client)


@loop_test(10)
async def test_interim_responses_expect_continue_and_http10() -> None:
    router, backends = await setup({"v1": 1})
    reader, writer = await raw_connection(router.port)
    writer.write(b"GET /early-hints HTTP/1.1\r\nHost: test\r\n\r\n")
    hints = await read_head(reader)
    assert hints is not None
    assert hints[0] == "HTTP/1.1 103 Early Hints"
    assert ("Link", "</style.css>; rel=preload") in hints[1]
    assert (await response(reader)).body == b"hinted"

    # The router answers the expectation itself; the instance never sees Expect.
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"body")
    assert (await response(reader)).body == b"body"

    # HTTP/1.0 asking for keep-alive gets it (and says so); without it, the connection closes after the answer.
    writer.write(b"GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    resp = await response(reader)
    assert (resp.status, resp.header("connection")) == (200, "keep-alive")
    writer.write(b"GET /info HTTP/1.0\r\n\r\n")
    resp = await response(reader)
    got = {k.lower(): v for k, v in resp.json()["headers"]}  # type: ignore[union-attr]
    assert got["host"] == f"127.0.0.1:{backends['v1-a'].port}"  # none given: the instance's address
    assert resp.header("connection") == "close"
    assert await reader.read() == b""
    writer.close()
    await teardown(router, backends)


@loop_test(10)
async def test_a_client_that_shuts_its_side_still_gets_its_answer() -> None:
    router, backends = await setup({"v1": 1})
    reader, writer = await raw_connection(router.port)
    writer.write(b"GET /slow?s=0.1 HTTP/1.1\r\nHost: test\r\n\r\nGET /status HTTP/1.1\r\nHost: test\r\n\r\n")
    writer.write_eof()
    assert (await response(reader)).body == b"v1-a"
    assert (await response(reader)).status == 200
    assert await reader.read() == b""  # then the router closes
    writer.close()
    # A client that stops inside its body is gone: nothing is answered, the instance is free again.
    reader, writer = await raw_connection(router.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nonly part")
    writer.write_eof()
    assert await reader.read() == b""
    writer.close()
    await asyncio.sleep(0.05)
    snap = router.snapshot().versions["v1"]
    assert (snap.in_flight, snap.by_code) == (0, {200: 2, 499: 1})
    await teardown(router, backends)


@pytest.mark.parametrize(
    ("message", "status", "text"),
    [
        (b"GET /info HTTP/1.1\r\nHost: test\r\n folded: no\r\n\r\n", 400, "bad header line"),
        (b"GET /info HTTP/1.1\r\nNo colon\r\n\r\n", 400, "bad header line"),
        (b"GET\r\n\r\n", 400, "bad first line"),
        (b"GET /info HTTP/2.0\r\n\r\n", 505, "unsupported protocol 'HTTP/2.0'"),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, "both"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n", 400, "bad Content-Length"),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad chunk size"),
        (b"GET /info HTTP/1.1\r\nX-Big: " + b"x" * 70000 + b"\r\n\r\n", 431, "message head over"),
    ],
)
@loop_test(10)
async def test_malformed_requests_are_refused_and_closed(message: bytes, status: int, text: str) -> None:
    router, backends = await setup({"v1": 1})
    reader, writer = await raw_connection(router.port)
    writer.write(message)
    resp = await response(reader)
    assert resp.status == status
    assert text in resp.body.decode()
    assert resp.header("connection") == "close"
    assert await reader.read() == b""
    writer.close()
    await teardown(router, backends)


@loop_test(10)
async def test_idle_client_connections_are_closed_after_the_idle_timeout() -> None:
    router, backends = await setup({"v1": 1}, idle_timeout=0.2)
    reader, writer = await raw_connection(router.port)
    for _ in range(3):  # activity keeps it open
        writer.write(b"GET /status HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await response(reader)).status == 200
        await asyncio.sleep(0.1)
    writer.write(b"GET /slow?s=0.3 HTTP/1.1\r\nHost: test\r\n\r\n")  # a request longer than the timeout is not cut
    assert (await response(reader)).status == 200
    assert router.snapshot().client_connections == 1
    assert await asyncio.wait_for(reader.read(), 1) == b""
    assert router.snapshot().client_connections == 0
    writer.close()
    await teardown(router, backends)
