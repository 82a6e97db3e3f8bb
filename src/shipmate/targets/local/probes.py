"""Startup, readiness and liveness probes of a local instance, with Kubernetes' semantics.

Two halves, kept apart so that the rules are tested in milliseconds with a fake clock:

- the pure state machine: `begin(...) -> Health`, `due(health, now)`, `observe(health, kind, ok,
  now, message) -> Health`, `next_wakeup(health)`. No I/O, no clock of its own: time comes in as
  `now` (seconds on a monotonic scale);
- the I/O: `check()` runs one probe (HTTP GET with 2xx/3xx = ok, TCP connect, or a command that
  must exit 0, run with the instance's environment), each bounded by the probe's timeout; `Prober`
  runs the state machine against a live instance on an asyncio loop.

Rules (as the kubelet applies them): while a startup probe has not passed, readiness and liveness
are not run; readiness and liveness start `initialDelaySeconds` after the process started (and not
before startup passed); `failureThreshold` consecutive failures of startup or liveness mean the
instance must be restarted (`alive` becomes false, for good); readiness flips to ready after
`successThreshold` consecutive successes and back after `failureThreshold` consecutive failures.
With no readiness probe an instance is ready once started; with no liveness probe it is alive while
its process runs. One local difference: until a new process has been ready once, a failed readiness
probe is retried after `FIRST_READY_POLL` seconds rather than a whole period, so that `up` and a
rollout do not wait ten seconds for a process that was listening a moment after the first try
(readiness only gates traffic, so probing sooner changes no outcome, only its timing).

Called by the supervisor (one `Prober` per running process). It must not restart or signal the
instance itself: it only reports; the supervisor acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from shipmate.errors import truncate
from shipmate.plan.models import ProbePlan

Kind = Literal["startup", "readiness", "liveness"]
KINDS: tuple[Kind, ...] = ("startup", "readiness", "liveness")
FIRST_READY_POLL = 0.1  # seconds between readiness probes until a new process is first ready


# --- the pure state machine ---------------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """When and how often a probe runs, and how many results in a row decide."""

    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1

    @classmethod
    def of(cls, probe: ProbePlan) -> Timings:
        return cls(initial_delay=float(probe.initial_delay_seconds), period=float(max(probe.period_seconds, 1)),
                   timeout=float(max(probe.timeout_seconds, 1)), failure_threshold=max(probe.failure_threshold, 1),
                   success_threshold=max(probe.success_threshold, 1))


@dataclass(frozen=True)
class ProbeState:
    timings: Timings
    next_due: float
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    last_message: str = ""


@dataclass(frozen=True)
class Health:
    """What the probes have established about one process so far."""

    started_at: float
    startup: ProbeState | None
    readiness: ProbeState | None
    liveness: ProbeState | None
    started: bool
    ready: bool
    alive: bool
    reason: str = ""  # why not alive (or, while alive, why not ready)
    been_ready: bool = False  # ready at least once since the process started

    def probe(self, kind: Kind) -> ProbeState | None:
        state: ProbeState | None = getattr(self, kind)
        return state


def _with(health: Health, kind: Kind, state: ProbeState) -> Health:
    if kind == "startup":
        return replace(health, startup=state)
    if kind == "readiness":
        return replace(health, readiness=state)
    return replace(health, liveness=state)


def begin(now: float, *, startup: Timings | None = None, readiness: Timings | None = None,
          liveness: Timings | None = None) -> Health:
    """The health of a process that started at `now`."""

    def state(t: Timings | None) -> ProbeState | None:
        return None if t is None else ProbeState(timings=t, next_due=now + t.initial_delay)

    started = startup is None
    ready = started and readiness is None
    return Health(started_at=now, startup=state(startup), readiness=state(readiness), liveness=state(liveness),
                  started=started, ready=ready, been_ready=ready, alive=True,
                  reason="" if started else "waiting for the startup probe")


def _active(health: Health) -> tuple[Kind, ...]:
    if not health.alive:
        return ()
    if not health.started:
        return ("startup",)
    return tuple(k for k in ("readiness", "liveness") if health.probe(k) is not None)


def due(health: Health, now: float) -> tuple[Kind, ...]:
    """The probes to run at `now`."""
    result: list[Kind] = []
    for kind in _active(health):
        state = health.probe(kind)
        if state is not None and state.next_due <= now:
            result.append(kind)
    return tuple(result)


def next_wakeup(health: Health) -> float | None:
    """When the next probe is due, or None when there is nothing more to run."""
    times = [s.next_due for k in _active(health) if (s := health.probe(k)) is not None]
    return min(times) if times else None


def observe(health: Health, kind: Kind, ok: bool, now: float, message: str = "") -> Health:
    """Fold one probe result in. A result for a probe that is not active is ignored."""
    state = health.probe(kind)
    if state is None or kind not in _active(health):
        return health
    t = state.timings
    if ok:
        state = replace(state, successes=state.successes + 1, failures=0, last_message="")
    else:
        state = replace(state, successes=0, failures=state.failures + 1, last_message=message)
    period = t.period
    if kind == "readiness" and not ok and not health.been_ready:
        period = min(period, FIRST_READY_POLL)  # a process coming up is probed briskly until first ready
    state = replace(state, next_due=now + period)
    health = _with(health, kind, state)
    if kind == "startup":
        if ok:  # the startup probe's success threshold is always 1
            for later in ("readiness", "liveness"):
                if (other := health.probe(later)) is not None:
                    health = _with(health, later, replace(other, next_due=max(other.next_due, now)))
            no_readiness = health.readiness is None
            health = replace(health, started=True, ready=no_readiness, been_ready=no_readiness, reason="")
        elif state.failures >= t.failure_threshold:
            health = replace(health, alive=False, ready=False,
                             reason=f"startup probe failed {state.failures} times: {message}")
    elif kind == "liveness":
        if not ok and state.failures >= t.failure_threshold:
            health = replace(health, alive=False, ready=False,
                             reason=f"liveness probe failed {state.failures} times: {message}")
    elif ok and state.successes >= t.success_threshold:
        health = replace(health, ready=True, been_ready=True, reason="")
    elif not ok and state.failures >= t.failure_threshold:
        health = replace(health, ready=False, reason=f"readiness probe failed: {message}")
    elif not ok and not health.ready:
        health = replace(health, reason=f"readiness probe failed: {message}")
    return health


# --- the I/O --------------------------------------------------------------------------------


class SpawnTracker(Protocol):
    """Told about every process group a probe starts, so that a crash of shipmate can't orphan it."""

    def spawned(self, pid: int, what: str) -> None: ...

    def reaped(self, pid: int) -> None: ...


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe reaches one instance: its host, declared port -> local port, env and cwd."""

    host: str
    ports: Mapping[int, int]
    primary_port: int | None
    env: Mapping[str, str]
    cwd: Path | None = None

    def port_for(self, declared: int | None) -> int | None:
        if declared is None:
            return self.primary_port
        return self.ports.get(declared, declared)


@dataclass(frozen=True)
class Result:
    ok: bool
    message: str = ""


async def check(probe: ProbePlan, target: ProbeTarget, *, tracker: SpawnTracker | None = None) -> Result:
    """Run one probe once, bounded by its timeout; never raises for a failing service, only reports."""
    limit = float(max(probe.timeout_seconds, 1))
    if probe.check == "exec":
        return await _exec(probe.command, target, limit, tracker)
    port = target.port_for(probe.port)
    if port is None:
        return Result(False, "the probe names no port and the instance has none")
    try:
        async with asyncio.timeout(limit):
            if probe.check == "tcp":
                return await _tcp(target.host, port)
            return await _http(target.host, port, probe.path or "/")
    except TimeoutError:
        return Result(False, f"{probe.check} probe on port {port} timed out after {limit:g}s")
    except OSError as exc:
        return Result(False, f"{probe.check} probe on port {port}: {exc.strerror or exc}")


async def _tcp(host: str, port: int) -> Result:
    _reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Result(True)


async def _http(host: str, port: int, path: str) -> Result:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: shipmate-probe\r\n"
                     f"Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        answer = truncate(line.decode("latin-1"), 60)
        return Result(False, f"GET {path} on port {port}: not an HTTP response ({answer!r})")
    status = int(parts[1])
    if 200 <= status < 400:
        return Result(True)
    return Result(False, f"GET {path} on port {port}: HTTP {status}")


async def _exec(command: tuple[str, ...], target: ProbeTarget, limit: float,
                tracker: SpawnTracker | None) -> Result:
    if not command:
        return Result(False, "exec probe without a command")
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, env=dict(target.env), cwd=target.cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return Result(False, f"exec probe {command[0]!r}: {exc.strerror or exc}")
    if tracker is not None:
        tracker.spawned(proc.pid, f"exec probe {command[0]}")
    try:
        async with asyncio.timeout(limit):
            output, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return Result(False, f"exec probe {command[0]!r} timed out after {limit:g}s")
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever the command left behind
            os.killpg(proc.pid, signal.SIGKILL)
        if tracker is not None:
            tracker.reaped(proc.pid)
    if proc.returncode == 0:
        return Result(True)
    tail = output.decode("utf-8", "replace").strip().splitlines()[-1:] if output else []
    detail = f": {truncate(tail[0], 120)}" if tail else ""
    return Result(False, f"exec probe {command[0]!r} exited with {proc.returncode}{detail}")


class Prober:
    """Runs the probes of one process until it is found not alive (or the task is cancelled).

    `on_change(health)` is called whenever ready, alive or started changes. `clock` is a monotonic
    clock in seconds; the loop sleeps on asyncio with real time.
    """

    def __init__(self, target: ProbeTarget, *, startup: ProbePlan | None = None,
                 readiness: ProbePlan | None = None, liveness: ProbePlan | None = None,
                 on_change: Callable[[Health], None] | None = None, tracker: SpawnTracker | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        given: tuple[tuple[Kind, ProbePlan | None], ...] = (
            ("startup", startup), ("readiness", readiness), ("liveness", liveness))
        self.plans: dict[Kind, ProbePlan] = {k: p for k, p in given if p is not None}
        self._on_change = on_change
        self._tracker = tracker
        self._clock = clock
        self.health = begin(clock(), startup=self._timings("startup"), readiness=self._timings("readiness"),
                            liveness=self._timings("liveness"))

    def _timings(self, kind: Kind) -> Timings | None:
        plan = self.plans.get(kind)
        return None if plan is None else Timings.of(plan)

    async def run(self) -> Health:
        """Probe until the process must be restarted; returns that final health."""
        self._changed(None)
        while self.health.alive:
            now = self._clock()
            kinds = due(self.health, now)
            if kinds:
                results = await asyncio.gather(*(check(self.plans[k], self.target, tracker=self._tracker)
                                                 for k in kinds))
                before = self.health
                done = self._clock()
                for kind, result in zip(kinds, results, strict=True):
                    self.health = observe(self.health, kind, result.ok, done, result.message)
                self._changed(before)
                continue
            wake = next_wakeup(self.health)
            if wake is None:
                await asyncio.Event().wait()  # nothing to probe: alive while the process runs
            await asyncio.sleep(max(0.0, min((wake or now) - now, 1.0)))
        return self.health

    def _changed(self, before: Health | None) -> None:
        h = self.health
        if self._on_change is not None and (before is None or (before.ready, before.alive, before.started,
                                                                before.reason) != (h.ready, h.alive, h.started,
                                                                                   h.reason)):
            self._on_change(h)
