"""The control-plane store on real SQLite files, and the state lock across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shipmate.errors import Conflict, UserError
from shipmate.store.db import AddonState, InstanceState, Store
from shipmate.store.lock import StateLock
from shipmate.store.models import Meta


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
    from shipmate.store.lock import StateLock
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
