"""What every werewolves process shares: settings from the environment, one-line logs on stdout,
the health, version and fault-injection endpoints, and a run loop that turns SIGTERM into a
graceful stop.

Environment read here (shipmate's local target sets all of them; on Kubernetes the port and the
instance fall back to the declared port and the host name):

    PORT                  the port to listen on (default: the service's declared port)
    APP_VERSION           reported by /version (default "dev")
    SHIPMATE_INSTANCE     reported by /version and in every log line (default: the host name)
    SHIPMATE_SECRETS_DIR  where the secret files are (default /var/run/secrets/shipmate)
    LOG_LEVEL             debug | info | warning | error (default info)
    FAULT_RATE            0..1: that share of /api requests (or WebSocket connections, or bot
                          moves) fails on purpose, to ship a bad version in a drill (default 0)
    CRASH_ON_START        true: exit 1 at once, another way to ship a bad version (default false)

Called by the `main()` of `api`, `gateway` and `agents`. It must not know about rooms or games.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

from werewolves.secrets import DEFAULT_DIR, MissingSecret
from werewolves.web import Handler, Request, Response, error_response, json_response

TRUTHY = frozenset({"1", "true", "yes", "on"})
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/version"})


class ConfigError(Exception):
    """A configuration value the service cannot use; the message names the variable and the rule."""


@dataclass(frozen=True)
class Settings:
    """The settings every service has, and the environment for the ones only some have."""

    service: str
    port: int
    version: str
    instance: str
    secrets_dir: Path
    log_level: str
    fault_rate: float
    crash_on_start: bool
    environ: Mapping[str, str] = field(repr=False)

    @classmethod
    def load(cls, service: str, default_port: int, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        settings = cls(service=service, port=0, version=env.get("APP_VERSION") or "dev",
                       instance=env.get("SHIPMATE_INSTANCE") or socket.gethostname(),
                       secrets_dir=Path(env.get("SHIPMATE_SECRETS_DIR") or DEFAULT_DIR),
                       log_level=(env.get("LOG_LEVEL") or "info").upper(), fault_rate=0.0,
                       crash_on_start=(env.get("CRASH_ON_START") or "").strip().lower() in TRUTHY, environ=env)
        fault_rate = settings.number("FAULT_RATE", 0.0)
        if not 0.0 <= fault_rate <= 1.0:
            raise ConfigError(f"FAULT_RATE must be between 0 and 1 (got {fault_rate:g})")
        if settings.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL must be debug, info, warning or error (got {env['LOG_LEVEL']!r})")
        port = settings.integer("PORT", default_port, minimum=1)
        if port > 65535:
            raise ConfigError(f"PORT must be a TCP port, 1 to 65535 (got {port})")
        return replace(settings, port=port, fault_rate=fault_rate)

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = (self.environ.get(name) or "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number (got {raw!r})") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum} (got {value})")
        return value

    def number(self, name: str, default: float) -> float:
        raw = (self.environ.get(name) or "").strip()
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number (got {raw!r})") from None

    def version_body(self) -> dict[str, str]:
        return {"service": self.service, "version": self.version, "instance": self.instance}


class _OneLine(logging.Formatter):
    """Every record on one line: a traceback is folded into ` | `-separated parts."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " | ")


def setup_logging(settings: Settings) -> logging.Logger:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_OneLine(f"%(asctime)s %(levelname)s {settings.instance} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("websockets", "nats", "asyncio"):  # their own lines could echo URLs or be chatty
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger("werewolves.service")


class Endpoints:
    """The HTTP front of a service: /healthz, /readyz and /version, then FAULT_RATE on /api/...,
    then the service's own handler (404 for everything when it has none)."""

    def __init__(self, settings: Settings, ready: Callable[[], Awaitable[bool]], app: Handler | None = None,
                 *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.draining = False
        self._ready = ready
        self._app = app
        self._rng = rng or random.Random()  # noqa: S311 - drills, not security

    def fault(self) -> bool:
        """True for the share FAULT_RATE of calls: this one must fail on purpose."""
        rate = self.settings.fault_rate
        return rate > 0 and self._rng.random() < rate

    async def readiness(self) -> bool:
        if self.draining:
            return False
        try:
            return await self._ready()
        except Exception:  # a readiness check answers, whatever its dependency does
            logging.getLogger("werewolves.health").exception("readiness check failed")
            return False

    async def __call__(self, request: Request) -> Response:
        if request.path == "/healthz":
            return json_response(200, {"status": "ok"})
        if request.path == "/readyz":
            ready = await self.readiness()
            return json_response(200 if ready else 503, {"ready": ready})
        if request.path == "/version":
            return json_response(200, self.settings.version_body())
        if request.path.startswith("/api/") and self.fault():
            return error_response(500, "injected fault (FAULT_RATE)")
        if self._app is None:
            return error_response(404, f"no such path: {request.path}")
        return await self._app(request)


def run(settings: Settings, serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `serve(stop)` until it returns; SIGTERM and SIGINT set `stop`. CRASH_ON_START exits 1
    before anything starts; a missing secret exits 1 and a configuration error 2, each with one
    line in the log."""
    log = setup_logging(settings)
    if settings.crash_on_start:
        log.error("CRASH_ON_START is set: exiting with status 1 on purpose")
        sys.exit(1)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("starting %s %s on port %d", settings.service, settings.version, settings.port)
        await serve(stop)
        log.info("stopped")

    try:
        asyncio.run(main())
    except ConfigError as error:
        failure, code = str(error), 2
    except MissingSecret as error:
        failure, code = str(error), 1
    else:
        return
    log.error("%s", failure)
    sys.exit(code)


def exit_config(service: str, error: Exception) -> NoReturn:
    """A configuration value the service cannot use: one line on stderr, exit code 2."""
    print(f"{service}: {error}", file=sys.stderr)  # noqa: T201 - logging is not set up yet
    sys.exit(2)


def load_or_exit(service: str, default_port: int) -> Settings:
    """Settings from the environment; a bad value is one line on stderr and exit code 2."""
    try:
        return Settings.load(service, default_port)
    except ConfigError as error:
        exit_config(service, error)
