"""The loop end to end on both databases: a trigger fires, a failing gate stops a bad candidate,
a good one is canaried and promoted, a canary with an error spike is rolled back, a manual
approval waits for a person."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console
from tests.retraining.conftest import END_OF_WEEK4, ROWS_PER_WEEK, Month

from shipyard.core import errors as e
from shipyard.demo import SPEC, close_the_loop, project_file, replay_weeks
from shipyard.logstore import LogWriter
from shipyard.registry import Registry
from shipyard.retraining import RolloutSpec
from shipyard.tracking import Tracker
from shipyard.worker import Worker

pytestmark = pytest.mark.slow


def _worker(month: Month, spec: object, clock: list) -> Worker:
    return Worker(
        month.settings,
        specs={"fraud-detector": spec},
        clock=lambda: clock[0],
        monitor_window="7d",
        name="test-worker",
    )  # type: ignore[dict-item]


def test_the_alert_triggers_a_retrain_that_is_validated_canaried_and_promoted(
    month: Month, tmp_path: Path
) -> None:
    project = tmp_path / "shipyard.yaml"
    project.write_text(project_file())  # the worker reads the spec from the demo's project file
    result = close_the_loop(
        month.settings.model_copy(update={"config": project}),
        "fraud-detector",
        end_of_week4=END_OF_WEEK4,
        rows_per_week=ROWS_PER_WEEK,
        console=Console(file=io.StringIO()),
    )
    assert result.status == "promoted"
    assert result.champion_after == result.candidate == 2
    actions = [line["action"] for line in result.timeline]
    order = [
        "alert.firing",
        "pipeline.data",
        "pipeline.train",
        "pipeline.validate",
        "pipeline.register",
        "pipeline.canary",
        "pipeline.promote",
    ]
    positions = [actions.index(a) for a in order]
    assert positions == sorted(positions)
    # the week after the promotion is better than the week that triggered it
    assert result.weekly_accuracy[-1] > result.weekly_accuracy[3]
    with Registry.from_settings(month.settings) as registry:
        candidate = registry.get_version("fraud-detector", 2)
        assert candidate.lineage is not None
        assert candidate.lineage["parent"] == 1
        assert candidate.lineage["trigger"]["kind"] == "alert"
        assert registry.resolve("fraud-detector:champion").version == 2
        run = Tracker(registry.database, registry.artifacts).get(str(candidate.run_id))
    # the version traces back to the run, its code and its data
    assert run.entrypoint == "shipyard.demo.training:train"
    assert run.params == {"C": 0.5, "max_iter": 2000}
    assert {"train", "holdout"} <= set(run.datasets)
    assert run.metrics["holdout_auc"] > 0.75
    assert run.tags["registered"] == "fraud-detector:2"


def test_a_failing_gate_stops_a_bad_candidate_before_it_is_registered(month: Month) -> None:
    spec = SPEC("fraud-detector").model_copy(update={"gates": ["auc >= 0.999"]})
    clock = [END_OF_WEEK4 + timedelta(minutes=1)]
    with _worker(month, spec, clock) as worker:
        record = worker.pipeline("fraud-detector").train_and_canary({"kind": "manual"})
    assert record["status"] == "rejected"
    validate = next(s for s in record["steps"] if s["step"] == "validate")
    assert validate["evidence"]["failed"] == ["auc >= 0.999"]
    assert not validate["evidence"]["gates"][0]["passed"]
    with Registry.from_settings(month.settings) as registry:
        assert [v.version for v in registry.list_versions("fraud-detector")] == [1]
        deployment = registry.deployment("fraud-detector")
        assert deployment is not None
        assert deployment.describe() == "1 primary 100%"
        assert any(
            ev.action == "pipeline.validate" and ev.details["status"] == "rejected"
            for ev in registry.history("fraud-detector")
        )


def _canary(month: Month, rollout: RolloutSpec) -> tuple[Worker, list, int]:
    spec = SPEC("fraud-detector").model_copy(update={"rollout": rollout})
    clock = [END_OF_WEEK4 + timedelta(minutes=1)]
    worker = _worker(month, spec, clock)
    record = worker.pipeline("fraud-detector").train_and_canary({"kind": "manual"})
    assert record["status"] == "canary"
    return worker, clock, record["id"]


def test_a_canary_with_an_error_spike_is_rolled_back_at_once(month: Month) -> None:
    worker, clock, pipeline_id = _canary(
        month,
        RolloutSpec(canary=10, routing_field="customer_id", min_labels=300, max_error_rate=0.02),
    )
    try:
        # the candidate starts failing in production: 503s on its share of traffic
        at = (END_OF_WEEK4 + timedelta(hours=2)).timestamp()
        with Registry.from_settings(month.settings) as registry:
            writer = LogWriter(
                month.settings.resolved_spool_dir / "spike", registry.artifacts, flush_seconds=3600
            )
            with writer:
                for _ in range(50):
                    writer.log_error(
                        model="fraud-detector",
                        version=2,
                        variant="canary",
                        status=503,
                        error="ModelUnavailable",
                        at=at,
                    )
        clock[0] = END_OF_WEEK4 + timedelta(hours=3)
        record = worker.pipeline("fraud-detector").decide(pipeline_id)
    finally:
        worker.close()
    assert record["status"] == "rolled_back"
    assert (
        "canary error rate 100.0% is over the 2.0% limit"
        in record["steps"][-1]["evidence"]["reason"]
    )
    with Registry.from_settings(month.settings) as registry:
        deployment = registry.deployment("fraud-detector")
        assert deployment is not None
        assert deployment.describe() == "1 primary 100%"
        assert registry.resolve("fraud-detector").version == 1


def test_manual_approval_waits_for_a_person(month: Month) -> None:
    worker, clock, pipeline_id = _canary(
        month,
        RolloutSpec(
            canary=10,
            routing_field="customer_id",
            min_labels=200,
            max_labels=2000,
            approval="manual",
        ),
    )
    try:
        replay_weeks(
            month.settings,
            "fraud-detector",
            [(4, 1.6, 0.09, 1.0)],
            start=END_OF_WEEK4 - timedelta(days=28),
            rows_per_week=ROWS_PER_WEEK,
        )
        clock[0] = END_OF_WEEK4 + timedelta(days=7, minutes=1)
        pipeline = worker.pipeline("fraud-detector")
        waiting = pipeline.decide(pipeline_id)
        assert waiting["status"] == "awaiting_approval"
        assert (
            waiting["steps"][-1]["evidence"]["approve_with"] == "shipyard approve fraud-detector 2"
        )
        with pytest.raises(e.Conflict, match="is not waiting for approval"):
            pipeline.approve(1)
        approved = pipeline.approve(2)
    finally:
        worker.close()
    assert approved["status"] == "promoted"
    with Registry.from_settings(month.settings) as registry:
        assert registry.resolve("fraud-detector").version == 2


def test_only_one_pipeline_runs_at_a_time(month: Month) -> None:
    worker, _, _ = _canary(month, RolloutSpec(canary=10, min_labels=300))
    try:
        with pytest.raises(e.Conflict, match="is still canary"):
            worker.pipeline("fraud-detector").train_and_canary({"kind": "manual"})
    finally:
        worker.close()
