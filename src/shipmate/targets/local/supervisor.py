"""The process supervisor of the local target: runs service instances, keeps them up, stops them
without leaving anything behind.

Who calls it: the local target (`shipmate up` runs one `Supervisor` in its background process, next
to the routers, on one asyncio loop); `recover()` is called once at start-up by every command that
changes what runs, before anything new is started.

What it does, per instance (`LaunchSpec`, built from a plan `Workload` by `launch_spec`):

- delivers config files and secret files under `<state>/instances/<id>/` (see `files.py`);
- starts the command (`run`; a string goes through `/bin/sh -c`) in its working directory, in a
  new session (so its own process group), with a small base environment (PATH, HOME, locale...),
  the non-secret config, env-delivered secrets (only those the spec asks for as env, like the
  Kubernetes output does), `PORT` (the instance's own free port; `PORT_<NAME>` for each declared
  port), `APP_VERSION`, `SHIPMATE_INSTANCE`, `SHIPMATE_SERVICE`, `SHIPMATE_SECRETS_DIR` and
  `SHIPMATE_CONFIG_DIR`; when shipmate runs in a virtualenv, its `bin` comes first on PATH (so that
  `run: python3 -m app` finds the packages installed beside shipmate);
  a config file declared at `/etc/app/x.yaml` is at `$SHIPMATE_CONFIG_DIR/etc/app/x.yaml`;
- captures stdout and stderr line by line into `<state>/logs/<id>.log`, each line prefixed with
  time, instance id and stream, and keeps the last lines in memory for error messages;
- runs startup, readiness and liveness probes (`probes.py`); readiness is what `ready` reports;
- restarts the process when it exits or fails liveness, after an exponential back-off (0.5 s
  doubling to 30 s; the count starts again after a run that lasted `reset_after` seconds), and
  counts restarts;
- stops gracefully: SIGTERM to the whole process group, up to the grace period for the whole
  group to leave, then SIGKILL of the group. When the main process dies on its own, what is left
  of its group is killed at once (as a container's other processes die with its PID 1).

Orphans: every process group it starts (services and exec probes) is recorded with its pgid and
the start time of its leader (field 22 of `/proc/<pid>/stat`) and the boot id in
`<state>/processes.json`, rewritten atomically on each change. If shipmate is SIGKILLed, the next
`recover()` kills every recorded group still alive, checking identity first so that a recycled
pid is never touched. A process that leaves its group on purpose (`setsid` in a daemonising
service) is outside this net; processes run under a service should not daemonise.

Concurrency: asyncio, one task per instance plus its probe and log tasks; the public coroutine
methods must be called on the loop that runs the supervisor. One supervisor per state directory
(the caller holds the state lock).

It must not: decide how many instances run or which version (the engine does), route traffic
(the router does), log or echo a config or secret value, or kill a process it cannot prove it
started.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TextIO

from shipmate.errors import InternalError, NotFound, SpecError, TemporaryError, UsageError
from shipmate.files import atomic_write
from shipmate.plan.models import ProbePlan, Workload
from shipmate.targets.local import files
from shipmate.targets.local.ports import free_port
from shipmate.targets.local.probes import Health, Prober, ProbeTarget

log = logging.getLogger(__name__)

REGISTRY = "processes.json"
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
_POLL = 0.05


# --- what to run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchSpec:
    """One instance to run: everything the supervisor needs, nothing it must look up."""

    id: str
    service: str
    version: str
    argv: tuple[str, ...]
    workdir: Path | None = None
    env: tuple[tuple[str, str], ...] = ()  # non-secret config and APP_VERSION
    secret_env: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    ports: tuple[tuple[str, int], ...] = ()  # declared (name, container port); the first is PORT
    startup: ProbePlan | None = None
    readiness: ProbePlan | None = None
    liveness: ProbePlan | None = None
    grace_seconds: float = 30.0
    config_files: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)  # absolute path -> content
    secret_files: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)  # file name -> content


def command_of(workload: Workload) -> tuple[str, ...]:
    """The argv that starts a workload locally: `run` (a string through /bin/sh -c), else the
    image's command and args."""
    if isinstance(workload.run, str):
        return ("/bin/sh", "-c", workload.run)
    if workload.run:
        return tuple(workload.run)
    if workload.command:
        return (*workload.command, *workload.args)
    raise SpecError("the local target needs the command that starts this service (e.g. run: python app.py)",
                    path=f"services.{workload.name}.run")


def launch_spec(workload: Workload, *, instance_id: str, base_dir: Path, secret_values: Mapping[str, bytes],
                version: str | None = None, secret_files: Mapping[str, bytes] | None = None) -> LaunchSpec:
    """The LaunchSpec of one instance of a workload. Pure. `base_dir` is where the spec file lives
    (a relative workdir is taken from there); `secret_values` maps secret name -> current value;
    `secret_files`, when given, is the whole set of files of the secrets directory (else one file
    per file mount, holding its current value)."""
    version = version or workload.tag
    workdir = base_dir if workload.workdir is None else (base_dir / workload.workdir)
    missing = sorted({m.secret for m in workload.secrets} - set(secret_values))
    if missing:
        raise NotFound(f"service {workload.name}: no value for secret(s) {', '.join(missing)}; "
                       "set or generate them first")
    return LaunchSpec(
        id=instance_id, service=workload.name, version=version, argv=command_of(workload), workdir=workdir,
        env=(*workload.config, ("APP_VERSION", version)),
        secret_env=tuple((m.env, secret_values[m.secret]) for m in workload.env_secrets),
        ports=tuple((p.name, p.port) for p in workload.ports),
        startup=workload.startup, readiness=workload.readiness, liveness=workload.liveness,
        grace_seconds=float(workload.termination_grace_seconds),
        config_files=tuple((path, content.encode()) for path, content in workload.config_files),
        secret_files=tuple(secret_files.items()) if secret_files is not None else
        tuple((m.file, secret_values[m.secret]) for m in workload.file_secrets),
    )


def instance_environment(spec: LaunchSpec, *, primary_port: int | None, port_names: Mapping[str, int],
                         directory: Path) -> dict[str, str]:
    """The environment of an instance's processes (and of `shipmate exec` into it). It holds the
    env-delivered secrets: never log it."""
    env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    if sys.prefix != sys.base_prefix:  # shipmate runs in a virtualenv: so do its Python services
        env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", os.defpath)])
        env["VIRTUAL_ENV"] = sys.prefix
    env["PYTHONUNBUFFERED"] = "1"  # so that a Python service's log lines arrive as they are written
    env.update(spec.env)
    env.update((k, v.decode("utf-8", "surrogateescape")) for k, v in spec.secret_env)
    if primary_port is not None:
        env["PORT"] = str(primary_port)
    for name, port in port_names.items():
        env[f"PORT_{name.upper().replace('-', '_')}"] = str(port)
    env["APP_VERSION"] = spec.version
    env["SHIPMATE_INSTANCE"] = spec.id
    env["SHIPMATE_SERVICE"] = spec.service
    env["SHIPMATE_SECRETS_DIR"] = str(directory / "secrets")
    env["SHIPMATE_CONFIG_DIR"] = str(directory / "config")
    return env


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number n of a crash loop: initial * factor**(n-1), at most `maximum`.
    A run that lasted at least `reset_after` seconds starts the count again."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def delay(self, consecutive: int) -> float:
        return min(self.maximum, self.initial * self.factor ** max(consecutive - 1, 0))


# --- process identity and the registry of process groups ---------------------------------------


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    pgrp: int
    start_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    """Fields of /proc/<pid>/stat, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    # rest[0] is field 3 (state); pgrp is field 5, starttime field 22
    return ProcStat(pid=pid, state=rest[0], pgrp=int(rest[2]), start_ticks=int(rest[19]))


def _living(stat: ProcStat | None) -> bool:
    return stat is not None and stat.state not in {"Z", "X"}


def group_members(pgid: int) -> list[ProcStat]:
    """The living (not zombie) processes whose process group is `pgid`."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if _living(stat) and stat is not None and stat.pgrp == pgid:
                members.append(stat)
    return members


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class GroupRecord:
    pgid: int
    start_ticks: int
    what: str


class ProcessRegistry:
    """The process groups this state directory's supervisor has running, kept on disk.

    Written without fsync on purpose: it only has to survive a crash of shipmate (the page cache
    keeps it), and after a crash of the machine the processes are gone too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._groups: dict[int, GroupRecord] = {}

    def spawned(self, pid: int, what: str) -> None:
        stat = proc_stat(pid)
        self._groups[pid] = GroupRecord(pgid=pid, start_ticks=stat.start_ticks if stat else -1, what=what)
        self._write()

    def reaped(self, pid: int) -> None:
        if self._groups.pop(pid, None) is not None:
            self._write()

    def _write(self) -> None:
        data = {"version": 1, "boot_id": boot_id(),
                "groups": [{"pgid": g.pgid, "start_ticks": g.start_ticks, "what": g.what}
                           for g in sorted(self._groups.values(), key=lambda g: g.pgid)]}
        atomic_write(self.path, json.dumps(data, indent=1) + "\n", mode=0o600, sync=False)

    def recorded(self) -> list[GroupRecord]:
        """What the file says (from an earlier run, possibly of a killed shipmate)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            log.warning("ignoring an unreadable process registry %s", self.path)
            return []
        if data.get("boot_id") != boot_id():
            return []  # the machine restarted since: none of these processes exists any more
        return [GroupRecord(pgid=int(g["pgid"]), start_ticks=int(g["start_ticks"]), what=str(g["what"]))
                for g in data.get("groups", [])]

    def sweep(self, grace: float = 5.0) -> list[GroupRecord]:
        """Stop every recorded group that is still alive: SIGTERM, up to `grace` seconds, SIGKILL.
        Returns the groups that were found alive. The file is emptied afterwards."""
        found: dict[int, tuple[GroupRecord, list[ProcStat]]] = {}
        for record in self.recorded():
            members = _ours(record)
            if members:
                found[record.pgid] = (record, members)
        alive = [record for record, _ in found.values()]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for record, members in found.values():
                _signal_members(record, members, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(_ours(r) for r, _ in found.values()):
                time.sleep(_POLL)
            found = {pgid: (r, m) for pgid, (r, _) in found.items() if (m := _ours(r))}
            if not found:
                break
        self._groups.clear()
        self._write()
        return alive


def _ours(record: GroupRecord) -> list[ProcStat]:
    """The living members of a recorded group that provably belong to it.

    While any process is in group P, the number P cannot be given to a new process; so if P's
    leader is alive with the recorded start time, or P has no leader at all, the members of group
    P are ours. If a process with pid P exists with another start time, the number was recycled:
    nothing of it is ours. Members must also be no older than the recorded leader.
    """
    leader = proc_stat(record.pgid)
    if leader is not None and leader.start_ticks != record.start_ticks:
        return []
    return [m for m in group_members(record.pgid) if m.start_ticks >= record.start_ticks]


def _signal_members(record: GroupRecord, members: list[ProcStat], sig: signal.Signals) -> None:
    leader = proc_stat(record.pgid)
    if leader is not None and leader.start_ticks == record.start_ticks and _living(leader):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pgid, sig)
        return
    for member in members:  # no leader: signal each proven member by pid, rechecking identity
        again = proc_stat(member.pid)
        if again is not None and again.start_ticks == member.start_ticks and again.pgrp == record.pgid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member.pid, sig)


# --- observations ------------------------------------------------------------------------------

State = Literal["starting", "running", "backoff", "stopping", "stopped"]


@dataclass(frozen=True)
class InstanceObservation:
    """What is known about one instance now. `last_exit_code` is negative for a signal (-9 = SIGKILL)."""

    id: str
    service: str
    version: str
    state: State
    pid: int | None
    port: int | None
    ports: tuple[tuple[str, int], ...]
    ready: bool
    alive: bool
    restarts: int
    last_exit_code: int | None
    last_reason: str
    backoff_seconds: float
    log_path: Path
    last_lines: tuple[str, ...]


@dataclass
class _Instance:
    spec: LaunchSpec
    ports: dict[int, int]  # declared -> local
    port_names: dict[str, int]  # name -> local
    directory: Path
    log_path: Path
    lines: deque[str]
    state: State = "starting"
    proc: asyncio.subprocess.Process | None = None
    health: Health | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_reason: str = ""
    backoff_seconds: float = 0.0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    log_file: TextIO | None = None
    notified: tuple[str, bool, bool] | None = None  # (state, ready, alive) last told to on_change

    @property
    def primary_port(self) -> int | None:
        return self.ports[self.spec.ports[0][1]] if self.spec.ports else None


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    """The exit code, as soon as the process has exited. Not `proc.wait()`: on Python 3.11 that
    returns only once the process's pipes are closed too, which a child of a `/bin/sh -c` (or any
    process of the group) can keep open after the main process died."""
    while proc.returncode is None:  # noqa: ASYNC110 - the exit is only visible as returncode
        await asyncio.sleep(_POLL)
    return proc.returncode


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


# --- the supervisor ---------------------------------------------------------------------------


class Supervisor:
    """Runs and watches instances; see the module docstring."""

    def __init__(self, state_dir: Path, *, backoff: Backoff | None = None, host: str = "127.0.0.1",
                 log_lines: int = 100, on_change: Callable[[InstanceObservation], None] | None = None) -> None:
        """`on_change` is called on the loop, at once, whenever an instance's state, readiness or
        liveness changes (the local target keeps its routers in step with it)."""
        self.state_dir = state_dir
        self.backoff = backoff or Backoff()
        self.host = host
        self.log_lines = log_lines
        self.on_change = on_change
        self.registry = ProcessRegistry(state_dir / REGISTRY)
        self._instances: dict[str, _Instance] = {}

    # -- after a crash

    def recover(self, grace: float = 5.0) -> list[GroupRecord]:
        """Stop whatever an earlier, killed supervisor of this state directory left running. Call
        before starting anything; returns the groups that were still alive."""
        if not self.registry.path.exists():
            return []
        alive = self.registry.sweep(grace)
        for record in alive:
            log.info("stopped a leftover process group %d (%s)", record.pgid, record.what)
        return alive

    # -- starting and stopping

    async def start(self, spec: LaunchSpec) -> None:
        """Start one instance (returns once its first process is launched, not when ready)."""
        if spec.id in self._instances:
            raise UsageError(f"instance {spec.id} is already supervised")
        if not spec.argv:
            raise UsageError(f"instance {spec.id} has no command")
        ports: dict[int, int] = {}
        names: dict[str, int] = {}
        for name, declared in spec.ports:
            try:
                local = free_port(self.host)
            except OSError as exc:
                raise TemporaryError(f"instance {spec.id}: {exc}", delay=1.0) from exc
            ports[declared] = local
            names[name] = local
        root = self.state_dir / "instances"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(mode=0o700, exist_ok=True)
        inst = _Instance(spec=spec, ports=ports, port_names=names, directory=root / spec.id,
                         log_path=self.state_dir / "logs" / f"{spec.id}.log", lines=deque(maxlen=self.log_lines))
        self._deliver(inst, config=spec.config_files, secrets=spec.secret_files)
        self._instances[spec.id] = inst
        launched = asyncio.Event()
        inst.task = asyncio.create_task(self._run(inst, launched), name=f"instance {spec.id}")
        await launched.wait()

    async def stop(self, instance_id: str, *, grace: float | None = None, keep_files: bool = False) -> None:
        """Stop an instance gracefully and forget it; its secret and config files are removed."""
        inst = self._get(instance_id)
        if grace is not None:
            inst.spec = replace(inst.spec, grace_seconds=grace)
        inst.stopping.set()
        if inst.task is not None:
            await inst.task
        del self._instances[instance_id]
        if not keep_files:
            files.remove(inst.directory)

    async def shutdown(self, *, grace: float | None = None) -> None:
        """Stop every instance at once (each with its own grace period unless `grace` is given)."""
        await asyncio.gather(*(self.stop(i, grace=grace) for i in list(self._instances)))

    def update_files(self, instance_id: str, *, secrets: Iterable[tuple[str, bytes]] | None = None,
                     config: Iterable[tuple[str, bytes]] | None = None,
                     secret_env: Iterable[tuple[str, bytes]] | None = None) -> None:
        """Swap in new secret and/or config files for a running instance (no restart); new
        env-delivered secret values are what its next start (a restart) gets."""
        inst = self._get(instance_id)
        secrets = None if secrets is None else tuple(secrets)
        config = None if config is None else tuple(config)
        self._deliver(inst, config=config, secrets=secrets)
        inst.spec = replace(inst.spec, secret_files=inst.spec.secret_files if secrets is None else secrets,
                            config_files=inst.spec.config_files if config is None else config,
                            secret_env=inst.spec.secret_env if secret_env is None else tuple(secret_env))

    # -- observing

    def observe(self) -> list[InstanceObservation]:
        return [self._observation(inst) for inst in sorted(self._instances.values(), key=lambda i: i.spec.id)]

    def instance(self, instance_id: str) -> InstanceObservation:
        return self._observation(self._get(instance_id))

    def environment(self, instance_id: str) -> dict[str, str]:
        """The environment an instance's process gets (for `shipmate exec`); holds env-delivered
        secrets, so never log it."""
        return self._environment(self._get(instance_id))

    async def wait_ready(self, instance_ids: Iterable[str], within: float) -> None:
        """Return once every named instance is ready; TemporaryError naming the first one that is
        not, with its last reason and log lines, after `within` seconds."""
        ids = list(instance_ids)
        deadline = time.monotonic() + within
        while True:
            waiting = [i for i in ids if not self._observation(self._get(i)).ready]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                obs = self.instance(waiting[0])
                tail = "\n".join(f"  {line}" for line in obs.last_lines[-10:])
                raise TemporaryError(f"instance {obs.id} not ready after {within:g}s ({obs.state}, "
                                     f"restarts {obs.restarts}): {obs.last_reason or 'no reason known'}"
                                     + (f"\nlast log lines:\n{tail}" if tail else ""), delay=1.0)
            await asyncio.sleep(_POLL)

    # -- internals

    def _get(self, instance_id: str) -> _Instance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise NotFound(f"no instance {instance_id} is supervised") from None

    def _observation(self, inst: _Instance) -> InstanceObservation:
        running = inst.proc is not None and inst.proc.returncode is None
        health = inst.health
        return InstanceObservation(
            id=inst.spec.id, service=inst.spec.service, version=inst.spec.version, state=inst.state,
            pid=inst.proc.pid if running and inst.proc is not None else None, port=inst.primary_port,
            ports=tuple(sorted(inst.port_names.items())),
            ready=running and health is not None and health.ready and inst.state == "running",
            alive=running and (health is None or health.alive), restarts=inst.restarts,
            last_exit_code=inst.last_exit_code,
            last_reason=inst.last_reason or (health.reason if health is not None else ""),
            backoff_seconds=inst.backoff_seconds, log_path=inst.log_path, last_lines=tuple(inst.lines))

    def _deliver(self, inst: _Instance, *, config: tuple[tuple[str, bytes], ...] | None,
                 secrets: tuple[tuple[str, bytes], ...] | None) -> None:
        inst.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if secrets is not None:
            files.deliver(inst.directory / "secrets", dict(secrets))
        if config is not None:
            by_dir: dict[str, dict[str, bytes]] = {}
            for path, content in config:
                directory, _, name = path.rpartition("/")
                by_dir.setdefault(directory.strip("/"), {})[name] = content
            root = inst.directory / "config"
            root.mkdir(mode=0o700, exist_ok=True)
            for directory, contents in by_dir.items():
                files.deliver(root / directory if directory else root, contents)

    def _notify(self, inst: _Instance) -> None:
        if self.on_change is None:
            return
        obs = self._observation(inst)
        key = (obs.state, obs.ready, obs.alive)
        if key != inst.notified:
            inst.notified = key
            try:
                self.on_change(obs)
            except Exception:  # a watcher's bug must not stop the instance being supervised
                log.exception("on_change failed for instance %s", obs.id)

    def _environment(self, inst: _Instance) -> dict[str, str]:
        return instance_environment(inst.spec, primary_port=inst.primary_port, port_names=inst.port_names,
                                    directory=inst.directory)

    async def _run(self, inst: _Instance, launched: asyncio.Event) -> None:
        consecutive = 0
        try:
            while not inst.stopping.is_set():
                began = time.monotonic()
                inst.state = "starting"
                inst.health = None
                try:
                    await self._once(inst, launched)
                except OSError as exc:
                    inst.last_exit_code = None
                    where = f" ({exc.filename})" if exc.filename else ""
                    inst.last_reason = f"could not start {inst.spec.argv[0]!r}: {exc.strerror or exc}{where}"
                    self._log_line(inst, "shipmate", inst.last_reason)
                launched.set()
                if inst.stopping.is_set():
                    break
                consecutive = 1 if time.monotonic() - began >= self.backoff.reset_after else consecutive + 1
                inst.backoff_seconds = self.backoff.delay(consecutive)
                inst.state = "backoff"
                self._notify(inst)
                self._log_line(inst, "shipmate", f"{inst.last_reason}; restarting in {inst.backoff_seconds:g}s")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(inst.backoff_seconds):
                        await inst.stopping.wait()
                if not inst.stopping.is_set():
                    inst.restarts += 1
        finally:
            launched.set()
            inst.state = "stopped"
            self._notify(inst)
            if inst.log_file is not None:
                inst.log_file.close()
                inst.log_file = None

    async def _once(self, inst: _Instance, launched: asyncio.Event) -> None:
        """One process of an instance, from launch until it is gone."""
        spec = inst.spec
        if spec.workdir is not None and not spec.workdir.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such working directory", str(spec.workdir))
        env = self._environment(inst)
        proc = await asyncio.create_subprocess_exec(
            *spec.argv, cwd=spec.workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        self.registry.spawned(proc.pid, f"instance {spec.id}")
        inst.proc = proc
        launched.set()
        if proc.stdout is None or proc.stderr is None:
            raise InternalError("the process was started without pipes")
        pumps = [asyncio.create_task(self._pump(inst, proc.stdout, "out")),
                 asyncio.create_task(self._pump(inst, proc.stderr, "err"))]

        def changed(health: Health) -> None:
            inst.health = health
            if inst.state == "starting" and health.started:
                inst.state = "running"
            self._notify(inst)

        prober = Prober(ProbeTarget(host=self.host, ports=inst.ports, primary_port=inst.primary_port,
                                    env=env, cwd=spec.workdir),
                        startup=spec.startup, readiness=spec.readiness, liveness=spec.liveness,
                        on_change=changed, tracker=self.registry)
        probing = asyncio.create_task(prober.run())
        exited = asyncio.create_task(_exit_code(proc))
        stopped = asyncio.create_task(inst.stopping.wait())
        try:
            await asyncio.wait({probing, exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            reason = ""
            self._notify(inst)  # a process that died is out of the router before anything else
            if exited.done():
                self._kill_group(proc.pid, signal.SIGKILL)  # what the main process left behind
            elif probing.done() and not probing.cancelled():
                inst.state = "stopping"
                self._notify(inst)
                reason = probing.result().reason
                self._log_line(inst, "shipmate", f"{reason}; stopping the process")
                await self._terminate(inst, proc)
            else:
                inst.state = "stopping"
                self._notify(inst)
                reason = "stopped"
                await self._terminate(inst, proc)
            code = await _exit_code(proc)
        finally:
            for task in (probing, stopped, exited):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(probing, stopped, exited, return_exceptions=True)
            if proc.returncode is None:  # cancelled: never leave the group running
                self._kill_group(proc.pid, signal.SIGKILL)
                await _exit_code(proc)
            await self._drain(pumps)
            self.registry.reaped(proc.pid)
        inst.last_exit_code = code
        inst.last_reason = f"{reason} ({_describe_exit(code)})" if reason else _describe_exit(code)

    async def _terminate(self, inst: _Instance, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the group, wait up to the grace period for all of it to go, then SIGKILL."""
        pgid = proc.pid
        self._kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + inst.spec.grace_seconds
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                if not group_members(pgid):
                    return
                await asyncio.sleep(_POLL)  # the leader is gone, others of its group are not
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL):
                    await _exit_code(proc)
        if group_members(pgid) or proc.returncode is None:
            self._log_line(inst, "shipmate", f"still running after {inst.spec.grace_seconds:g}s: SIGKILL")
            self._kill_group(pgid, signal.SIGKILL)

    @staticmethod
    def _kill_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    async def _drain(self, pumps: list[asyncio.Task[None]]) -> None:
        # a process that left the group may still hold the pipes open: do not wait for it forever
        _done, pending = await asyncio.wait(pumps, timeout=1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, inst: _Instance, stream: asyncio.StreamReader, name: str) -> None:
        partial = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            partial += chunk
            *complete, partial = partial.split(b"\n")
            for line in complete:
                self._log_line(inst, name, line.decode("utf-8", "replace").rstrip("\r"))
            if len(partial) > 65536:  # an endless line: cut it
                self._log_line(inst, name, partial.decode("utf-8", "replace"))
                partial = b""
        if partial:
            self._log_line(inst, name, partial.decode("utf-8", "replace"))

    def _log_line(self, inst: _Instance, stream: str, line: str) -> None:
        inst.lines.append(line if stream != "shipmate" else f"[shipmate] {line}")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if inst.log_file is None:
            inst.log_file = inst.log_path.open("a", encoding="utf-8", buffering=1)
        inst.log_file.write(f"{stamp} {inst.spec.id} {stream}| {line}\n")


