"""Benchmark of the local router: requests/s and p50/p99 latency through shipmate's router, directly to
the backend, and through HAProxy in front of the same backend, in one run, on loopback.

Run with `.venv/bin/python benchmarks/router.py` (`make bench`). It writes the `## router` section of
benchmarks/RESULTS.md and leaves every other section alone. HAProxy comes from the Debian package
`haproxy`: installed with apt-get when this runs as root and it is missing (like
scripts/system-deps.sh does for prometheus); the tests never need it.

Processes: the backend (a small asyncio HTTP/1.1 keep-alive server), the router (one shipmate
Router in its own process), HAProxy, and the load generator (this process), each on loopback.
Two loads per path: a paced one (a fixed number of requests at a fixed rate, open loop: request i
is sent at start + i/rate on a free keep-alive connection, latency from send to last byte) and an
unthrottled one (C connections sending back to back for N requests in all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from results import replace_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RESPONSE_BODY = b"ok " * 40 + b"\n"
REQUEST = b"GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: shipmate-bench\r\n\r\n"


# --- the backend and the router, each run as its own process ------------------------------------


class _BackendProtocol(asyncio.Protocol):
    """Answers every GET with the same small body, keep-alive; requests have no body."""

    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b" % (
        len(RESPONSE_BODY),
        RESPONSE_BODY,
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            self.buffer = self.buffer[end + 4 :]
            self.transport.write(self.response)


async def serve_backend(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_BackendProtocol, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def serve_router(port: int, backend_port: int) -> None:
    from shipmate.targets.local.router import Router
    from shipmate.targets.local.routing import Backend

    router = Router("bench", "127.0.0.1", port)
    router.add(Backend("bench-0", "v1", "127.0.0.1", backend_port))
    router.set_weights({"v1": 100})
    await router.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- the load generator -------------------------------------------------------------------------


class _ClientProtocol(asyncio.Protocol):
    """One keep-alive connection: `request()` sends one GET and completes with its latency."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[float] | None = None
        self.sent = 0.0
        self.need = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def request(self) -> asyncio.Future[float]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent = time.perf_counter()
        self.transport.write(REQUEST)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(f"bad response {head[:40]!r}")
            self.need = end + 4 + length
        if len(self.buffer) >= self.need:
            self.buffer = self.buffer[self.need :]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(time.perf_counter() - self.sent)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))


@dataclass
class Result:
    requests: int
    seconds: float
    latencies: list[float]
    proxy_cpu: float | None = None  # CPU seconds the proxy process used for these requests

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _connect(port: int, n: int) -> list[_ClientProtocol]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(n):
        _, proto = await loop.create_connection(_ClientProtocol, "127.0.0.1", port)
        conns.append(proto)
    for proto in conns:  # warm the path (and the router's upstream pool) up
        await proto.request()
    return conns


async def paced(port: int, rate: float, total: int, connections: int) -> Result:
    conns = await _connect(port, connections)
    free: asyncio.Queue[_ClientProtocol] = asyncio.Queue()
    for proto in conns:
        free.put_nowait(proto)
    latencies: list[float] = []

    async def one(proto: _ClientProtocol) -> None:
        latencies.append(await proto.request())
        free.put_nowait(proto)

    tasks = []
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(await free.get())))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    for proto in conns:
        proto.transport.close()
    return Result(total, seconds, latencies)


async def unthrottled(port: int, total: int, connections: int) -> Result:
    conns = await _connect(port, connections)
    latencies: list[float] = []
    left = total

    async def loop(proto: _ClientProtocol) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            latencies.append(await proto.request())

    start = time.perf_counter()
    await asyncio.gather(*(loop(p) for p in conns))
    seconds = time.perf_counter() - start
    for proto in conns:
        proto.transport.close()
    return Result(total, seconds, latencies)


# --- the run ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def ensure_haproxy() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("haproxy is missing; install it with: sudo apt-get install -y haproxy")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "haproxy"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


HAPROXY_CONFIG = """
global
    maxconn 1000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend bench
    bind 127.0.0.1:{port}
    default_backend instance
backend instance
    server instance-0 127.0.0.1:{backend_port}
"""


def haproxy_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0].replace("HAProxy version ", "").split(" ")[0] or "?"


def machine() -> str:
    cpu = "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else "?"
    system = f"{platform.system()} {platform.release()}"
    return f"nproc {len(os.sched_getaffinity(0))} ({cpu}), {system}, Python {platform.python_version()}"




def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def run(args: argparse.Namespace) -> str:
    haproxy = ensure_haproxy()
    load_before = os.getloadavg()[0]
    backend_port, router_port, haproxy_port = free_port(), free_port(), free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=haproxy_port, backend_port=backend_port))
        try:
            procs.append(subprocess.Popen([*me, "serve-backend", str(backend_port)], stdout=subprocess.DEVNULL))
            wait_port(backend_port, procs[-1])
            procs.append(
                subprocess.Popen([*me, "serve-router", str(router_port), str(backend_port)], stdout=subprocess.DEVNULL)
            )
            wait_port(router_port, procs[-1])
            procs.append(subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL))
            wait_port(haproxy_port, procs[-1])
            paths = {"direct to the backend": backend_port, "shipmate router": router_port, "HAProxy": haproxy_port}
            proxies = {"shipmate router": procs[1].pid, "HAProxy": procs[2].pid}
            results: dict[str, tuple[Result, Result]] = {}
            for name, port in paths.items():
                # Alternate rounds would be fairer to drift; one round each keeps the run short.
                rated = asyncio.run(paced(port, args.rate, args.paced_requests, args.connections))
                proxy = proxies.get(name)
                before = cpu_seconds(proxy) if proxy else 0.0
                flat = asyncio.run(unthrottled(port, args.requests, args.connections))
                if proxy:
                    # Less at the mercy of other jobs than req/s: what the proxy itself spent per request.
                    flat.proxy_cpu = cpu_seconds(proxy) - before
                results[name] = (rated, flat)
                print(
                    f"{name}: paced p50 {ms(rated.quantile(0.5))} p99 {ms(rated.quantile(0.99))}; "
                    f"unthrottled {flat.rate:,.0f} req/s p50 {ms(flat.quantile(0.5))} p99 {ms(flat.quantile(0.99))}"
                    f" proxy CPU {per_request(flat)}/req",
                    file=sys.stderr,
                )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return report(args, results, haproxy_version(haproxy), load_before, os.getloadavg()[0])


def report(
    args: argparse.Namespace, results: dict[str, tuple[Result, Result]], haproxy: str, before: float, after: float
) -> str:
    direct, router, ha = (results[k] for k in ("direct to the backend", "shipmate router", "HAProxy"))
    added_p99 = router[0].quantile(0.99) - direct[0].quantile(0.99)
    added_p50 = router[0].quantile(0.5) - direct[0].quantile(0.5)
    share = router[1].rate / ha[1].rate
    rows = []
    for name, (rated, flat) in results.items():
        rows.append(
            f"| {name} | {ms(rated.quantile(0.5))} | {ms(rated.quantile(0.99))} | {flat.rate:,.0f} | "
            f"{ms(flat.quantile(0.5))} | {ms(flat.quantile(0.99))} | {per_request(flat)} |"
        )
    today = datetime.now(UTC).date().isoformat()
    met = "**missed**" if added_p99 >= 0.002 else "met" if added_p99 >= 0 else "inconclusive (direct was slower)"
    met_share = "met" if share >= 0.5 else "**missed**"
    return f"""## router

Reproduce with `.venv/bin/python benchmarks/router.py` (part of `make bench`); measured {today}, one run.

Machine: {machine()}, HAProxy {haproxy}; 1-minute load average {before:.2f} before the run, {after:.2f} after.

Setup, all on 127.0.0.1, each in its own process: a small asyncio HTTP/1.1 backend answering every
`GET` with 121 bytes (keep-alive); shipmate's `Router` with that one instance; HAProxy
(`mode http`, `http-reuse always`, default threads) in front of the same backend; and the load
generator (asyncio, keep-alive connections). Paced: {args.paced_requests:,} requests at {args.rate:g}
req/s, open loop over {args.connections} connections, latency from sending a request to its last
byte. Unthrottled: {args.requests:,} requests, back to back on {args.connections} connections.
The machine's two cores are shared by the load generator, the backend and the proxy, so the
unthrottled figures are what the three of them reach together, not the proxy alone. The last
column is the CPU time (user + system, from /proc) the proxy process spent per request in the
unthrottled run: it depends much less than req/s on what else the machine is doing.

| path | paced p50 | paced p99 | unthrottled req/s | unthrottled p50 | unthrottled p99 | proxy CPU per request |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

{busy_note(before, after)}Goals:
- p99 added latency under 2 ms at {args.rate:g} req/s: {met} (p99 {ms(router[0].quantile(0.99))} through the router
  vs {ms(direct[0].quantile(0.99))} direct, +{ms(added_p99)}; p50 +{ms(added_p50)}).
- at least half of HAProxy's throughput: {met_share} ({router[1].rate:,.0f} vs {ha[1].rate:,.0f} req/s, {share:.0%}).
"""


def per_request(result: Result) -> str:
    if result.proxy_cpu is None:
        return "-"
    return f"{result.proxy_cpu / result.requests * 1e6:.1f} µs"


def busy_note(before: float, after: float) -> str:
    if max(before, after) <= 1.5:
        return ""
    return (
        f"**The machine was busy during this run** (load average {before:.2f} / {after:.2f} on 2 cores, other jobs\n"
        "running): tail latencies and throughput swing by several times between runs like this one, so these\n"
        "figures are not a fair verdict; rerun on a quiet machine.\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    backend = sub.add_parser("serve-backend")
    backend.add_argument("port", type=int)
    router = sub.add_parser("serve-router")
    router.add_argument("port", type=int)
    router.add_argument("backend_port", type=int)
    parser.add_argument("--rate", type=float, default=500.0, help="paced requests per second (500)")
    parser.add_argument("--paced-requests", type=int, default=5000, help="requests in the paced run (5000)")
    parser.add_argument("--requests", type=int, default=30000, help="requests in the unthrottled run (30000)")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections (16)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file to update")
    parser.add_argument("--print", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    if args.command == "serve-backend":
        asyncio.run(serve_backend(args.port))
        return
    if args.command == "serve-router":
        asyncio.run(serve_router(args.port, args.backend_port))
        return
    section = run(args)
    if args.print:
        print(section)
        return
    text = args.results.read_text(encoding="utf-8") if args.results.exists() else ""
    args.results.write_text(replace_section(text, "router", section), encoding="utf-8")
    print(section)
    print(f"wrote the router section of {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
