"""The local target at run time: one environment's addons, instances and routers, kept running.

Called by `shipmate up` (in a background process it starts, or attached with `--foreground`), by
`shipmate down`, `status`, `logs` and `exec`. It wires the parts of this package together:
addons (`addons.py`) start first, then every used secret gets a current version in the encrypted
store and what is delivered is opened (`secret_values.py`), then
one router per service with ports (`router.py`) listens on a stable port, then the supervisor
(`supervisor.py`) starts the instances, and the routers follow the supervisor: an instance gets
requests once it is ready and none from the moment it stops being ready or its process dies (the
supervisor's `on_change` callback, on the same loop, before any other request is routed).

Layout, per environment, under `<state dir>/local/<env>/` (0700):

    lock                  held by the environment's supervisor process for as long as it runs
    processes.json        the process groups it started (see supervisor.py: no orphan survives)
    instances/<id>/       each instance's secret and config files
    logs/<id>.log         each instance's output; supervisor.log is the background process's own
    addons/<name>/        each addon's data, configuration, password and log

The store (`<state dir>/state.db`) holds what `status` shows: the environment's phase
(starting, ready, failed, stopping, stopped) and message, its services with their router ports
(kept for the next `up`), instances (pid, port, ready, restarts) and addons, and the sealed
secret versions. A change of versions there (`shipmate secrets rotate` or `set`, which wake this
process with SIGUSR1; an expired grace period) is delivered to every running instance that uses the
secret as a file, by one atomic swap of its secrets directory, without a restart.

It must not decide strategy or versions (the release engine will), or log a secret value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shipmate.errors import ShipmateError, UsageError
from shipmate.plan.models import AddonPlan, Plan, ResourcesPlan, StrategyPlan, Workload
from shipmate.release.engine import Engine, Releases
from shipmate.release.history import History
from shipmate.release.models import Release, Rollout, fail
from shipmate.release.planning import world
from shipmate.release.steps import state_after
from shipmate.secrets.providers import secret_store
from shipmate.secrets.store import SecretStore
from shipmate.store.db import AddonState, InstanceState, ServiceState, Store
from shipmate.store.lock import StateLock
from shipmate.targets.base import StepFailed
from shipmate.targets.local import secret_values
from shipmate.targets.local.addons import Addon, MissingBinary, Prometheus, addon_for, http_status
from shipmate.targets.local.control import env_dir
from shipmate.targets.local.ports import LOOPBACK, free_port
from shipmate.targets.local.router import AdminServer, Router
from shipmate.targets.local.routing import Backend, StickyKey
from shipmate.targets.local.supervisor import InstanceObservation, Supervisor, launch_spec
from shipmate.targets.local.traffic import VersionSnapshot

PROMETHEUS = "prometheus"
READY_TIMEOUT = 180.0
_OBSERVE_EVERY = 0.5
_ADDON_CHECK_EVERY = 5.0
CRASH_LOOP_RESTARTS = 3  # a new instance restarted this often while coming up is crash-looping

log = logging.getLogger(__name__)


def local_addons(plan: Plan, root: Path, *, base_dir: Path | None = None, prometheus: bool = True) -> list[Addon]:
    """The addons that run on this machine for a plan (external ones are someone else's), plus
    Prometheus scraping the routers when `prometheus` is set and its binary is installed.
    `base_dir` is the spec's directory, where a generic addon's `run` command runs."""
    addons = [addon_for(a, root, base_dir=base_dir) for a in plan.addons if not a.external]
    if prometheus:
        prom = Prometheus(prometheus_plan(), root)
        try:
            prom.check_binaries()
        except MissingBinary:
            return addons
        addons.append(prom)
    return addons


def prometheus_plan() -> AddonPlan:
    """The plan of the Prometheus the local target adds to every environment it runs."""
    return AddonPlan(name=PROMETHEUS, kind="prometheus", image="prometheus", port=9090, storage="1Gi",
                     databases=(), external=False, resources=ResourcesPlan(None, None, None, None),
                     run_as_user=10001, config=(), users=())


class LocalEnvironment:
    """One environment, run by one process, from the releases in the store. `await run(stop)`
    brings up what the environment runs (its current release, or the world of a rollout that was
    in progress, rebuilt to the step it had reached), calls `on_ready`, then runs rollouts as they
    are recorded (and the one it found) until `stop` is set, and takes it all down (instances
    drained first, then stopped, then the addons). It is the local implementation of `Target`."""

    def __init__(self, *, environment: str, base_dir: Path, state_dir: Path, spec_file: str,
                 prometheus: bool = True, ready_timeout: float = READY_TIMEOUT) -> None:
        self.name = environment
        self.base_dir = base_dir
        self.state_dir = state_dir
        self.root = env_dir(state_dir, environment)
        self.spec_file = spec_file
        self.prometheus = prometheus
        self.ready_timeout = ready_timeout
        self.store = Store.open(state_dir)
        self.history = History(self.store)
        self.supervisor = Supervisor(self.root, on_change=self._changed)
        self.addons: dict[str, Addon] = {}
        self.routers: dict[str, Router] = {}
        self.groups: dict[tuple[str, str], list[str]] = {}  # (service, label) -> instance ids
        self.label_of: dict[str, str] = {}  # instance id -> label
        self.secrets: SecretStore | None = None
        self.delivered: dict[str, secret_values.Delivered] = {}
        self.workload_of: dict[str, Workload] = {}  # instance id -> the workload it runs
        self.admin: AdminServer | None = None
        self.release: Release | None = None
        self._metrics_ports: dict[str, int | None] = {}
        self._routed: set[str] = set()
        self._last: dict[str, InstanceState] = {}
        self._scraped: list[str] | None = None
        self._rollout: asyncio.Task[None] | None = None

    # --- the whole life -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Raises the error that kept the environment from coming up (after cleaning up)."""
        lock = StateLock(self.root, f"shipmate up --env {self.name}")
        lock.acquire()
        try:
            env = self.store.environment(self.name)
            self.store.set_environment(self.name, release=env.release if env else None, supervisor_pid=os.getpid(),
                                       phase="starting", message="", spec_file=self.spec_file)
            try:
                await self._up()
            except BaseException as exc:
                message = str(exc) if isinstance(exc, ShipmateError) else f"{type(exc).__name__}: {exc}"
                self.store.set_phase(self.name, "failed", message)
                await self._down()
                self._set_env(supervisor_pid=None, phase="failed", message=message)
                raise
            self.store.set_phase(self.name, "ready", "")
            if on_ready is not None:
                on_ready()
            await self._watch(stop)
            self.store.set_phase(self.name, "stopping", "")
            if self._rollout is not None:
                self._rollout.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._rollout
            await self._down()
            self._set_env(supervisor_pid=None, phase="stopped", message="")
        finally:
            lock.release()
            self.store.close()

    def _set_env(self, **values: Any) -> None:
        env = self.store.environment(self.name)
        self.store.set_environment(self.name, release=env.release if env else None, **values)

    async def _up(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.supervisor.recover()
        current = self.history.current(self.name)
        if current is None:
            raise UsageError(f"environment {self.name} has no release yet; `shipmate up` records the first one")
        self.release = current
        active = self.history.active(self.name)
        if active is not None:
            before = self.history.get(self.name, active.from_release) if active.from_release is not None else None
            after = self.history.get(self.name, active.to_release)
            start = world(before) if before is not None else ({}, {})
            layout, routes = state_after(active.steps, active.current, *start)
            involved = [r for r in (before, after) if r is not None]
        else:
            layout, routes = world(current)
            involved = [current]
        await self._prepare(involved)
        await self._start_admin()
        launches = Releases(involved[0] if len(involved) > 1 else None, involved[-1])
        scaling = []
        for service, versions in layout.items():
            for label, count in versions.items():
                workload, version = launches.launch(service, label)
                scaling.append(self.scale(workload, version, label, count, within=self.ready_timeout))
        await asyncio.gather(*scaling)
        for service, weights in routes.items():
            self.set_weights(service, weights)
        self._record()

    async def _prepare(self, releases: list[Release]) -> None:
        """Addons and secret values for the releases about to run (started once, kept)."""
        wanted = [a for r in releases for a in r.plan.addons if not a.external and a.name not in self.addons]
        fresh: dict[str, Addon] = {}
        for plan in wanted:
            fresh.setdefault(plan.name, addon_for(plan, self.root, base_dir=self.base_dir))
        if self.prometheus and PROMETHEUS not in self.addons:
            prom = Prometheus(prometheus_plan(), self.root)
            with contextlib.suppress(MissingBinary):
                prom.check_binaries()
                fresh[PROMETHEUS] = prom
        for addon in fresh.values():
            addon.check_binaries()  # every missing package named before anything starts
        await asyncio.gather(*(asyncio.to_thread(a.start) for a in fresh.values() if a.kind != "prometheus"))
        self.addons.update(fresh)
        for addon in fresh.values():
            if addon.kind != "prometheus":
                self.store.put_addon(AddonState(self.name, addon.name, addon.kind, addon.port, addon.pid, True))
        connections = {a.name: a.connection() for a in self.addons.values() if a.kind != "prometheus"}
        for release in releases:
            if self.secrets is None:
                self.secrets = secret_store(release.plan, self.store, state_dir=self.state_dir, base_dir=self.base_dir,
                                            actor=f"supervisor of {self.name} (pid {os.getpid()})")
            secret_values.ensure(release.plan, self.secrets, legacy_dir=self.root / "secrets",
                                 connections=connections)
            self.delivered.update(secret_values.load(release.plan, self.secrets))
        known = {s.name: s.router_port for s in self.store.services(self.name)}
        for release in releases:
            for workload in release.plan.workloads:
                if workload.ports and workload.name not in self.routers:
                    router = Router(workload.name, LOOPBACK, free_port(prefer=known.get(workload.name)))
                    await router.start()
                    self.routers[workload.name] = router
                    if self.admin is not None:
                        self.admin.routers.append(router)
        self._route_by(releases[-1].plan.strategy)
        self._record_services()

    def _route_by(self, strategy: StrategyPlan) -> None:
        """The strategy's sticky key and tester header, on every router (a rollout's own strategy
        may differ from the environment's: `deploy --strategy`)."""
        sticky = (StickyKey(strategy.sticky_source, strategy.sticky_name)
                  if strategy.sticky_source and strategy.sticky_name else None)
        tester = (strategy.tester_header.lower(), "always") if strategy.tester_header else None
        for router in self.routers.values():
            router.sticky = sticky
            router.force_header = tester

    def _record_services(self) -> None:
        current = self.release
        versions = dict(current.versions) if current is not None else {}
        names = {*versions, *self.routers}
        for name in sorted(names):
            router = self.routers.get(name)
            self.store.put_service(ServiceState(self.name, name, versions.get(name, ""),
                                                router.port if router else None))

    async def _start_admin(self) -> None:
        previous = self.store.environment(self.name)
        self.admin = AdminServer(list(self.routers.values()), LOOPBACK,
                                 free_port(prefer=previous.metrics_port if previous else None))
        await self.admin.start()
        self._set_env(supervisor_pid=os.getpid(), metrics_port=self.admin.port)
        prom = self._prometheus()
        if prom is not None:
            self._update_scrape_targets()
            await asyncio.to_thread(prom.start)
            self.store.put_addon(AddonState(self.name, prom.name, prom.kind, prom.port, prom.pid, True))

    # --- the Target protocol ------------------------------------------------------------------------

    async def scale(self, workload: Workload, version: str, label: str, replicas: int, *, within: float) -> None:
        service = workload.name
        ids = self.groups.setdefault((service, label), [])
        if len(ids) < replicas:
            suffix = label.rsplit("-", 1)[-1]
            taken = set(ids)
            fresh: list[str] = []
            index = 1
            while len(ids) + len(fresh) < replicas:
                candidate = f"{service}-{suffix}-{index}"
                if candidate not in taken:
                    fresh.append(candidate)
                index += 1
            wanted = {m.secret for m in workload.secrets}
            mine = {k: d for k, d in self.delivered.items() if k in wanted}
            for instance_id in fresh:
                self.label_of[instance_id] = label
                self.workload_of[instance_id] = workload
                ids.append(instance_id)
                await self.supervisor.start(launch_spec(workload, instance_id=instance_id, base_dir=self.base_dir,
                                                        secret_values=secret_values.values_of(mine), version=version,
                                                        secret_files=secret_values.file_set(workload, mine)))
            self._record()
            await self._wait_ready(fresh, within)
        elif len(ids) > replicas:
            victims = ids[replicas:]
            del ids[replicas:]
            router = self.routers.get(service)
            if router is not None:
                drains = [router.drain(i) for i in victims if i in self._routed]
                if drains:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(float(workload.termination_grace_seconds)):
                            await asyncio.gather(*drains, return_exceptions=True)
            for instance_id in victims:
                await self.supervisor.stop(instance_id)
                if router is not None and instance_id in self._routed:
                    router.remove(instance_id)
                self._routed.discard(instance_id)
                self.label_of.pop(instance_id, None)
                self.workload_of.pop(instance_id, None)
                self._last.pop(instance_id, None)
                self.store.remove_instance(self.name, instance_id)
        self._record()

    async def _wait_ready(self, ids: list[str], within: float) -> None:
        """Until every instance is ready; StepFailed at the deadline or as soon as one crash-loops."""
        deadline = time.monotonic() + within
        while True:
            observed = [self.supervisor.instance(i) for i in ids]
            if all(o.ready for o in observed):
                return
            looping = next((o for o in observed if o.restarts >= CRASH_LOOP_RESTARTS), None)
            late = time.monotonic() >= deadline
            if looping is not None or late:
                obs = looping or next(o for o in observed if not o.ready)
                tail = "\n".join(f"  {line}" for line in obs.last_lines[-10:])
                what = f"crash-loops ({obs.restarts} restarts)" if looping else f"not ready after {within:g}s"
                raise StepFailed(f"instance {obs.id} {what} ({obs.state}): {obs.last_reason or 'no reason known'}"
                                 + (f"\nlast log lines:\n{tail}" if tail else ""))
            await asyncio.sleep(0.05)

    def set_weights(self, service: str, weights: Mapping[str, float]) -> None:
        router = self.routers.get(service)
        if router is not None:
            router.set_weights({label: w for label, w in weights.items() if w > 0} or dict(weights))

    def traffic(self, service: str, label: str) -> VersionSnapshot | None:
        router = self.routers.get(service)
        return router.snapshot().versions.get(label) if router is not None else None

    async def smoke(self, service: str, label: str, checks: Sequence[str]) -> list[str]:
        failures = []
        for instance_id in self.groups.get((service, label), []):
            port = self.supervisor.instance(instance_id).port
            for path in checks:
                code = await asyncio.to_thread(http_status, f"http://{LOOPBACK}:{port}{path}")
                if code is None or code >= 400:
                    failures.append(f"{instance_id} GET {path}: {code or 'no answer'}")
        return failures

    # --- routers follow the supervisor ----------------------------------------------------------

    def _changed(self, obs: InstanceObservation) -> None:
        router = self.routers.get(obs.service)
        label = self.label_of.get(obs.id)
        if router is None or label is None or obs.port is None:
            return
        if obs.ready:
            if obs.id in self._routed:
                router.undrain(obs.id)
            else:
                router.add(Backend(obs.id, label, LOOPBACK, obs.port))
                self._routed.add(obs.id)
        elif obs.id in self._routed:
            # no new request from now on; what is in flight finishes (or fails, if the process died)
            router.drain(obs.id)

    # --- while it runs ------------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        """Keep the store up to date and start recorded rollouts, until `stop`. SIGUSR1 (sent by
        the commands that record a rollout or a request) wakes it at once."""
        next_addon_check = time.monotonic() + _ADDON_CHECK_EVERY
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGUSR1, wake.set)
        while not stop.is_set():
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            await asyncio.wait(waits, timeout=_OBSERVE_EVERY, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
            wake.clear()
            self._refresh_secrets()
            self._record()
            if self._rollout is None or self._rollout.done():
                live = self.history.active(self.name)
                if live is not None:
                    self._rollout = asyncio.create_task(self._drive(live), name=f"rollout {live.id}")
            if time.monotonic() >= next_addon_check:
                next_addon_check = time.monotonic() + _ADDON_CHECK_EVERY
                for addon in self.addons.values():
                    ready = await asyncio.to_thread(_addon_ready, addon)
                    self.store.put_addon(AddonState(self.name, addon.name, addon.kind, addon.port, addon.pid, ready))

    def _refresh_secrets(self) -> None:
        """Deliver what changed in the store since the last look: a rotated or newly set version, a
        grace period that ended. Cheap when nothing did (reads versions, opens no value)."""
        secrets = self.secrets
        if secrets is None or not self.delivered:
            return
        expiry = secrets.next_expiry(self.name)
        if expiry is not None and expiry <= time.time():
            secrets.retire_expired(self.name)
        changed = [name for name, d in self.delivered.items() if secrets.delivered(self.name, name) != d.versions]
        if not changed:
            return
        for name in changed:
            self.delivered[name] = secret_values.Delivered(secrets.current(self.name, name, detail="deliver"),
                                                           secrets.previous(self.name, name, detail="deliver"))
        for instance_id, workload in sorted(self.workload_of.items()):
            uses = {m.secret: m for m in workload.secrets if m.secret in changed}
            if uses:
                mine = {k: d for k, d in self.delivered.items() if k in {m.secret for m in workload.secrets}}
                self.supervisor.update_files(
                    instance_id, secrets=secret_values.file_set(workload, mine).items(),
                    secret_env=[(m.env, mine[m.secret].current.value) for m in workload.env_secrets])
            for mount in uses.values():
                if mount.delivery == "env":
                    log.warning("%s receives secret %s as the env var %s: it gets the new version when it restarts",
                                instance_id, mount.secret, mount.env)
        versions = ", ".join(f"{n} v{self.delivered[n].versions[0]}" for n in changed)
        log.info("delivered %s to the instances that use them", versions)

    async def _drive(self, rollout: Rollout) -> None:
        """Run one rollout to its end, then make its outcome the environment's release."""
        before = self.history.get(self.name, rollout.from_release) if rollout.from_release is not None else None
        after = self.history.get(self.name, rollout.to_release)
        try:
            await self._prepare([r for r in (before, after) if r is not None])
            self._route_by(rollout.strategy)
            delay = float(os.environ.get("SHIPMATE_ENGINE_STEP_DELAY") or 0)
            prom = self._prometheus()
            prom_url = prom.connection().url if prom is not None and prom.port is not None else None
            engine = Engine(self, save=self.history.save, take_request=self.history.take_request, step_delay=delay,
                            prometheus_url=prom_url)
            done = await engine.run(rollout, Releases(before, after))
        except ShipmateError as exc:  # addons or secrets of the new release could not be had
            done = fail(rollout, f"could not prepare release {rollout.to_release}: {exc}", time.time())
            self.history.save(done)
        if done.phase == "promoted" or (done.phase == "rolled-back" and done.kind == "rollback"):
            self.release = after
            self.store.set_release(self.name, after.number)
        self._record_services()
        self._record()

    def _record(self) -> None:
        """Write the instances' observations to the store (only what changed)."""
        for obs in self.supervisor.observe():
            state = InstanceState(self.name, obs.id, obs.service, obs.version, obs.pid, obs.pid, obs.port,
                                  obs.ready, obs.restarts, 0.0)
            if self._last.get(obs.id) != state:
                self._last[obs.id] = state
                self.store.put_instance(state)
        self._update_scrape_targets()

    def _prometheus(self) -> Prometheus | None:
        prom = self.addons.get(PROMETHEUS)
        return prom if isinstance(prom, Prometheus) else None

    def _update_scrape_targets(self) -> None:
        """Point Prometheus at the routers' metrics and at every instance of a service that
        declares a metrics port (at that port's local address and the metrics path)."""
        prom = self._prometheus()
        if prom is None or self.admin is None:
            return
        targets = [f"{LOOPBACK}:{self.admin.port}/metrics"]
        workloads = {w.name: w for w in self.release.plan.workloads} if self.release is not None else {}
        for obs in self.supervisor.observe():
            workload = workloads.get(obs.service)
            if workload is None or workload.metrics_port is None:
                continue
            names = [p.name for p in workload.ports if p.port == workload.metrics_port]
            local = dict(obs.ports).get(names[0]) if names else None
            if local is not None:
                targets.append(f"{LOOPBACK}:{local}/{workload.metrics_path.lstrip('/')}")
        if targets != self._scraped:
            self._scraped = targets
            prom.set_targets(targets)

    # --- taking it down ------------------------------------------------------------------------

    async def _down(self, drain_timeout: float = 10.0) -> None:
        drains = []
        for (service, _label), ids in self.groups.items():
            router = self.routers.get(service)
            if router is not None:
                drains += [router.drain(i) for i in ids if i in self._routed]
        if drains:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout):
                    await asyncio.gather(*drains, return_exceptions=True)
        await self.supervisor.shutdown()
        for router in self.routers.values():
            await router.stop()
        if self.admin is not None:
            await self.admin.stop()
        await asyncio.gather(*(asyncio.to_thread(a.stop) for a in self.addons.values()), return_exceptions=True)
        self.store.forget_running(self.name)


def _addon_ready(addon: Addon) -> bool:
    return addon.running() and addon.ready()


# --- for the commands that find an environment from outside -------------------------------------


def clean_up(plan: Plan, state_dir: Path, *, purge: bool) -> list[str]:
    """With no supervisor running (the caller holds the lock): stop whatever a killed one left
    behind (instance process groups, addon servers), and with `purge` remove the environment's
    data. Returns what was stopped or removed, for the person."""
    root = env_dir(state_dir, plan.environment)
    done: list[str] = []
    if root.exists():
        for record in Supervisor(root).recover():
            done.append(f"stopped leftover {record.what} (pgid {record.pgid})")
        for addon in local_addons(plan, root):
            if addon.running():
                addon.stop()
                done.append(f"stopped addon {addon.name}")
            if purge and addon.home.exists():
                addon.purge()
                done.append(f"removed the data of addon {addon.name}")
    store = Store.open(state_dir)
    try:
        if purge:
            store.remove_environment(plan.environment)
        elif store.environment(plan.environment) is not None:
            store.forget_running(plan.environment)
            store.set_phase(plan.environment, "stopped", "")
    finally:
        store.close()
    if purge and root.exists():
        _remove_tree_but_lock(root)
        done.append(f"removed {root}")
    return done


def _remove_tree_but_lock(root: Path) -> None:
    for child in root.iterdir():
        if child.name == "lock":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
