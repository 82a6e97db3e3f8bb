"""The control-plane store on real SQLite files, and the state lock across real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shipmate.errors import Conflict, UserError
from shipmate.store.db import AddonState, InstanceState, ServiceState, Store
from shipmate.store.lock import StateLock, holder
from shipmate.store.models import SCHEMA_VERSION, Meta


def test_rows_survive_a_reopen(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.set_environment("dev", release=3, supervisor_pid=1234)
    store.put_instance(InstanceState("dev", "api-v1-0", "api", "v1", pid=10, pgid=10, port=4100, ready=True))
    store.put_instance(InstanceState("dev", "api-v1-0", "api", "v1", pid=11, pgid=11, port=4100, restarts=1))
    store.put_instance(InstanceState("prod", "api-v1-0", "api", "v1"))
    store.put_addon(AddonState("dev", "db", "postgres", port=5999, pid=77, ready=True))
    store.close()

    again = Store.open(tmp_path)
    env = again.environment("dev")
    assert env is not None
    assert (env.release, env.supervisor_pid) == (3, 1234)
    (instance,) = again.instances("dev")
    assert (instance.pid, instance.restarts, instance.ready) == (11, 1, False)
    assert again.addons("dev") == [AddonState("dev", "db", "postgres", 5999, 77, True)]
    again.remove_environment("dev")
    assert again.instances("dev") == []
    assert again.environment("dev") is None
    assert len(again.instances("prod")) == 1
    assert oct((tmp_path / "state.db").stat().st_mode & 0o777) != oct(0o777)


def test_a_store_from_a_newer_shipmate_is_refused(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with store._session() as session:
        row = session.get(Meta, "schema_version")
        assert row is not None
        row.value = "999"
    store.close()
    with pytest.raises(UserError, match="newer than this shipmate"):
        Store.open(tmp_path)


HOLDER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from shipmate.store.lock import StateLock, holder
    lock = StateLock(Path(sys.argv[1]), command="shipmate up")
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def _hold(tmp_path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_process_is_told_who_holds_the_lock(tmp_path: Path) -> None:
    holder = _hold(tmp_path)
    try:
        with pytest.raises(Conflict, match=rf"held by pid {holder.pid} \(shipmate up\)"), StateLock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.communicate()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = _hold(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    deadline = time.monotonic() + 5
    with StateLock(tmp_path, command="shipmate down") as lock:
        assert time.monotonic() < deadline
        assert "shipmate down" in lock.path.read_text()
    assert lock.path.read_text() == ""


def test_a_probe_names_the_holder_and_writes_nothing(tmp_path: Path) -> None:
    assert holder(tmp_path) is None  # no lock file yet
    process = _hold(tmp_path)
    try:
        assert holder(tmp_path) == f"pid {process.pid} (shipmate up)"
        assert (tmp_path / "lock").read_text().strip() == f"pid {process.pid} (shipmate up)"
    finally:
        process.kill()
        process.communicate()
    assert holder(tmp_path) is None


def test_busy_probes_never_make_an_exclusive_acquire_fail(tmp_path: Path) -> None:
    """A prober in another process polls the lock in a tight loop (as `down` waiting for a supervisor
    does) while this one takes and releases it many times: every acquire succeeds, and the prober
    never sees a holder it cannot name."""
    prober = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from shipmate.store.lock import holder
        seen = set()
        end = time.monotonic() + 3
        while time.monotonic() < end:
            seen.add(holder(Path({str(tmp_path)!r})))
        print(json.dumps(sorted(map(str, seen))))
    """)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            with StateLock(tmp_path, command="shipmate deploy"):
                pass
    finally:
        out, _ = prober.communicate(timeout=30)
    assert "another process" not in out
    assert set(json.loads(out)) <= {"None", f"pid {os.getpid()} (shipmate deploy)"}


def test_a_schema_1_store_gains_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256));
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE environments (name VARCHAR(63) PRIMARY KEY, target VARCHAR(16), release INTEGER,
                                       supervisor_pid INTEGER, updated_at FLOAT);
            INSERT INTO environments VALUES ('dev', 'local', 3, NULL, 1.0);
        """)
    store = Store(f"sqlite:///{path}")
    try:
        env = store.environment("dev")
        assert env is not None
        assert env.release == 3
        assert env.phase == "stopped"
        assert env.message == ""
        store.set_phase("dev", "ready", "all good")
        store.put_service(ServiceState("dev", "web", "1.0", 4242))
        assert store.environment("dev").phase == "ready"  # type: ignore[union-attr]
        assert store.services("dev") == [ServiceState("dev", "web", "1.0", 4242)]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
