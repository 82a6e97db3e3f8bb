"""The local target's commands: `up`, `down`, `status`, `logs`, `exec`.

`up` starts a background supervisor process (this same command with `--foreground`, in a session
of its own, its output in `<env dir>/logs/supervisor.log`) and returns once the environment is
ready, or exits non-zero with the reason (the failing instance's last log lines included). The
other commands find a running environment through the store and its lock (`runtime.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shipmate.cli.app import Application, output_option
from shipmate.errors import CheckFailed, ExternalError, NotFound, ShipmateError, UsageError, UserError

if TYPE_CHECKING:
    from shipmate.plan.models import Plan

READY_TIMEOUT = 180.0
_ENV_HELP = "The environment (default: dev, or the only one with target: local)."
_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta",
            "bright_green", "bright_yellow", "bright_blue")


def _environment(app: Application, given: str | None) -> str:
    spec = app.load_spec()
    if given is not None:
        spec.for_env(given)
        return given
    local = [name for name, env in spec.base.environments.items() if env.target == "local"]
    if "dev" in local:
        return "dev"
    if len(local) == 1:
        return local[0]
    if not local:
        raise UsageError(f"{app.file}: no environment has target: local; add one, or pass --env")
    raise UsageError(f"{app.file}: several local environments ({', '.join(local)}); pass --env")


def _plan_of(app: Application, environment: str) -> Plan:
    from shipmate.plan.plan import resolve

    return resolve(app.load_spec().for_env(environment), environment)


# --- up ---------------------------------------------------------------------------------------


@click.command("up")
@output_option
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.option("--foreground", is_flag=True, help="Stay attached: show the services' output, stop on Ctrl-C.")
@click.option("--quiet", is_flag=True, hidden=True, help="With --foreground: no output (the background process).")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds to wait for readiness.")
@click.option("--no-prometheus", is_flag=True, help="Do not start Prometheus, even when it is installed.")
@click.pass_obj
def up(app: Application, environment: str | None, foreground: bool, quiet: bool, timeout: float,
       no_prometheus: bool) -> None:
    """Bring a local environment up: addons, services and routers, and wait until all are ready."""
    from shipmate.targets.local.control import env_dir, holder_pid
    from shipmate.targets.local.runtime import LocalEnvironment

    environment = _environment(app, environment)
    plan = _plan_of(app, environment)
    if plan.target != "local":
        raise UsageError(f"environment {environment} targets {plan.target}; `up` runs environments with "
                         "target: local (use render or deploy for the others)")
    root = env_dir(app.state_dir, environment)
    running = holder_pid(root)
    if running is not None:
        app.info(f"{environment} is already up (supervisor pid {running})")
        _show_status(app, environment)
        return
    if not quiet:
        first_release(app, environment)
    if not foreground:
        _start_background(app, environment, timeout, no_prometheus)
        _show_status(app, environment)
        return
    runtime = LocalEnvironment(environment=environment, base_dir=app.file.absolute().parent,
                               state_dir=app.state_dir, spec_file=str(app.file.absolute()),
                               prometheus=not no_prometheus, ready_timeout=timeout)
    asyncio.run(_foreground(app, runtime, quiet))


def revive(app: Application, environment: str) -> bool:
    """Start the supervisor of an environment whose supervisor was killed (its phase says it runs,
    its lock says nobody holds it): the new one stops what the old one left and resumes the
    rollout it was running. True when it was started."""
    from shipmate.store.db import Store
    from shipmate.targets.local.control import env_dir, holder_pid

    if holder_pid(env_dir(app.state_dir, environment)) is not None:
        return False
    store = Store.open(app.state_dir)
    try:
        env = store.environment(environment)
    finally:
        store.close()
    if env is None or env.phase not in ("starting", "ready", "stopping"):
        return False
    app.info(f"the supervisor of {environment} is gone; starting it again (it resumes what was in progress)")
    _start_background(app, environment, READY_TIMEOUT, no_prometheus=False)
    return True


def first_release(app: Application, environment: str) -> None:
    """Record release 1 of an environment that has none; say so when the spec has moved on since
    the environment's current release (`up` runs what was deployed, `deploy` ships changes)."""
    from shipmate.release.builder import build
    from shipmate.release.history import History
    from shipmate.store.db import Store

    loaded = app.load_spec()
    store = Store.open(app.state_dir)
    try:
        history = History(store)
        current = history.current(environment)
        if current is None:
            release = build(loaded.for_env(environment), environment, number=history.next_number(environment),
                            created_at=time.time(), spec_digest=loaded.digest, message="first release (up)",
                            author=author(), git_commit=git_commit(app.file.absolute().parent))
            history.add(release, keep=release.plan.history)
            store.set_environment(environment, release=release.number)
            app.info(f"recorded release {release.number} of {environment}")
        elif current.spec_digest != loaded.digest:
            app.info(f"{app.file} has changed since release {current.number}, which `up` runs; "
                     f"`shipmate deploy --env {environment}` ships the change")
    finally:
        store.close()


def author() -> str:
    """Who runs this command (recorded in releases)."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def git_commit(directory: Path) -> str | None:
    """The commit checked out where the spec lives, None outside git."""
    try:
        done = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


async def _foreground(app: Application, runtime: Any, quiet: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    follower: asyncio.Task[None] | None = None

    def ready() -> None:
        nonlocal follower
        if quiet:
            return
        _show_status(app, runtime.name)
        app.info("up; Ctrl-C stops everything")
        follower = asyncio.create_task(_follow(app, runtime.root / "logs", None, 0, stop))

    try:
        await runtime.run(stop, on_ready=ready)
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    if not quiet:
        app.info(f"{runtime.name} is down")


def _start_background(app: Application, environment: str, timeout: float, no_prometheus: bool) -> None:
    from shipmate.store.db import Store
    from shipmate.targets.local.control import env_dir

    root = env_dir(app.state_dir, environment)
    (root / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = root / "logs" / "supervisor.log"
    argv = [sys.executable, "-m", "shipmate.cli.main", "-f", str(app.file.absolute()),
            "--state-dir", str(app.state_dir), "up", "--env", environment, "--foreground", "--quiet",
            "--timeout", str(timeout)]
    if no_prometheus:
        argv.append("--no-prometheus")
    if app.verbose:
        argv.insert(3, "-" + "v" * app.verbose)
    with log_path.open("ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=app.file.absolute().parent)
    app.info(f"starting {environment} (supervisor pid {child.pid}, log {log_path})")
    store = Store.open(app.state_dir)
    deadline = time.monotonic() + timeout + 120.0
    try:
        while True:
            state = store.environment(environment)
            mine = state is not None and state.supervisor_pid == child.pid
            if mine and state is not None and state.phase == "ready":
                return
            code = child.poll()
            if code is not None:
                state = store.environment(environment)
                message = state.message if state is not None and state.phase == "failed" else ""
                if not message:
                    message = f"the supervisor exited with code {code}; its log {log_path} ends with:\n" + \
                        _tail(log_path, 10)
                raise _Failed(message, code or 1)
            if time.monotonic() > deadline:
                child.terminate()
                raise _Failed(f"{environment} was not up after {timeout + 120:g}s; see {log_path}", 1)
            time.sleep(0.1)
    finally:
        store.close()


def _Failed(message: str, code: int) -> ShipmateError:  # noqa: N802 - raised like a class
    """`up` failed in the background process: its message, as the error its exit code stands for."""
    kind = {1: CheckFailed, 2: UserError}.get(code, ExternalError)
    return kind(message)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])


# --- down -------------------------------------------------------------------------------------


@click.command("down")
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.option("--purge", is_flag=True, help="Also remove the environment's data (databases included).")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for the supervisor to stop everything.")
@click.pass_obj
def down(app: Application, environment: str | None, purge: bool, timeout: float) -> None:
    """Stop a local environment: services drained and stopped, then addons. Data stays unless --purge."""
    from shipmate.store.lock import StateLock
    from shipmate.targets.local.control import env_dir, stop_supervisor
    from shipmate.targets.local.runtime import clean_up

    environment = _environment(app, environment)
    plan = _plan_of(app, environment)
    root = env_dir(app.state_dir, environment)
    pid = stop_supervisor(root, timeout)
    if pid is not None:
        app.info(f"stopped the supervisor of {environment} (pid {pid}) and everything it ran")
    with StateLock(root, f"shipmate down --env {environment}"):
        for line in clean_up(plan, app.state_dir, purge=purge):
            app.info(line)
    if pid is None:
        app.info(f"{environment} was not running" + ("; its data is removed" if purge else ""))


# --- status -------------------------------------------------------------------------------------


@click.command("status")
@output_option
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.pass_obj
def status(app: Application, environment: str | None) -> None:
    """What runs in a local environment: services, their versions, router ports and instances; addons."""
    environment = _environment(app, environment)
    _show_status(app, environment)


def status_of(state_dir: Path, environment: str) -> dict[str, Any]:
    """The status document (the shape `status --output json` prints and scripts rely on)."""
    from shipmate.store.db import Store
    from shipmate.targets.local.control import env_dir, holder_pid

    supervisor = holder_pid(env_dir(state_dir, environment))
    store = Store.open(state_dir)
    try:
        env = store.environment(environment)
        services = store.services(environment)
        instances = store.instances(environment) if supervisor is not None else []
        addons = store.addons(environment)
    finally:
        store.close()
    phase = env.phase if env is not None else "stopped"
    message = env.message if env is not None else ""
    if supervisor is None and phase in ("starting", "ready", "stopping"):
        phase, message = "crashed", "its supervisor is gone; `shipmate down` stops what it left, `up` starts it again"
    up = supervisor is not None
    return {
        "environment": environment,
        "phase": phase,
        "message": message,
        "supervisor": {"pid": supervisor},
        "release": env.release if env is not None else None,
        "metrics": {"port": env.metrics_port if env is not None and up else None},
        "services": [{
            "name": s.name, "version": s.version,
            "router": {"port": s.router_port if up else None},
            "instances": [{"id": i.instance_id, "version": i.version, "pid": i.pid, "port": i.port,
                           "ready": i.ready, "restarts": i.restarts}
                          for i in instances if i.service == s.name],
        } for s in services] if up else [],
        "addons": [{"name": a.name, "kind": a.kind, "port": a.port, "ready": a.ready and up}
                   for a in addons] if up else [],
    }


def _show_status(app: Application, environment: str) -> None:
    doc = status_of(app.state_dir, environment)
    if app.json:
        app.print_json(doc)
        return
    out = app.out
    pid = doc["supervisor"]["pid"]
    out.print(f"environment {environment}: {doc['phase']}" + (f" (supervisor pid {pid})" if pid else ""),
              markup=False)
    if doc["message"]:
        out.print(f"  {doc['message']}", markup=False)
    if doc["metrics"]["port"]:
        out.print(f"  router metrics: http://127.0.0.1:{doc['metrics']['port']}/metrics", markup=False)
    for s in doc["services"]:
        ready = sum(1 for i in s["instances"] if i["ready"])
        where = f"http://127.0.0.1:{s['router']['port']}" if s["router"]["port"] else "no router (no ports)"
        out.print(f"  {s['name']} {s['version']}: {ready}/{len(s['instances'])} ready, {where}", markup=False)
        for i in s["instances"]:
            out.print(f"    {i['id']}: pid {i['pid'] or '-'}, port {i['port'] or '-'}, "
                      f"{'ready' if i['ready'] else 'not ready'}, restarts {i['restarts']}", markup=False)
    for a in doc["addons"]:
        out.print(f"  addon {a['name']} ({a['kind']}): port {a['port'] or '-'}, "
                  f"{'ready' if a['ready'] else 'not ready'}", markup=False)


# --- logs ---------------------------------------------------------------------------------------


@click.command("logs")
@click.argument("service", required=False)
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=50, show_default=True,
              help="How many of the last lines to show first.")
@click.pass_obj
def logs(app: Application, service: str | None, environment: str | None, follow: bool, lines: int) -> None:
    """The services' output, interleaved by time, each line prefixed with its instance."""
    from shipmate.targets.local.control import env_dir

    environment = _environment(app, environment)
    plan = _plan_of(app, environment)
    if service is not None and service not in {w.name for w in plan.workloads}:
        known = ", ".join(w.name for w in plan.workloads)
        raise NotFound(f"no service {service!r} in environment {environment}; services: {known}")
    directory = env_dir(app.state_dir, environment) / "logs"
    if not follow:
        _print_lines(app, _read_new(directory, service, {})[-lines:] if lines else [])
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_follow(app, directory, service, lines, asyncio.Event()))


def _read_new(directory: Path, service: str | None, offsets: dict[Path, int]) -> list[tuple[str, str, str]]:
    """(time, instance, text) of the lines written since `offsets` (updated), sorted by time."""
    found: list[tuple[str, str, str]] = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.log")):
        if path.name == "supervisor.log":
            continue
        instance = path.stem
        if service is not None and service_of(instance) != service:
            continue
        start = offsets.get(path, 0)
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                data = handle.read()
        except OSError:
            continue
        complete = data.rpartition(b"\n")[0]
        if not complete:
            continue
        offsets[path] = start + len(complete) + 1
        for raw in complete.decode("utf-8", "replace").split("\n"):
            stamp, _, rest = raw.partition(" ")
            _ident, _, text = rest.partition(" ")
            stream, _, text = text.partition("| ")
            found.append((stamp, instance, text if stream != "shipmate" else f"[shipmate] {text}"))
    found.sort(key=lambda line: line[0])
    return found


_INSTANCE = re.compile(r"^(?P<service>.+)-[0-9a-f]{6}-[0-9]+$")


def service_of(instance: str) -> str:
    """The service of an instance id `<service>-<label hash>-<n>`."""
    match = _INSTANCE.match(instance)
    return match.group("service") if match else instance


def _print_lines(app: Application, lines: list[tuple[str, str, str]]) -> None:
    if not lines:
        return
    width = max(len(instance) for _, instance, _ in lines)
    for _stamp, instance, text in lines:
        service = service_of(instance)
        colour = _COLOURS[sum(service.encode()) % len(_COLOURS)]
        app.out.print(f"[{colour}]{instance:<{width}}[/] | ", end="")
        app.out.print(text, markup=False, highlight=False)


async def _follow(app: Application, directory: Path, service: str | None, lines: int, stop: asyncio.Event) -> None:
    offsets: dict[Path, int] = {}
    _print_lines(app, _read_new(directory, service, offsets)[-lines:] if lines else [])
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await stop.wait()
        _print_lines(app, _read_new(directory, service, offsets))


# --- exec ---------------------------------------------------------------------------------------


@click.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("service")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--env", "-e", "environment", default=None, show_envvar=True, help=_ENV_HELP)
@click.pass_obj
def exec_(app: Application, service: str, command: tuple[str, ...], environment: str | None) -> None:
    """Run COMMAND with a service's environment, config and secret files (of its first instance):
    `shipmate exec api-server -- psql "$(cat $SHIPMATE_SECRETS_DIR/database-url)"`."""
    from shipmate.secrets.providers import actor, secret_store
    from shipmate.store.db import Store
    from shipmate.targets.local import secret_values
    from shipmate.targets.local.control import env_dir, holder_pid
    from shipmate.targets.local.supervisor import instance_environment, launch_spec

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("exec needs a command: shipmate exec SERVICE -- COMMAND [ARGS...]")
    environment = _environment(app, environment)
    plan = _plan_of(app, environment)
    workload = next((w for w in plan.workloads if w.name == service), None)
    if workload is None:
        known = ", ".join(w.name for w in plan.workloads)
        raise NotFound(f"no service {service!r} in environment {environment}; services: {known}")
    root = env_dir(app.state_dir, environment)
    if holder_pid(root) is None:
        raise NotFound(f"{environment} is not up; start it with `shipmate up --env {environment}`")
    store = Store.open(app.state_dir)
    try:
        instances = [i for i in store.instances(environment) if i.service == service]
        if not instances:
            raise NotFound(f"service {service} has no instance running in {environment}")
        first = instances[0]
        secrets = secret_store(plan, store, state_dir=app.state_dir, base_dir=app.file.absolute().parent,
                               actor=f"{actor()} (exec {service})")
        delivered = secret_values.load(plan, secrets, sorted({m.secret for m in workload.secrets}))
    finally:
        store.close()
    launch = launch_spec(workload, instance_id=first.instance_id, base_dir=app.file.absolute().parent,
                         secret_values=secret_values.values_of(delivered), version=first.version)
    names = {launch.ports[0][0]: first.port} if launch.ports and first.port else {}
    env = instance_environment(launch, primary_port=first.port, port_names=names,
                               directory=root / "instances" / first.instance_id)
    try:
        done = subprocess.run(list(command), env=env, cwd=launch.workdir, check=False)
    except FileNotFoundError:
        raise NotFound(f"{command[0]}: command not found") from None
    except PermissionError:
        raise UsageError(f"{command[0]}: not executable") from None
    raise click.exceptions.Exit(done.returncode)

