"""`shipyard maturity`: installations prepared through the real APIs (a bare one, one at level 1,
one at level 2) and the demo's, placed on the ladder with the evidence for each criterion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.assess import MATURITY_LEVELS, MaturityReport, inspect_maturity
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.demo import FEATURES, LABEL
from shipyard.logstore import LogReader
from shipyard.registry import Registry
from shipyard.retraining import Pipeline, PipelineRecord, decide_by_person, load_specs
from shipyard.tracking import Tracker
from tests.conftest import DemoRun

LEVEL_1 = ("registry", "tracking", "pipeline")
LEVEL_2 = ("gates", "progressive", "automation")
LEVEL_3 = ("monitoring", "retraining", "decision", "features")

SPEC_YAML = """\
models:
  fraud-detector:
    train: shipyard.demo.training:train
    params: {C: 0.5}
    data: {source: parquet, path: transactions.parquet, label: is_fraud}
    holdout: {split: random, fraction: 0.25}
    rollout: {canary: 10, routing_field: customer_id}
"""
GATES = '    gates: ["auc >= 0.6", "auc >= champion - 0.05"]\n'
WORKFLOW = """\
name: retrain
on:
  schedule: [{cron: "0 3 * * 1"}]
jobs:
  retrain:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: pip install "shipyard[postgres]"
      - run: shipyard pipeline run fraud-detector --config shipyard.yaml
"""


def _inspect(settings: Settings, project: Path | None = None, **kw: Any) -> MaturityReport:
    with Registry.from_settings(settings) as registry:
        return inspect_maturity(registry, project, **kw)


def _ids(criteria: Any) -> tuple[str, ...]:
    return tuple(c.id for c in criteria)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty project folder."""
    path = tmp_path / "project"
    path.mkdir()
    return path


# -- a bare install ----------------------------------------------------------------------------


def test_a_bare_install_is_level_0_and_every_criterion_says_what_to_do(
    registry: Registry, folder: Path
) -> None:
    report = inspect_maturity(registry, folder=folder)
    assert report.level == 0
    assert report.name == MATURITY_LEVELS[0] == "manual"
    assert _ids(report.criteria) == (*LEVEL_1, *LEVEL_2, *LEVEL_3)
    assert [c.level for c in report.criteria] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    for c in report.criteria:
        assert not c.met, c
        assert c.to_do is not None, c
        assert "shipyard" in c.to_do, c
    assert _ids(report.next_level_needs) == LEVEL_1
    assert report.project is None
    said = {c.id: c.evidence for c in report.criteria}
    assert said["registry"] == "no model is registered"
    assert said["pipeline"].startswith(
        f"no project file (shipyard.yaml, or [tool.shipyard] in pyproject.toml) in {folder}"
    )
    assert said["automation"] == (
        f"no CI configuration in {folder} runs a shipyard command; no worker has run a retrain "
        "or rollout job"
    )
    assert said["features"] == "no feature view is applied; none materialized"
    # with no model registered, what to do names a placeholder to fill in
    assert "shipyard pipeline run NAME" in report.criterion("pipeline").to_do  # type: ignore[operator]


# -- prepared installations: level 1 and level 2 ------------------------------------------------


def _tracked_champion(registry: Registry, model: Any, data: pd.DataFrame) -> None:
    """fraud-detector:1 trained in a tracked run, registered with its metrics and training
    data, and deployed to all traffic (no canary)."""
    tracker = Tracker(registry.database, registry.artifacts, actor="tester")
    with tracker.start_run(experiment="fraud-detector", name="first model"):
        version = registry.register(
            model, name="fraud-detector", sample=data[FEATURES].iloc[:500],
            training_data=data[[*FEATURES, LABEL]], metrics={"auc": 0.9},
        )  # fmt: skip
    registry.deploy("fraud-detector", version.version, reason="first release")


def _pipeline_run(
    registry: Registry, project: Path, data: pd.DataFrame, *, canary: bool
) -> PipelineRecord:
    """The project's declared pipeline, run by hand as `shipyard pipeline run` would."""
    data.to_parquet(project.parent / "transactions.parquet")
    spec = load_specs(project)["fraud-detector"]
    tracker = Tracker(registry.database, registry.artifacts, actor="tester")
    pipeline = Pipeline(
        registry, tracker, LogReader(registry.artifacts), spec, code_dir=project.parent
    )
    return pipeline.train_and_canary({"kind": "manual", "by": "tester"}, canary=canary)


@pytest.fixture
def level_1(settings: Settings, folder: Path, fraud_model: Any, fraud_data: pd.DataFrame) -> Path:
    """A tracked champion, a declared pipeline that retrained it without gates or a canary."""
    project = folder / "shipyard.yaml"
    project.write_text(SPEC_YAML)
    with Registry.from_settings(settings) as registry:
        _tracked_champion(registry, fraud_model, fraud_data)
        record = _pipeline_run(registry, project, fraud_data, canary=False)
    assert record["status"] == "registered"
    return project


def test_a_tracked_declared_pipeline_without_gates_or_canaries_is_level_1(
    settings: Settings, level_1: Path
) -> None:
    report = _inspect(settings, level_1)
    assert report.level == 1
    assert report.project == str(level_1)
    assert all(report.criterion(i).met for i in LEVEL_1)
    assert _ids(report.next_level_needs) == LEVEL_2
    said = {c.id: c.evidence for c in report.criteria}
    assert said["registry"].startswith("fraud-detector:2 has ")
    assert "a signature of 11 columns and a reference profile" in said["registry"]
    assert said["tracking"].startswith("fraud-detector:2 trained in run ")
    assert "(retrain (manual), finished " in said["tracking"]
    assert said["tracking"].endswith("; 2 of 2 versions linked to runs")
    assert said["pipeline"].startswith(
        f"{level_1} declares fraud-detector; pipeline 1 of fraud-detector trained on "
    )
    assert said["pipeline"].endswith("(registered); 1 of their pipelines trained")
    assert said["gates"] == "1 pipeline(s) validated without a gate"
    assert said["progressive"] == "fraud-detector: 1 revision(s), none progressive"
    to_do = {c.id: c.to_do for c in report.next_level_needs}
    assert "`gates:` to models.fraud-detector in shipyard.yaml" in str(to_do["gates"])
    assert "`shipyard deploy fraud-detector --version N --canary 5`" in str(to_do["progressive"])
    assert "`shipyard pipeline run fraud-detector`" in str(to_do["automation"])


def test_a_model_registered_by_hand_without_metrics_or_a_run_is_level_0(
    settings: Settings, folder: Path, fraud_model: Any, fraud_data: pd.DataFrame
) -> None:
    with Registry.from_settings(settings) as registry:
        registry.register(fraud_model, name="by-hand", sample=fraud_data[FEATURES].iloc[:200])
    report = _inspect(settings, folder=folder)
    assert report.level == 0
    assert report.criterion("registry").evidence == "by-hand:1 has no metrics"
    assert report.criterion("tracking").evidence == (
        "by-hand:1 links to no run; 0 of 1 versions linked to runs"
    )
    assert "shipyard.start_run(experiment=by-hand)" in str(report.criterion("tracking").to_do)


@pytest.fixture
def level_2(settings: Settings, folder: Path, fraud_model: Any, fraud_data: pd.DataFrame) -> Path:
    """Level 1, and the pipeline has gates, canaries its candidate, and CI runs it."""
    project = folder / "shipyard.yaml"
    project.write_text(SPEC_YAML + GATES)
    workflows = folder / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "retrain.yml").write_text(WORKFLOW)
    with Registry.from_settings(settings) as registry:
        _tracked_champion(registry, fraud_model, fraud_data)
        record = _pipeline_run(registry, project, fraud_data, canary=True)
    assert record["status"] == "canary"
    return project


def test_gates_a_canary_and_a_ci_job_on_exit_codes_make_level_2(
    settings: Settings, level_2: Path
) -> None:
    report = _inspect(settings, level_2)
    assert report.level == 2
    assert all(report.criterion(i).met for i in (*LEVEL_1, *LEVEL_2))
    assert _ids(report.next_level_needs) == LEVEL_3
    said = {c.id: c.evidence for c in report.criteria}
    assert said["gates"].startswith("pipeline 1 of fraud-detector validated its candidate on ")
    assert ", passed: auc >= 0.6 passed (" in said["gates"]
    assert "; auc >= champion - 0.05 passed (" in said["gates"]
    assert said["gates"].endswith("; 1 gated validation(s), 0 rejected")
    assert said["progressive"].startswith(
        "fraud-detector: 1 of 2 revisions canary or shadow, the latest revision 2 on "
    )
    assert said["progressive"].endswith("(1 primary 90% + 2 canary 10%)")
    assert said["automation"] == (
        ".github/workflows/retrain.yml runs `shipyard pipeline run fraud-detector --config "
        "shipyard.yaml` (a failing command fails the job); no worker has run a retrain or "
        "rollout job"
    )
    assert said["monitoring"] == "fraud-detector: 0 alert rule(s), 0 snapshot(s)"
    assert said["retraining"] == "1 pipeline(s), every one started by hand"
    assert said["decision"] == "no canary has been decided (1 waiting)"
    to_do = {c.id: str(c.to_do) for c in report.next_level_needs}
    assert "`shipyard monitor rule-add fraud-detector 'accuracy < 0.90" in to_do["monitoring"]
    assert "`policies:`" in to_do["retraining"]
    assert "`shipyard features apply features.py`" in to_do["features"]


def test_a_canary_a_person_approved_is_not_an_automatic_decision(
    settings: Settings, level_2: Path
) -> None:
    with Registry.from_settings(settings) as registry:
        record = decide_by_person(registry, "fraud-detector", 2, "approve")
    assert record["status"] == "promoted"
    decision = _inspect(settings, level_2).criterion("decision")
    assert not decision.met
    assert decision.evidence.startswith("pipeline 1 of fraud-detector promoted v2 on ")
    assert decision.evidence.endswith(" by a person (approved by tester)")
    assert "`rollout: {approval: auto}`" in str(decision.to_do)


# -- what counts as CI gating on exit codes ----------------------------------------------------


@pytest.fixture
def bare(sqlite_settings: Settings) -> Iterator[Registry]:
    with Registry.from_settings(sqlite_settings) as registry:
        yield registry


@pytest.mark.parametrize(
    ("path", "text", "gating"),
    [
        (".gitlab-ci.yml", "retrain:\n  script:\n    - uv run shipyard pipeline run fraud-detector\n", True),
        ("Jenkinsfile", "stage('retrain') { steps { sh 'shipyard pipeline run fraud-detector' } }\n", True),
        (".ci/retrain", "#!/usr/bin/env bash\nset -euo pipefail\nshipyard pipeline run fraud-detector\n", True),
        (".ci/retrain", "#!/usr/bin/env bash\nshipyard pipeline run fraud-detector\necho done\n", False),
        (".github/workflows/ml.yml", "steps:\n  - run: shipyard pipeline run fraud-detector || true\n", False),
        (".github/workflows/ml.yml", "steps:\n  - run: shipyard pipeline run fraud-detector || exit 1\n", True),
        (".github/workflows/ml.yml", "steps:\n  - run: shipyard pipeline run fraud-detector | tee log\n", False),
        (".github/workflows/ml.yml", "steps:\n  - run: shipyard pipeline run fraud-detector\n    continue-on-error: true\n", False),
        (".gitlab-ci.yml", "retrain:\n  script:\n    - shipyard pipeline run fraud-detector\n  allow_failure: true\n", False),
    ],
)  # fmt: skip
def test_ci_counts_only_shipyard_commands_whose_failure_fails_the_job(
    bare: Registry, folder: Path, path: str, text: str, gating: bool
) -> None:
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / path).write_text(text)
    automation = inspect_maturity(bare, folder=folder).criterion("automation")
    assert automation.met is gating
    command = "`shipyard pipeline run fraud-detector`"
    if gating:
        assert automation.evidence.startswith(f"{path} runs {command} (a failing command fails")
    else:
        assert automation.evidence.startswith(f"{path} runs {command} but lets it fail (")


def test_installing_or_mentioning_shipyard_in_ci_is_not_running_it(
    bare: Registry, folder: Path
) -> None:
    workflows = folder / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(
        "steps:\n  - name: shipyard checks\n    run: pip install shipyard requests\n"
        "  # - run: shipyard pipeline run fraud-detector\n  - run: shipyard server --port 8000 &\n"
    )
    automation = inspect_maturity(bare, folder=folder).criterion("automation")
    assert not automation.met
    assert automation.evidence.startswith(f"no CI configuration in {folder} runs a shipyard")


def test_ci_at_the_repository_root_above_the_project_counts(bare: Registry, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ml.yml").write_text("steps:\n  - run: shipyard pipeline run fraud-detector\n")
    project = repo / "ml" / "shipyard.yaml"
    project.parent.mkdir()
    project.write_text("models: {}\n")
    automation = inspect_maturity(bare, project).criterion("automation")
    assert automation.met
    assert automation.evidence.startswith(f"{workflows / 'ml.yml'} runs `shipyard pipeline run")
    # a folder outside any repository: only the project's own folder is looked at
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shipyard.yaml").write_text("models: {}\n")
    alone = inspect_maturity(bare, tmp_path / "outside" / "shipyard.yaml")
    assert not alone.criterion("automation").met


def test_a_project_file_that_cannot_be_read_is_said_and_the_rest_still_read(
    bare: Registry, folder: Path
) -> None:
    (folder / "shipyard.yaml").write_text("models: [fraud-detector]\n")
    report = inspect_maturity(bare, folder=folder)
    pipeline = report.criterion("pipeline")
    assert not pipeline.met
    assert "has no 'models' mapping" in pipeline.evidence
    assert pipeline.to_do == f"fix {folder / 'shipyard.yaml'}"
    with pytest.raises(e.ConfigurationError, match=r"missing\.yaml does not exist"):
        inspect_maturity(bare, folder / "missing.yaml")


# -- the demo ----------------------------------------------------------------------------------


def _demo_settings(demo_run: DemoRun) -> Settings:
    return Settings(home=demo_run.home, database_url=None, artifact_root=None)


def _assert_level_3_on_real_things(report: MaturityReport) -> None:
    assert report.level == 3
    assert report.name == "full MLOps automation"
    assert all(c.met and c.to_do is None for c in report.criteria), report.criteria
    assert report.next_level_needs == ()
    said = {c.id: c.evidence for c in report.criteria}
    assert said["registry"].startswith("fraud-detector:3 has 12 metrics (accuracy, auc, ")
    assert said["registry"].endswith("; fraud-detector-fs:1 has no metrics")
    assert said["tracking"].startswith("fraud-detector:3 trained in run ")
    assert "(retrain (alert), finished " in said["tracking"]
    assert "pipeline 1 of fraud-detector trained on " in said["pipeline"]
    assert "auc >= 0.75 passed (" in said["gates"]
    assert "accuracy >= champion - 0.005 passed (" in said["gates"]
    assert "(1 primary 90% + 3 canary 10%)" in said["progressive"]
    assert "the worker (demo-worker) ran 1 retrain and 1 rollout job(s)" in said["automation"]
    assert said["monitoring"].startswith(
        "fraud-detector: 3 alert rule(s) (accuracy < 0.90 over 7d with >= 500 labels; "
        "drift(transaction_amount); latency_p95 > 100ms), "
    )
    assert said["retraining"].startswith(
        "pipeline 1 of fraud-detector started by an alert (accuracy < 0.90 over 7d with >= 500 "
        "labels at 0."
    )
    assert said["decision"].startswith("pipeline 1 of fraud-detector promoted v3 on ")
    assert " labelled outcomes (" in said["decision"]
    assert said["features"].startswith(
        "3 feature view(s) (customer_activity v1, customer_profile v1, merchant_risk v1); "
        "3 materialization(s), the newest on "
    )


def test_the_demo_installation_reaches_level_3_with_every_criterion_evidenced(
    demo_run: DemoRun,
) -> None:
    project = demo_run.home / "shipyard.yaml"
    with Registry.from_settings(_demo_settings(demo_run)) as registry:
        report = inspect_maturity(registry, project)
    _assert_level_3_on_real_things(report)
    assert report.criterion("pipeline").evidence.startswith(f"{project} declares fraud-detector; ")


# -- the command -------------------------------------------------------------------------------


def shipyard(home: Path, *args: str, config: Path | None = None, cwd: Path | None = None) -> Any:
    """The command as users run it: embedded state in `home`, wide enough that no cell wraps."""
    env = {**os.environ, "SHIPYARD_HOME": str(home), "COLUMNS": "400"}
    for name in ("SHIPYARD_DATABASE_URL", "SHIPYARD_ARTIFACT_ROOT", "SHIPYARD_CONFIG"):
        env.pop(name, None)
    if config is not None:
        env["SHIPYARD_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip


def test_the_command_prints_the_table_and_json_of_the_demo(demo_run: DemoRun) -> None:
    project = demo_run.home / "shipyard.yaml"
    as_json = shipyard(demo_run.home, "maturity", "--project", str(project), "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["level"] == 3
    assert data["name"] == "full MLOps automation"
    assert data["project"] == str(project)
    assert [c["id"] for c in data["criteria"]] == [*LEVEL_1, *LEVEL_2, *LEVEL_3]
    assert all(c["met"] and c["to_do"] is None for c in data["criteria"])
    assert data["next_level"] is None
    assert data["next_level_needs"] == []
    # the project file from $SHIPYARD_CONFIG when none is named
    table = shipyard(demo_run.home, "maturity", config=project)
    assert table.returncode == 0, table.stderr
    said = " ".join(table.stdout.split())
    assert "promotion and rollback are automatic on live evidence (decision)" in said
    assert "pipeline 1 of fraud-detector promoted v3 on " in said
    assert f"level 3: full MLOps automation (project: {project})" in said
    assert "every criterion of the ladder holds" in said


def test_the_command_on_a_bare_home_says_what_level_1_needs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shown = shipyard(home, "maturity", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    said = " ".join(shown.stdout.split())
    assert f"level 0: manual (project: no project file in {tmp_path})" in said
    assert "level 1 needs:" in said
    assert (
        "- training is a declared, repeatable pipeline: declare NAME under `models:` in "
        "shipyard.yaml (`train: module:function`, `data:`), then `shipyard pipeline run NAME`"
    ) in said
    assert said.count("to do:") == 10
    # evidence is printed as it is, brackets and all
    assert "no project file (shipyard.yaml, or [tool.shipyard] in pyproject.toml)" in said
    assert "e.g. ['auc >= 0.75', 'auc >= champion - 0.005']" in said
    assert "[red]" not in said  # markup rendered, not printed
    assert "Traceback" not in shown.stderr
