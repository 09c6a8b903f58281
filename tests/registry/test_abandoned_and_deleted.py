"""What registrations that fail or are killed leave behind (nothing, once cleaned up), and
removing what was registered: delete, unarchive, aliases removed, serving stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry
from shipyard.registry import _repository as repo
from shipyard.store import tables, utcnow


def _pending(registry: Registry) -> list[tuple[str, int]]:
    return [(n, v) for n, v, _, _ in registry.database.read(repo.pending_versions)]


def test_a_failed_first_registration_leaves_no_model_and_burns_no_number(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    with pytest.raises(e.UnsupportedModel):
        registry.register({"not": "a model"}, name="bc", sample=fraud_sample)
    assert registry.list_models() == []
    assert _pending(registry) == []
    assert not registry.artifacts.exists("models/bc")
    assert registry.history(limit=5) == []
    assert registry.register(fraud_model, name="bc", sample=fraud_sample).version == 1
    with pytest.raises(e.UnsupportedModel):
        registry.register(object(), name="bc", sample=fraud_sample)
    assert registry.register(fraud_model, name="bc", sample=fraud_sample).version == 2


_KILLED_REGISTRATION = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pandas as pd
    from shipyard.core import Settings
    from shipyard.demo import FEATURES, transactions
    from shipyard.demo.training import train
    from shipyard.registry import Registry, _register

    real_upload = _register.upload_bundle

    def upload_then_hang(store, folder, prefix):
        real_upload(store, folder, prefix)       # half the work is done: files in the store
        Path(sys.argv[1]).write_text("uploading")
        time.sleep(600)                          # ... and then the process is killed

    _register.upload_bundle = upload_then_hang
    data = transactions(2_000, seed=3)
    with Registry.from_settings(Settings()) as registry:
        registry.register(train(data, {"C": 0.5}), name="bc", sample=data[FEATURES].iloc[:200])
    """
)


@pytest.mark.slow
def test_a_registration_killed_half_way_is_cleaned_up_when_the_server_starts(
    settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "uploading"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        SHIPYARD_HOME=str(settings.home),
        SHIPYARD_DATABASE_URL=settings.resolved_database_url,
        SHIPYARD_AUTO_MIGRATE="true",
    )
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_REGISTRATION, str(marker)], env=env, cwd=tmp_path
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, "the registration ended before it was killed"
        assert time.monotonic() < deadline, "the registration never got to its upload"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    scratch = settings.scratch_dir
    with Registry.from_settings(settings) as registry:
        assert _pending(registry) == [("bc", 1)]
        assert registry.artifacts.exists("models/bc/1/metadata.json")
        (leftover,) = scratch.iterdir()
        assert leftover.name.startswith(f"shipyard-bundle-{process.pid}-")
        assert registry.list_models()[0].version_count == 0  # what `models list` showed
    with TestClient(create_app(settings)):
        pass  # the server's start cleans up
    with Registry.from_settings(settings) as registry:
        assert _pending(registry) == []
        assert registry.list_models() == []
        assert not registry.artifacts.exists("models/bc/1")
        assert list(scratch.iterdir()) == []
        (abandoned,) = [ev for ev in registry.history(limit=10) if ev.action == "version.abandoned"]
        assert abandoned.details["registration"]["pid"] == process.pid
        assert abandoned.details["model_removed"] is True


def test_a_registration_still_running_is_left_alone(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    with registry.database.transaction() as conn:
        repo.ensure_model(conn, "bc", "tester", "")
        for version, claim in (
            (repo.allocate_version(conn, "bc"), {"host": socket.gethostname(), "pid": os.getpid()}),
            (repo.allocate_version(conn, "bc"), {"host": "elsewhere", "pid": 1}),
        ):
            repo.insert_pending_version(conn, "bc", version, "tester", claim)
    assert registry.clean_up_abandoned() == []
    assert _pending(registry) == [("bc", 1), ("bc", 2)]
    # another host's registration is presumed dead only after a day
    assert registry.clean_up_abandoned(now=utcnow() + timedelta(hours=25)) == ["bc:1", "bc:2"]


def test_delete_is_refused_while_a_version_serves_or_has_an_alias(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    for _ in range(3):
        registry.register(fraud_model, name="bc", sample=fraud_sample)
    registry.deploy("bc", 1)
    registry.set_alias("bc", 2, "champion")
    with pytest.raises(e.Conflict, match="serves in deployment revision 1"):
        registry.delete("bc", 1)
    with pytest.raises(e.Conflict, match=r"'champion' version.*--remove"):
        registry.delete("bc", 2)
    assert registry.delete("bc", 3) == [3]
    assert not registry.artifacts.exists("models/bc/3")
    with pytest.raises(e.VersionNotFound):
        registry.get_version("bc", 3)
    with pytest.raises(e.Conflict):
        registry.delete("bc")
    registry.remove_alias("bc", "champion")
    registry.stop("bc")
    assert "bc" not in registry.serving_plan()
    assert registry.delete("bc") == [1, 2]
    assert registry.list_models() == []
    assert not registry.artifacts.exists("models/bc")
    actions = [ev.action for ev in registry.history(limit=20)]
    assert actions[:2] == ["model.deleted", "alias.removed"]
    assert "version.deleted" in actions
    assert registry.register(fraud_model, name="bc", sample=fraud_sample).version == 1


def test_stop_serves_nothing_and_rollback_brings_the_last_deployment_back(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    for _ in range(2):
        registry.register(fraud_model, name="bc", sample=fraud_sample)
    registry.deploy("bc", 1)
    registry.deploy("bc", 2, canary=10)
    stopped = registry.stop("bc", reason="retired")
    assert stopped.stopped
    assert stopped.describe() == "stopped"
    assert "bc" not in registry.serving_plan()
    assert registry.get_model("bc").aliases == {}
    assert registry.stop("bc").revision == stopped.revision  # stopping twice changes nothing
    back = registry.rollback("bc")
    assert back.describe() == "1 primary 90% + 2 canary 10%"
    assert registry.get_model("bc").aliases == {"production": 1}


def test_an_archived_version_comes_back_with_unarchive(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    registry.register(fraud_model, name="bc", sample=fraud_sample)
    registry.archive("bc", 1)
    with pytest.raises(e.VersionArchived, match="shipyard models unarchive bc:1"):
        registry.deploy("bc", 1)
    assert registry.unarchive("bc", 1).status == "ready"
    assert registry.deploy("bc", 1).primary.version == 1
    assert [ev.action for ev in registry.history("bc", limit=4)][-2:] == [
        "version.unarchived",
        "version.archived",
    ]


def test_a_clean_up_that_comes_late_leaves_a_new_registration_of_the_same_number_alone(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    """Two processes saw the same abandoned version; the first cleaned it up and a new
    registration took its number. The second must not remove the new one."""
    dead = {"host": "elsewhere", "pid": 1}
    with registry.database.transaction() as conn:
        repo.ensure_model(conn, "bc", "tester", "")
        repo.insert_pending_version(conn, "bc", repo.allocate_version(conn, "bc"), "tester", dead)
        conn.execute(  # started a day and more ago, on a host that never came back
            update(tables.model_versions).values(created_at=utcnow() - timedelta(hours=25))
        )
    seen_by_both = registry.database.read(repo.pending_versions)
    later = utcnow()
    assert registry.clean_up_abandoned(now=later) == ["bc:1"]  # the first one
    with registry.database.transaction() as conn:  # a new registration takes number 1 again
        repo.ensure_model(conn, "bc", "tester", "")
        taken = repo.allocate_version(conn, "bc")
        alive = {"host": socket.gethostname(), "pid": os.getpid()}  # running, right here
        repo.insert_pending_version(conn, "bc", taken, "tester", alive)
    assert taken == 1
    (name, version, _, _) = seen_by_both[0]
    assert registry._take_over(name, version, later) is False  # the second one, late
    assert _pending(registry) == [("bc", 1)]
