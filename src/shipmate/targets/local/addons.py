"""Addons of the local target: PostgreSQL, MariaDB, Redis, NATS, RabbitMQ and Prometheus run from
this machine's own binaries, each a private instance with its own data directory and free ports.

Called by the local target (`up`, `down`, `down --purge`, `status`) and by the secrets layer, which
turns `connection()` into the values a `from: {addon: X, key: url|password|username|host}` secret
refers to. One class per kind; `addon_for(plan, state_dir)` picks it.

Layout, under `<state dir>/addons/<name>/` (0700):

    data/              the server's data (survives stop/start; `purge()` removes the whole directory)
    run/               sockets, pid files and generated configuration (0600 when it holds a secret)
    secrets/password   the generated password, 0600; never logged, never on a command line
    log/<kind>.log     the server's stdout and stderr
    addon.json         the ports and pid, so that a later shipmate process finds a running instance

Every server listens on 127.0.0.1 only, on a port from the kernel's ephemeral range (kept across
restarts while it stays free), never on the standard ports where the machine's shared services are.
Each server runs in a session of its own, so a Ctrl-C of shipmate does not stop the databases, and
`stop()` ends its whole process group.

PostgreSQL and WAL archiving: `wal_level = replica` and `archive_mode = on` are set from the first
start (changing `archive_mode` later needs a restart), with `archive_command = '/bin/true'`, which
marks each segment done without keeping it: nothing can be restored before a base backup exists.
The backup issue replaces it by writing `run/../data/shipmate-archive.conf` (included last, so its
`archive_command` wins) and reloading the server; no restart is needed.

When shipmate runs as root (CI, containers), PostgreSQL refuses to start; it is then run inside a
user namespace (`unshare --user --map-user`) where the state directory's owner is an ordinary user,
so the data directory needs no chown and no parent directory has to be opened to other users.

This module must not decide what runs (the plan does), log a password or put one on a command line,
or touch anything outside the addon's own directory and ports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import secrets as _random
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from shipmate.errors import ExternalError, UserError, truncate
from shipmate.plan.models import AddonPlan
from shipmate.targets.local.ports import LOOPBACK, free_port

ConnectionKey = Literal["url", "password", "username", "host"]

# Where Debian puts the binaries that are not on a plain user's PATH, searched after PATH.
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_POSTGRES_DIRS = "/usr/lib/postgresql"
_SOCKET_DIR_MAX = 80  # leaves room for a socket's own name (".s.PGSQL.65535.lock", "mysqld.sock")
_RABBITMQ_DIR = "/usr/lib/rabbitmq/bin"  # the real scripts; /usr/sbin's wrapper switches to the rabbitmq user


class MissingBinary(UserError):
    """A binary an addon needs is not installed; the message names the Debian package."""


class AddonFailed(ExternalError):
    """An addon's server did not start, did not become ready, or a setup command failed."""


@dataclass(frozen=True)
class Connection:
    """How a service reaches an addon. `password` and `url` (which holds it) are kept out of repr."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    url: str = field(repr=False)
    database: str | None = None

    def value(self, key: ConnectionKey) -> str:
        """The value a `from: {addon: X, key: ...}` secret takes."""
        values: dict[str, str] = {"url": self.url, "password": self.password, "username": self.username,
                                  "host": self.host}
        return values[key]


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (a reader never sees half of it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def _started_at(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), None when it is gone or a zombie. With the pid
    it names one process for good: a pid reused after a reboot or a crash has another start time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _alive(pid: int, started: int | None = None) -> bool:
    """True while `pid` runs and, when `started` is given, is still the process that started then."""
    now = _started_at(pid)
    return now is not None and (started is None or now == started)


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs we built
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class Addon(ABC):
    """One addon instance on this machine. `start()` is idempotent; `stop()` keeps the data;
    `purge()` stops and removes it. Subclasses say which binaries they need, how to initialise the
    data directory, the command line, and how to tell that the server is ready."""

    kind: ClassVar[str]
    binaries: ClassVar[Mapping[str, str]] = {}  # binary name -> Debian package
    default_user: ClassVar[str] = ""
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout: ClassVar[float] = 60.0

    def __init__(self, plan: AddonPlan, state_dir: Path | str, *, path: str | None = None) -> None:
        """`path` replaces the binary search path (PATH plus Debian's sbin and versioned
        directories); tests point it at a directory of their own."""
        self.plan = plan
        self.name = plan.name
        self.home = Path(state_dir) / "addons" / plan.name
        self._path = path
        self._proc: subprocess.Popen[bytes] | None = None

    # --- layout ------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix sockets go: `run/`, unless its path is too long for a socket
        address (the kernel takes 107 bytes), as under a deep project or test directory; then a
        private directory `/tmp/shipmate-<hash of the addon's home>` (0700, checked to be ours)."""
        if len(str(self.run_dir)) <= _SOCKET_DIR_MAX:
            return self.run_dir
        digest = hashlib.sha256(str(self.home.absolute()).encode()).hexdigest()[:16]
        short = Path(tempfile.gettempdir()) / f"shipmate-{digest}"
        owner = self.run_dir.stat()
        try:
            short.mkdir(mode=0o700)
            os.chown(short, owner.st_uid, owner.st_gid)
        except FileExistsError:
            pass
        found = short.lstat()
        if not stat.S_ISDIR(found.st_mode) or found.st_uid != owner.st_uid or found.st_mode & 0o077:
            raise AddonFailed(f"{short} exists but is not a private directory of this user; remove it")
        return short

    @property
    def log_file(self) -> Path:
        return self.home / "log" / f"{self.kind}.log"

    @property
    def password_file(self) -> Path:
        return self.home / "secrets" / "password"

    def _state(self) -> dict[str, int]:
        try:
            raw = json.loads((self.home / "addon.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: int(v) for k, v in raw.items() if isinstance(v, int)}

    def _save_state(self, **values: int | None) -> None:
        state = self._state()
        for key, value in values.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        _write_private(self.home / "addon.json", json.dumps(state, sort_keys=True))

    # --- what a caller reads -------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The port clients connect to (kept across restarts while free)."""
        return self._state().get("port")

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        if self._proc is not None:
            self._proc.poll()  # reap our own child once it has died, so it is not counted alive
        state = self._state()
        pid = state.get("pid")
        return pid if pid is not None and _alive(pid, state.get("pid_started")) else None

    @property
    def username(self) -> str:
        return self.default_user

    @property
    def password(self) -> str:
        """The generated password, created on first use and kept in a 0600 file."""
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            pass
        # URL-safe, so it can stand in a connection URL as it is.
        _write_private(self.password_file, _random.token_urlsafe(24))
        return self.password_file.read_text(encoding="utf-8").strip()

    @abstractmethod
    def connection(self) -> Connection:
        """Host, port, user, password and URL for clients. Valid once `start()` has chosen the port."""

    # --- binaries ------------------------------------------------------------------------------

    def _search_path(self) -> str:
        if self._path is not None:
            return self._path
        return os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_DIRS])

    def binary(self, name: str) -> str:
        """The absolute path of `name`, or MissingBinary naming the package that provides it."""
        found = shutil.which(name, path=self._search_path())
        if found is None:
            label = self.name if self.name == self.kind else f"{self.name} ({self.kind})"
            raise MissingBinary(f"{label}: {name} not found; install the Debian package "
                                f"{self.binaries.get(name, name)}")
        return found

    def check_binaries(self) -> None:
        for name in self.binaries:
            self.binary(name)

    # --- the server ----------------------------------------------------------------------------

    def _ports(self) -> dict[str, int]:
        """Choose this start's ports: the remembered ones while they are free, new ones otherwise."""
        state = self._state()
        ports = {key: free_port(prefer=state.get(key)) for key in ("port", *self._extra_ports())}
        self._save_state(**ports)
        return ports

    def _extra_ports(self) -> tuple[str, ...]:
        """Names of more ports than the client port (a monitoring port, a distribution port)."""
        return ()

    def _prepare(self) -> None:  # noqa: B027 - a hook: most kinds have something to prepare, not all
        """Initialise the data directory if it is new and write this start's configuration."""

    @abstractmethod
    def _command(self) -> list[str]:
        """The command line of the server, in the foreground."""

    def _environment(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(self.home)}

    @abstractmethod
    def ready(self) -> bool:
        """True when the server accepts clients (authenticating is the client's business)."""

    def _after_ready(self) -> None:  # noqa: B027 - a hook, empty for kinds set up by configuration
        """Setup that needs the running server (databases, users)."""

    def running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float | None = None) -> None:
        """Start the server unless it runs, and return once it is ready and set up."""
        self.check_binaries()
        limit = time.monotonic() + (timeout or self.start_timeout)
        if self.running():
            self._wait_ready(limit)
            return
        for directory in (self.home, self.run_dir, self.log_file.parent, self.password_file.parent):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.password  # noqa: B018 - created now, before any configuration refers to it
        self._ports()
        self._prepare()
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(), env=self._environment(), cwd=self.home, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._save_state(pid=self._proc.pid, pid_started=_started_at(self._proc.pid))
        try:
            self._wait_ready(limit)
            self._after_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, limit: float) -> None:
        while True:
            if self.pid is None:
                raise AddonFailed(f"{self.name} ({self.kind}) exited while starting; its log "
                                  f"{self.log_file} ends with: {self.log_tail()}")
            if self.ready():
                return
            if time.monotonic() > limit:
                raise AddonFailed(f"{self.name} ({self.kind}) not ready after {self.start_timeout:.0f} s; "
                                  f"its log {self.log_file} ends with: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return truncate(" | ".join(text.strip().splitlines()[-lines:]), 600)

    def stop(self, grace: float = 30.0) -> None:
        """Stop the server gracefully (its kind's signal), then its whole process group with SIGKILL
        after `grace` seconds. The data stays."""
        pid = self.pid
        if pid is not None:
            self._signal(pid)
            deadline = time.monotonic() + grace
            while _alive(pid) and time.monotonic() < deadline:
                if self._proc is not None and self._proc.pid == pid:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._proc.wait(timeout=0.05)
                else:
                    time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # whatever is left of its group (its own session)
            if self._proc is not None and self._proc.pid == pid:
                self._proc.wait()
        self._proc = None
        if self.home.exists():
            self._save_state(pid=None, pid_started=None)

    def _signal(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self.stop_signal)

    def purge(self) -> None:
        """Stop the server and remove its data, configuration, password and logs."""
        self.stop()
        if self.run_dir.exists() and self.socket_dir != self.run_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def _run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, what: str,
             input_text: str | None = None, timeout: float = 120.0) -> str:
        """Run a setup command to completion; a failure is AddonFailed with its output, truncated."""
        try:
            done = subprocess.run(list(command), env=dict(env or self._environment()), cwd=self.home,
                                  input=input_text, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as error:
            raise AddonFailed(f"{self.name} ({self.kind}): {what} did not finish in {timeout:.0f} s") from error
        if done.returncode != 0:
            raise AddonFailed(f"{self.name} ({self.kind}): {what} failed (exit {done.returncode}): "
                              f"{truncate((done.stderr or done.stdout).strip())}")
        return done.stdout

    def _require_port(self) -> int:
        port = self.port
        if port is None:
            raise AddonFailed(f"{self.name} ({self.kind}) has no port yet: start it first")
        return port

    def _tcp(self, port: int | None = None) -> socket.socket | None:
        try:
            return socket.create_connection((LOOPBACK, port or self._require_port()), timeout=2.0)
        except OSError:
            return None


# --- PostgreSQL --------------------------------------------------------------------------------

def _unprivileged_ids() -> tuple[int, int]:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    return 65534, 65534


class Postgres(Addon):
    """PostgreSQL: initdb with a scram-protected superuser, the plan's databases, WAL archiving ready."""

    kind = "postgres"
    binaries: ClassVar[Mapping[str, str]] = {"initdb": "postgresql", "postgres": "postgresql",
                                             "psql": "postgresql-client"}
    default_user = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit

    def _search_path(self) -> str:
        if self._path is not None:
            return self._path
        versions = sorted((p for p in Path(_POSTGRES_DIRS).glob("*/bin") if p.parent.name.isdigit()),
                          key=lambda p: int(p.parent.name), reverse=True)
        return os.pathsep.join([super()._search_path(), *map(str, versions)])

    def check_binaries(self) -> None:
        super().check_binaries()
        if os.geteuid() == 0 and shutil.which("unshare", path=self._search_path()) is None:
            raise MissingBinary(f"{self.name} (postgres): unshare not found (needed to run PostgreSQL "
                                "as root); install the Debian package util-linux")

    @property
    def username(self) -> str:
        return dict(self.plan.config).get("POSTGRES_USER", self.default_user)

    @property
    def database(self) -> str:
        return self.plan.databases[0] if self.plan.databases else "postgres"

    def _unprivileged(self, command: list[str]) -> list[str]:
        """PostgreSQL refuses to run as root: then run it as an ordinary user of a user namespace."""
        if os.geteuid() != 0:
            return command
        uid, gid = _unprivileged_ids()
        unshare = shutil.which("unshare", path=self._search_path()) or "unshare"
        return [unshare, "--user", f"--map-user={uid}", f"--map-group={gid}", "--", *command]

    def _prepare(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-made one from an interrupted initdb
            self._run(self._unprivileged([
                self.binary("initdb"), "--pgdata", str(self.data_dir), "--username", self.username,
                "--pwfile", str(self.password_file), "--auth", "scram-sha-256", "--encoding", "UTF8",
                "--locale", "C", "--no-instructions"]), what="initdb")
            with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
                conf.write("\n# shipmate: settings of the local target, then the backup issue's archiving\n"
                           "include 'shipmate.conf'\ninclude_if_exists 'shipmate-archive.conf'\n")
        (self.data_dir / "shipmate.conf").write_text(
            "# Written by shipmate at every start; edit shipmate-archive.conf to archive WAL.\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_permissions = 0700\n"
            "wal_level = replica\n"
            "archive_mode = on\n"
            "archive_command = '/bin/true'\n"
            "max_wal_senders = 4\n"
            "logging_collector = off\n",
            encoding="utf-8")

    def _command(self) -> list[str]:
        return self._unprivileged([self.binary("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                                   "-k", str(self.socket_dir)])

    def ready(self) -> bool:
        """Accepting connections: a startup message is answered with an authentication request."""
        sock = self._tcp()
        if sock is None:
            return False
        with sock:
            try:
                params = b"user\x00" + self.username.encode() + b"\x00database\x00postgres\x00\x00"
                sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
                if _recv_exact(sock, 1) != b"R":
                    return False
                # Read the whole request, so closing does not reset the connection (a log line each time).
                (length,) = struct.unpack("!i", _recv_exact(sock, 4))
                _recv_exact(sock, length - 4)
            except OSError:
                return False
            return True

    def _psql(self, sql: str, database: str = "postgres") -> str:
        env = self._environment() | {"PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}
        return self._run([self.binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA",
                          "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.username,
                          "-d", database, "-c", sql], env=env, what="psql")

    def _after_ready(self) -> None:
        existing = set(self._psql("SELECT datname FROM pg_database").split())
        for name in self.plan.databases:
            if name not in existing:
                quoted = '"' + name.replace('"', '""') + '"'
                self._psql(f"CREATE DATABASE {quoted}")

    def connection(self) -> Connection:
        port = self._require_port()
        return Connection(LOOPBACK, port, self.username, self.password,
                          f"postgresql://{self.username}:{self.password}@{LOOPBACK}:{port}/{self.database}",
                          self.database)


# --- MariaDB (kind mysql) ----------------------------------------------------------------------

class MariaDB(Addon):
    """MariaDB for kind mysql: a private datadir, root's password set from an init file."""

    kind = "mysql"
    binaries: ClassVar[Mapping[str, str]] = {"mariadbd": "mariadb-server", "mariadb-install-db": "mariadb-server"}
    default_user = "root"

    @property
    def database(self) -> str | None:
        return self.plan.databases[0] if self.plan.databases else None

    @property
    def _init_file(self) -> Path:
        return self.home / "secrets" / "init.sql"

    def _as_root(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def _prepare(self) -> None:
        if not (self.data_dir / "mysql").is_dir():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._run([self.binary("mariadb-install-db"), "--no-defaults", f"--datadir={self.data_dir}",
                       "--skip-test-db", "--auth-root-authentication-method=socket", *self._as_root()],
                      what="mariadb-install-db")

        def literal(text: str) -> str:
            return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

        user, password = literal(self.username), literal(self.password)
        lines = []
        for host in ("'localhost'", "'127.0.0.1'"):
            lines += [f"CREATE USER IF NOT EXISTS {user}@{host} IDENTIFIED BY {password};",
                      f"ALTER USER {user}@{host} IDENTIFIED BY {password};",
                      f"GRANT ALL PRIVILEGES ON *.* TO {user}@{host} WITH GRANT OPTION;"]
        lines += [f"CREATE DATABASE IF NOT EXISTS `{name.replace('`', '``')}`;" for name in self.plan.databases]
        _write_private(self._init_file, "\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [self.binary("mariadbd"), "--no-defaults", f"--datadir={self.data_dir}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.socket_dir / 'mysqld.sock'}",
                f"--pid-file={self.run_dir / 'mariadbd.pid'}", f"--init-file={self._init_file}",
                "--skip-name-resolve", "--innodb-buffer-pool-size=64M", *self._as_root()]

    def ready(self) -> bool:
        """The server's greeting (protocol 10) arrives; it runs the init file before it listens."""
        sock = self._tcp()
        if sock is None:
            return False
        with sock:
            try:
                header = _recv_exact(sock, 4)
                return _recv_exact(sock, 1) == b"\x0a" and header[0] > 1
            except OSError:
                return False

    def _after_ready(self) -> None:
        self._init_file.unlink(missing_ok=True)  # it holds the password; the server has read it

    def connection(self) -> Connection:
        port = self._require_port()
        path = f"/{self.database}" if self.database else "/"
        return Connection(LOOPBACK, port, self.username, self.password,
                          f"mysql://{self.username}:{self.password}@{LOOPBACK}:{port}{path}", self.database)


# --- Redis -------------------------------------------------------------------------------------

class Redis(Addon):
    """Redis with requirepass and an append-only file."""

    kind = "redis"
    binaries: ClassVar[Mapping[str, str]] = {"redis-server": "redis-server"}
    default_user = "default"

    def _prepare(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        _write_private(self.run_dir / "redis.conf", "\n".join([
            f"port {self.port}", "bind 127.0.0.1", "protected-mode yes", "daemonize no",
            f'dir "{self.data_dir}"', "appendonly yes", "save 60 1000",
            f'pidfile "{self.run_dir / "redis.pid"}"', f'requirepass "{self.password}"', ""]))

    def _command(self) -> list[str]:
        return [self.binary("redis-server"), str(self.run_dir / "redis.conf")]

    def ready(self) -> bool:
        sock = self._tcp()
        if sock is None:
            return False
        with sock:
            try:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(256)
                    if not chunk:
                        return False
                    reply += chunk
            except OSError:
                return False
            return reply == b"+OK\r\n+PONG\r\n"

    def connection(self) -> Connection:
        port = self._require_port()
        return Connection(LOOPBACK, port, self.username, self.password,
                          f"redis://{self.username}:{self.password}@{LOOPBACK}:{port}/0")


# --- NATS --------------------------------------------------------------------------------------

class Nats(Addon):
    """NATS with JetStream, token authentication (as the rendered Kubernetes addon) and monitoring."""

    kind = "nats"
    binaries: ClassVar[Mapping[str, str]] = {"nats-server": "nats-server"}
    default_user = ""  # a token: the URL carries it where a user name would stand

    def _extra_ports(self) -> tuple[str, ...]:
        return ("monitor_port",)

    @property
    def monitor_port(self) -> int | None:
        return self._state().get("monitor_port")

    def _prepare(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        _write_private(self.run_dir / "nats.conf", "\n".join([
            f'listen: "127.0.0.1:{self.port}"', f'http: "127.0.0.1:{self.monitor_port}"',
            f"server_name: {json.dumps('shipmate-' + self.name)}",
            f"jetstream {{ store_dir: {json.dumps(str(self.data_dir))} }}",
            f"authorization {{ token: {json.dumps(self.password)} }}",
            f"pid_file: {json.dumps(str(self.run_dir / 'nats.pid'))}", ""]))

    def _command(self) -> list[str]:
        return [self.binary("nats-server"), "-c", str(self.run_dir / "nats.conf")]

    def ready(self) -> bool:
        return http_status(f"http://{LOOPBACK}:{self.monitor_port}/healthz") == 200

    def connection(self) -> Connection:
        port = self._require_port()
        return Connection(LOOPBACK, port, self.username, self.password, f"nats://{self.password}@{LOOPBACK}:{port}")


# --- RabbitMQ ----------------------------------------------------------------------------------

class RabbitMQ(Addon):
    """RabbitMQ: a uniquely named node with its own epmd, cookie, ports and a user of its own."""

    kind = "rabbitmq"
    binaries: ClassVar[Mapping[str, str]] = {"rabbitmq-server": "rabbitmq-server", "epmd": "erlang-base"}
    start_timeout = 90.0

    def __init__(self, plan: AddonPlan, state_dir: Path | str, *, path: str | None = None) -> None:
        super().__init__(plan, state_dir, path=path)
        self._epmd: subprocess.Popen[bytes] | None = None

    def _search_path(self) -> str:
        if self._path is not None:
            return self._path
        return os.pathsep.join([_RABBITMQ_DIR, super()._search_path()])

    def _extra_ports(self) -> tuple[str, ...]:
        return ("dist_port", "epmd_port")

    @property
    def username(self) -> str:
        return dict(self.plan.config).get("RABBITMQ_DEFAULT_USER", self.plan.name)

    @property
    def nodename(self) -> str:
        # Stable for the directory: Mnesia keeps the data under the node's name.
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:10]
        return f"shipmate-{self.name}-{digest}@localhost"

    def _environment(self) -> dict[str, str]:
        state = self._state()
        return super()._environment() | {
            "RABBITMQ_NODENAME": self.nodename, "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(state.get("port", 0)), "RABBITMQ_DIST_PORT": str(state.get("dist_port", 0)),
            "ERL_EPMD_PORT": str(state.get("epmd_port", 0)), "ERL_EPMD_ADDRESS": LOOPBACK,
            "RABBITMQ_MNESIA_BASE": str(self.data_dir / "mnesia"), "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.run_dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.run_dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.run_dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.run_dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.run_dir / "rabbitmq.pid"),
            "RABBITMQ_LOGS": "-", "RABBITMQ_SERVER_START_ARGS": "-start_epmd false",
        }

    def _prepare(self) -> None:
        (self.data_dir / "mnesia").mkdir(mode=0o700, parents=True, exist_ok=True)
        # HOME is the addon directory: the Erlang cookie there is this node's alone.
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            _write_private(cookie, _random.token_hex(20))
            cookie.chmod(0o400)
        _write_private(self.run_dir / "rabbitmq.conf", "\n".join([
            f"listeners.tcp.default = 127.0.0.1:{self.port}", f"default_user = {self.username}",
            f"default_pass = {self.password}", "default_vhost = /", "loopback_users = none",
            "log.console = true", "log.file = false", ""]))
        _write_private(self.run_dir / "advanced.config", "[].\n")
        _write_private(self.run_dir / "rabbitmq-env.conf", "")
        _write_private(self.run_dir / "enabled_plugins", "[].\n")  # no management listener on 15672
        self._start_epmd()

    def _start_epmd(self) -> None:
        """This node's own epmd on a private port, so nothing registers with the machine's."""
        state = self._state()
        pid = state.get("epmd_pid")
        if pid is not None and _alive(pid, state.get("epmd_started")):
            return
        with self.log_file.open("ab") as log:
            epmd = subprocess.Popen(
                [self.binary("epmd"), "-port", str(self._state()["epmd_port"]), "-address", LOOPBACK],
                env=self._environment(), cwd=self.home, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self._epmd = epmd
        self._save_state(epmd_pid=epmd.pid, epmd_started=_started_at(epmd.pid))

    def _command(self) -> list[str]:
        return [self.binary("rabbitmq-server")]

    def ready(self) -> bool:
        """The AMQP 0-9-1 handshake gets Connection.Start back (the listener opens last in boot)."""
        sock = self._tcp()
        if sock is None:
            return False
        with sock:
            try:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return _recv_exact(sock, 1) == b"\x01"
            except OSError:
                return False

    def stop(self, grace: float = 30.0) -> None:
        super().stop(grace)
        state = self._state()
        pid = state.get("epmd_pid")
        if pid is not None:
            if _alive(pid, state.get("epmd_started")):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # epmd keeps no state worth a graceful stop
            if self._epmd is not None and self._epmd.pid == pid:
                self._epmd.wait()
            if self.home.exists():
                self._save_state(epmd_pid=None, epmd_started=None)
        self._epmd = None

    def connection(self) -> Connection:
        port = self._require_port()
        return Connection(LOOPBACK, port, self.username, self.password,
                          f"amqp://{self.username}:{self.password}@{LOOPBACK}:{port}/%2F")


# --- Prometheus --------------------------------------------------------------------------------

class Prometheus(Addon):
    """Prometheus scraping the routers and services; targets can change while it runs."""

    kind = "prometheus"
    binaries: ClassVar[Mapping[str, str]] = {"prometheus": "prometheus"}

    def __init__(self, plan: AddonPlan, state_dir: Path | str, *, path: str | None = None,
                 targets: Sequence[str] = (), scrape_interval: str = "5s") -> None:
        """`targets` are `host:port` or `host:port/path` (default path /metrics)."""
        super().__init__(plan, state_dir, path=path)
        self._targets = tuple(targets)
        self._interval = scrape_interval

    def set_targets(self, targets: Sequence[str]) -> None:
        """Replace the scrape targets; a running Prometheus rereads them within seconds."""
        self._targets = tuple(targets)
        if self.home.exists():
            self._write_targets()

    def _write_targets(self) -> None:
        groups: dict[str, list[str]] = {}
        for target in self._targets:
            address, _, path = target.partition("/")
            groups.setdefault("/" + (path or "metrics"), []).append(address)
        _write_private(self.run_dir / "targets.json", json.dumps(
            [{"targets": sorted(addresses), "labels": {"__metrics_path__": path}}
             for path, addresses in sorted(groups.items())], indent=2))

    def _prepare(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._write_targets()
        _write_private(self.run_dir / "prometheus.yml", json.dumps({  # JSON is YAML
            "global": {"scrape_interval": self._interval, "evaluation_interval": self._interval},
            "scrape_configs": [{"job_name": "shipmate", "file_sd_configs": [
                {"files": [str(self.run_dir / "targets.json")], "refresh_interval": "5s"}]}],
        }, indent=2))

    def _command(self) -> list[str]:
        return [self.binary("prometheus"), f"--config.file={self.run_dir / 'prometheus.yml'}",
                f"--web.listen-address={LOOPBACK}:{self.port}", f"--storage.tsdb.path={self.data_dir}",
                "--web.enable-lifecycle"]

    def ready(self) -> bool:
        return http_status(f"http://{LOOPBACK}:{self.port}/-/ready") == 200

    def connection(self) -> Connection:
        port = self._require_port()
        return Connection(LOOPBACK, port, "", "", f"http://{LOOPBACK}:{port}")


# --- generic -----------------------------------------------------------------------------------

class Generic(Addon):
    """An addon known only by its image: it runs locally only when given a command to run (the spec's
    `run`), e.g. a stand-in that speaks enough of the image's protocol for the services using it."""

    kind = "generic"

    def __init__(self, plan: AddonPlan, state_dir: Path | str, *, path: str | None = None,
                 run: Sequence[str] = (), workdir: Path | str | None = None) -> None:
        """`run` is the command line; it gets the addon's config, PORT, DATA_DIR and PASSWORD_FILE in
        its environment. `workdir` is the directory it runs in (the spec's directory, so that a
        relative path in `run` means what it means for a service); default the addon's own home."""
        super().__init__(plan, state_dir, path=path)
        self._run_command = tuple(run)
        self._workdir = None if workdir is None else Path(workdir).absolute()  # the server starts elsewhere

    def check_binaries(self) -> None:
        if not self._run_command:
            raise UserError(f"{self.name} (generic): a generic addon runs locally only with a `run` command; "
                            f"its image {self.plan.image} needs a container runtime, which the local target "
                            "does not have. Mark the addon external, or give it a command to run")
        if self._workdir is not None and not self._workdir.is_dir():
            raise UserError(f"{self.name} (generic): no directory {self._workdir} to run `run` in")
        self._program()

    def _program(self) -> str:
        """The absolute path of the program: a name is looked up on the search path, a relative path
        (`./bin/stub`) is taken from the working directory."""
        program = self._run_command[0]
        if "/" not in program:
            return self.binary(program)
        found = Path(program) if self._workdir is None else self._workdir / program
        if not (found.is_file() and os.access(found, os.X_OK)):
            raise MissingBinary(f"{self.name} (generic): {found} is not an executable file")
        return str(found)

    def _prepare(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)

    def _environment(self) -> dict[str, str]:
        # The config first, as the container's environment on Kubernetes; shipmate's own names win.
        return super()._environment() | dict(self.plan.config) | {
            "PORT": str(self.port), "DATA_DIR": str(self.data_dir), "PASSWORD_FILE": str(self.password_file)}

    def _command(self) -> list[str]:
        argv = [self._program(), *self._run_command[1:]]
        if self._workdir is None:
            return argv
        # Every addon starts in its home; this one moves to its working directory first, and `exec`
        # leaves no wrapper shell behind (a `run` string's own shell may stay: see stop()).
        return ["/bin/sh", "-c", 'cd -- "$0" && exec "$@"', str(self._workdir), *argv]

    def ready(self) -> bool:
        sock = self._tcp()
        if sock is None:
            return False
        sock.close()
        return True

    def stop(self, grace: float = 30.0) -> None:
        """Ask the whole process group to stop and give it `grace` seconds, then SIGKILL what is left:
        a `run` string's shell (dash does not exec its last command) would otherwise die at once and
        take the command's graceful exit with it. The supervisor stops services the same way."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, self.stop_signal)  # its own session: the group is the leader's pid
            deadline = time.monotonic() + grace
            while _group_alive(pid) and time.monotonic() < deadline:
                if self._proc is not None and self._proc.pid == pid:
                    self._proc.poll()  # reap the leader, so that it does not linger as a zombie
                time.sleep(0.05)
            if _group_alive(pid):  # only then: an emptied group's id may already be someone else's
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        super().stop(grace)

    def connection(self) -> Connection:
        port = self._require_port()
        return Connection(LOOPBACK, port, "", self.password, f"tcp://{LOOPBACK}:{port}")


def _group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` runs (zombies do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii", errors="replace").rsplit(")", 1)[-1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False


_KINDS: dict[str, type[Addon]] = {
    "postgres": Postgres, "mysql": MariaDB, "redis": Redis, "nats": Nats, "rabbitmq": RabbitMQ,
    "prometheus": Prometheus, "generic": Generic,
}


def addon_for(plan: AddonPlan, state_dir: Path | str, *, path: str | None = None,
              base_dir: Path | str | None = None) -> Addon:
    """The local addon for a plan's addon. External addons are not run here: the caller skips them.
    `base_dir` is the spec's directory: a generic addon's `run` runs there (as a service's does), so
    `run: python3 ../standin/standin.py` means the same for both."""
    try:
        cls = _KINDS[plan.kind]
    except KeyError:
        raise UserError(f"{plan.name}: the local target cannot run addons of kind {plan.kind!r} "
                        f"(it runs {', '.join(sorted(_KINDS))})") from None
    if cls is Generic:
        run: tuple[str, ...] = ("/bin/sh", "-c", plan.run) if isinstance(plan.run, str) else tuple(plan.run or ())
        return Generic(plan, state_dir, path=path, run=run, workdir=base_dir)
    return cls(plan, state_dir, path=path)
