"""The jobs table on both databases: every job runs once at a time, a dead worker's job is
taken over, failures are retried with backoff and then recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from shipyard.core import Settings
from shipyard.store import Database, JobQueue


class Clock:
    """The queue's clock, moved by the test: leases and backoffs run out when it says so."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def database(settings: Settings) -> Database:
    db = Database(settings.resolved_database_url, auto_migrate=True).open()
    yield db  # type: ignore[misc]
    db.close()


def test_workers_claiming_together_never_run_one_job_twice(
    settings: Settings, database: Database
) -> None:
    queue = JobQueue(database)
    ids = [queue.enqueue("work", payload={"n": i}).id for i in range(60)]
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def worker(name: str) -> None:
        db = Database(
            settings.resolved_database_url
        ).open()  # its own connections, like another process
        mine = JobQueue(db)
        try:
            while (job := mine.claim(name)) is not None:
                with lock:
                    runs[job.id] += 1
                time.sleep(0.002)
                assert mine.complete(job, name)
        finally:
            db.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(runs) == sorted(ids)
    assert set(runs.values()) == {1}
    assert {j.status for j in queue.list_jobs(limit=100)} == {"done"}


def test_a_job_whose_worker_died_is_taken_over_once_its_lease_runs_out(database: Database) -> None:
    clock = Clock(datetime(2024, 5, 1, 12, tzinfo=UTC))
    queue = JobQueue(database, clock=clock)
    job = queue.enqueue("work")
    first = queue.claim("doomed", lease=timedelta(seconds=30))
    assert first is not None
    assert first.id == job.id
    clock.advance(29.9)
    assert queue.claim("other", lease=timedelta(seconds=30)) is None  # still leased
    clock.advance(0.2)
    second = queue.claim("other", lease=timedelta(seconds=30))
    assert second is not None
    assert (second.id, second.attempts, second.leased_by) == (job.id, 2, "other")
    assert not queue.complete(first, "doomed")  # the dead worker's late word does not count
    assert queue.complete(second, "other", {"ok": True})
    assert queue.get(job.id).result == {"ok": True}  # type: ignore[union-attr]


def test_renewing_the_lease_keeps_a_long_job(database: Database) -> None:
    clock = Clock(datetime(2024, 5, 1, 12, tzinfo=UTC))
    queue = JobQueue(database, clock=clock)
    queue.enqueue("long")
    job = queue.claim("busy", lease=timedelta(seconds=30))
    assert job is not None
    for _ in range(3):  # 60 s in all, twice the lease, renewed every 20 s
        clock.advance(20)
        assert queue.claim("thief") is None
        assert queue.renew(job, "busy", timedelta(seconds=30))
    clock.advance(30.1)  # no renewal this time: the lease runs out
    taken = queue.claim("thief")
    assert taken is not None
    assert (taken.id, taken.leased_by) == (job.id, "thief")
    assert not queue.renew(job, "busy", timedelta(seconds=30))  # it lost the job, and learns so


def test_failures_are_retried_with_backoff_then_recorded(database: Database) -> None:
    clock = Clock(datetime(2024, 5, 1, 12, tzinfo=UTC))
    queue = JobQueue(database, clock=clock)
    job = queue.enqueue("flaky", max_attempts=2)
    claimed = queue.claim("w")
    assert claimed is not None
    assert queue.fail(claimed, "w", "boom", backoff=timedelta(seconds=20)) == "queued"
    clock.advance(19.9)
    assert queue.claim("w") is None  # backing off
    clock.advance(0.2)
    again = queue.claim("w")
    assert again is not None
    assert again.attempts == 2
    assert queue.fail(again, "w", "boom again") == "failed"
    final = queue.get(job.id)
    assert final is not None
    assert (final.status, final.last_error) == ("failed", "boom again")


def test_dedup_keys_keep_one_waiting_job(database: Database) -> None:
    queue = JobQueue(database)
    a = queue.enqueue("tick", dedup_key="tick")
    b = queue.enqueue("tick", dedup_key="tick")
    assert a.id == b.id
    running = queue.claim("w")
    assert running is not None
    # while one runs, it may queue its own next run
    assert queue.enqueue("tick", dedup_key="tick").id != a.id


_CLAIM_AND_HANG = """
import sys, time
from datetime import timedelta
from shipyard.store import Database, JobQueue
queue = JobQueue(Database(sys.argv[1]).open())
job = queue.claim("victim", lease=timedelta(minutes=5))
print(job.id, flush=True)
time.sleep(600)
"""


def test_a_killed_worker_process_job_is_resumed_by_another(
    settings: Settings, database: Database
) -> None:
    queue = JobQueue(database)
    job = queue.enqueue("work")
    victim = subprocess.Popen(
        [sys.executable, "-c", _CLAIM_AND_HANG, settings.resolved_database_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout is not None
        assert int(victim.stdout.readline()) == job.id
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        if victim.stdout is not None:
            victim.stdout.close()
    # the victim claimed on the real clock before it printed: the survivor's clock starts
    # after that and moves on by hand
    clock = Clock(datetime.now(UTC))
    survivor = JobQueue(database, clock=clock)
    assert survivor.claim("survivor") is None  # the lease is still the victim's
    clock.advance(5 * 60 + 1)
    resumed = survivor.claim("survivor")
    assert resumed is not None
    assert (resumed.id, resumed.attempts) == (job.id, 2)
