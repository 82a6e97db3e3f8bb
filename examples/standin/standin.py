#!/usr/bin/env python3
"""A small stand-in service for the examples whose real code is not part of this project.

tianting, platform-v6, security-triage and nova are specs of systems whose code lives elsewhere. On
the local target each of their services (and the generic addons the machine has no binary for) runs
this file instead, so that `shipmate up` brings the whole application up and the release engine, the
router and the probes have something real to talk to. It uses the standard library only (Python 3.11
or later) and is one file on purpose: a spec points at it with `run: python3 ../standin/standin.py`.

What it serves, over HTTP/1.1 with keep-alive, on 127.0.0.1:$PORT (default 8080) and on every
`PORT_<NAME>` the local target gives (a service with two ports has both probed):

    /healthz, /livez       200 "ok"                                  (liveness)
    /readyz                503 until READY_DELAY seconds have passed since start, then 200 "ok"
    /version               {"service", "version", "instance"} as JSON
    /metrics               Prometheus text: http_requests_total{code} and a latency histogram
    /secrets               the NAMES of the files in $SHIPMATE_SECRETS_DIR and their count, never a value
    anything else          200, a JSON echo of method, path and version: "a bit of traffic"

The specs' own probe paths (`/health`, `/ready`, `/actuator/health/readiness`, `/_cluster/health`...)
are health paths too: a path with a segment `ready`, `readyz` or `readiness` answers as /readyz, one
with a segment `health`, `healthz`, `live`, `livez`, `liveness` or `ping` as /healthz.

Bad versions on purpose (so a rollout can be seen to fail and roll back):

    FAULT_RATE=0..1        that share of the non-health requests is answered 500
    LATENCY_MS=N           N milliseconds added to every non-health request
    CRASH_ON_START=1       print why and exit 1 at once (also true, yes, on)
    READY_DELAY=S          /readyz answers 503 for the first S seconds

Health paths and /metrics are never slowed or failed: a faulty version stays up and is judged by
its traffic, as a real one would be. /metrics counts that traffic only (not probes or scrapes), so
its error rate is the error rate a user sees.

`/version` names the service from $SHIPMATE_SERVICE (or `--service`), else from $SHIPMATE_INSTANCE
less a trailing `-N` (and less a trailing `-$APP_VERSION` before that); the version is $APP_VERSION.

`--tcp` makes every listener a plain TCP echo instead of HTTP, `--tcp NAME[,NAME...]` only the named
ports (`PORT_<NAME>`). The examples do not need it: an HTTP server answers a TCP probe as well.

SIGTERM or SIGINT: the listeners close at once and the process exits 0 within a second. A bad
setting (FAULT_RATE=2) is said on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

DESCRIPTION = "A small stand-in service: health, version, metrics and a JSON echo over HTTP/1.1."
HOST = "127.0.0.1"
DEFAULT_PORT = 8080
READY_SEGMENTS = frozenset({"ready", "readyz", "readiness"})
LIVE_SEGMENTS = frozenset({"health", "healthz", "live", "livez", "liveness", "ping"})
TRUTHY = frozenset({"1", "true", "yes", "on"})
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
IDLE_TIMEOUT = 60.0  # seconds a keep-alive connection may stay idle before it is closed
MAX_BODY = 1 << 20  # a request body larger than this is refused (413), the connection closed


class ConfigError(ValueError):
    """A setting in the environment that the stand-in cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything read from the environment and the command line, checked once at start."""

    host: str
    ports: tuple[tuple[str, int], ...]  # (name, port), the primary first, each port once
    tcp_ports: frozenset[int]
    service: str | None
    version: str | None
    instance: str | None
    fault_rate: float
    latency: float  # seconds
    ready_delay: float  # seconds
    crash_on_start: bool
    secrets_dir: Path | None


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{name}={raw!r} must be between {low:g} and {high:g}")
    return value


def _port(name: str, raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


def service_name(instance: str | None, version: str | None) -> str | None:
    """The service an instance id belongs to: `api-2` -> `api`, `api-1.2.0-0` -> `api` (version 1.2.0)."""
    if not instance:
        return None
    name = re.sub(r"-\d+$", "", instance)
    if version and name.endswith(f"-{version}") and len(name) > len(version) + 1:
        name = name[: -len(version) - 1]
    return name


def load_settings(env: Mapping[str, str], argv: Sequence[str]) -> Settings:
    """The settings of this run; ConfigError names the variable or option that is wrong."""
    parser = argparse.ArgumentParser(prog="standin.py", description=DESCRIPTION)
    parser.add_argument("--host", default=HOST, help=f"address to listen on (default {HOST})")
    parser.add_argument("--service", default=None, help="service name for /version (default $SHIPMATE_SERVICE)")
    parser.add_argument("--tcp", nargs="?", const="*", default="", metavar="NAME[,NAME...]",
                        help="plain TCP echo instead of HTTP: on every port, or on the named PORT_<NAME> ports")
    args = parser.parse_args(list(argv))
    ports: dict[int, str] = {}
    ports[_port("PORT", env.get("PORT") or str(DEFAULT_PORT))] = "PORT"
    for key in sorted(env):
        if key.startswith("PORT_") and len(key) > len("PORT_"):
            ports.setdefault(_port(key, env[key]), key)
    tcp: set[int] = set()
    if args.tcp == "*":
        tcp = set(ports)
    elif args.tcp:
        for name in args.tcp.split(","):
            key = "PORT_" + name.strip().upper().replace("-", "_")
            if key not in env:
                raise ConfigError(f"--tcp {name.strip()}: no {key} in the environment")
            tcp.add(_port(key, env[key]))
    version = env.get("APP_VERSION") or None
    instance = env.get("SHIPMATE_INSTANCE") or None
    secrets_dir = env.get("SHIPMATE_SECRETS_DIR") or None
    return Settings(
        host=args.host,
        ports=tuple((name, port) for port, name in ports.items()),
        tcp_ports=frozenset(tcp),
        service=args.service or env.get("SHIPMATE_SERVICE") or service_name(instance, version),
        version=version,
        instance=instance,
        fault_rate=_number(env, "FAULT_RATE", 0.0, 0.0, 1.0),
        latency=_number(env, "LATENCY_MS", 0.0, 0.0, 600_000.0) / 1000.0,
        ready_delay=_number(env, "READY_DELAY", 0.0, 0.0, 86_400.0),
        crash_on_start=env.get("CRASH_ON_START", "").strip().lower() in TRUTHY,
        secrets_dir=Path(secrets_dir) if secrets_dir else None,
    )


# --- counting traffic ------------------------------------------------------------------------


class Metrics:
    """Requests by status code and a latency histogram, safe to update from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[int, int] = {}
        self._buckets = [0] * len(BUCKETS)
        self._count = 0
        self._sum = 0.0

    def observe(self, code: int, seconds: float) -> None:
        with self._lock:
            self._codes[code] = self._codes.get(code, 0) + 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1
            self._count += 1
            self._sum += seconds

    def text(self, info: Mapping[str, str | None]) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        labels = ",".join(f'{k}="{_label(v or "")}"' for k, v in info.items())
        lines = ["# HELP standin_info The stand-in service and the version it runs.",
                 "# TYPE standin_info gauge", f"standin_info{{{labels}}} 1",
                 "# HELP http_requests_total Requests answered, by status code (health checks and scrapes "
                 "not counted).",
                 "# TYPE http_requests_total counter"]
        with self._lock:
            lines += [f'http_requests_total{{code="{code}"}} {n}' for code, n in sorted(self._codes.items())]
            lines += ["# HELP http_request_duration_seconds Time to answer a request, in seconds.",
                      "# TYPE http_request_duration_seconds histogram"]
            lines += [f'http_request_duration_seconds_bucket{{le="{bound}"}} {n}'
                      for bound, n in zip(BUCKETS, self._buckets, strict=True)]
            lines += [f'http_request_duration_seconds_bucket{{le="+Inf"}} {self._count}',
                      f"http_request_duration_seconds_sum {self._sum:.6f}",
                      f"http_request_duration_seconds_count {self._count}"]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def secret_names(directory: Path) -> list[str]:
    """Names of the files delivered in a secrets directory; the `..data` machinery is left out."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return sorted(e.name for e in entries if not e.name.startswith("..") and e.is_file())


# --- HTTP ------------------------------------------------------------------------------------


class StandinServer(ThreadingHTTPServer):
    """One HTTP listener; every listener of the process shares the settings and the counters."""

    daemon_threads = True  # keep-alive connections must not hold up the exit on SIGTERM
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: Settings, metrics: Metrics, started: float) -> None:
        super().__init__(address, Handler)
        self.config = config
        self.metrics = metrics
        self.started = started


class Handler(BaseHTTPRequestHandler):
    """Answers one connection, request after request (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out as two writes: no 40 ms delayed-ACK stall between them
    server_version = "shipmate-standin/1"
    timeout = IDLE_TIMEOUT
    server: StandinServer

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request on stderr, which the local target captures as the instance's log."""
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.split("?", 1)[0]
        if path != "/metrics" and not _kind(path):  # probes and scrapes every few seconds would drown the log
            super().log_request(code, size)

    def _read_body(self) -> bool:
        """Read (and drop) the request body so the next request on the connection starts clean."""
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True  # a chunked body is not read: this connection ends here
            return True
        raw = self.headers.get("Content-Length", "0").strip() or "0"
        if not raw.isdigit() or int(raw) > MAX_BODY:
            return False
        remaining = int(raw)
        while remaining:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                return False
            remaining -= len(chunk)
        return True

    def _handle(self) -> None:
        began = time.monotonic()
        config = self.server.config
        if not self._read_body():
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "bad or too large a request body"})
            return
        path = self.path.split("?", 1)[0]
        kind = _kind(path)
        if kind == "live":
            self._send(HTTPStatus.OK, "ok\n")
            return
        if kind == "ready":
            waited = time.monotonic() - self.server.started
            if waited < config.ready_delay:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"starting ({config.ready_delay - waited:.1f} s left)\n")
            else:
                self._send(HTTPStatus.OK, "ok\n")
            return
        if path == "/metrics":
            self._send(HTTPStatus.OK, self.server.metrics.text(
                {"service": config.service, "version": config.version, "instance": config.instance}),
                content_type="text/plain; version=0.0.4; charset=utf-8")
            return
        if config.latency:
            time.sleep(config.latency)
        body: dict[str, Any]
        if config.fault_rate and random.random() < config.fault_rate:  # noqa: S311 - not for security
            code = HTTPStatus.INTERNAL_SERVER_ERROR
            body = {"error": f"injected fault (FAULT_RATE={config.fault_rate:g})"}
        elif path == "/version":
            code, body = HTTPStatus.OK, {"service": config.service, "version": config.version,
                                         "instance": config.instance}
        elif path == "/secrets":
            if config.secrets_dir is None:
                code, body = HTTPStatus.NOT_FOUND, {"error": "SHIPMATE_SECRETS_DIR is not set"}
            else:
                names = secret_names(config.secrets_dir)
                code, body = HTTPStatus.OK, {"count": len(names), "names": names}
        else:
            code, body = HTTPStatus.OK, {"method": self.command, "path": self.path, "version": config.version,
                                         "service": config.service, "instance": config.instance}
        self._send(code, body)
        self.server.metrics.observe(int(code), time.monotonic() - began)

    # http.server calls do_<METHOD>: every method gets the same answer
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle  # noqa: N815

    def _send(self, code: HTTPStatus, body: str | dict[str, Any], content_type: str | None = None) -> None:
        if isinstance(body, str):
            data, kind = body.encode(), "text/plain; charset=utf-8"
        else:
            data, kind = (json.dumps(body, sort_keys=True) + "\n").encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", content_type or kind)
        self.send_header("Content-Length", str(len(data)))
        if self.server.config.version:
            self.send_header("X-Version", self.server.config.version)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _kind(path: str) -> str | None:
    """"ready" or "live" for a probe path, None for anything else."""
    segments = {s.lower() for s in path.split("/") if s}
    if segments & READY_SEGMENTS:
        return "ready"
    if segments & LIVE_SEGMENTS:
        return "live"
    return None


# --- TCP -------------------------------------------------------------------------------------


class EchoHandler(socketserver.BaseRequestHandler):
    """Sends back what it receives, until the peer closes or stays idle too long."""

    request: socket.socket

    def handle(self) -> None:
        self.request.settimeout(IDLE_TIMEOUT)
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            return


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


# --- the process -----------------------------------------------------------------------------


def serve(config: Settings) -> int:
    """Listen on every port until SIGTERM or SIGINT; the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    metrics = Metrics()
    servers: list[socketserver.TCPServer] = []
    serving: list[socketserver.TCPServer] = []
    try:
        for name, port in config.ports:
            try:
                if port in config.tcp_ports:
                    servers.append(EchoServer((config.host, port), EchoHandler))
                else:
                    servers.append(StandinServer((config.host, port), config, metrics, started))
            except OSError as error:
                _say(f"cannot listen on {config.host}:{port} ({name}): {error.strerror}")
                return 1
        for server in servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
            serving.append(server)
        listening = ", ".join(f"{name}={port}{'/tcp' if port in config.tcp_ports else ''}"
                              for name, port in config.ports)
        who = " ".join(x for x in (config.service or "service", config.version) if x)
        _say(f"{who} listening on {config.host} ({listening})")
        while not stop.wait(0.5):
            pass
    finally:
        for server in serving:  # stop accepting; open connections end with the process (daemon threads)
            server.shutdown()
        for server in servers:
            server.server_close()
    _say("stopped")
    return 0


def _say(message: str) -> None:
    """A line on stderr, where the local target's log capture reads it."""
    sys.stderr.write(f"standin: {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    try:
        config = load_settings(os.environ if env is None else env, sys.argv[1:] if argv is None else argv)
    except ConfigError as error:
        _say(str(error))
        return 2
    if config.crash_on_start:
        _say("CRASH_ON_START is set: exiting with 1 as asked (a version that cannot start)")
        return 1
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
