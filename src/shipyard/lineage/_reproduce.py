"""Make a past model version again from what its run recorded, and say how close it came.

What a run records is what reproduction needs: the training function (`module:function`), its
params, the training set and holdout as data versions, the seed its random generators started
from, the Python and ML package versions, the git commit of the code, and (through the
version's lineage) the feature definitions the training set was built with. `reproduce()` runs
the same function on the same rows with the same params and seed, then scores the result and
the original on the same holdout through the runtime that serves them:

- identical predictions: the training is deterministic and was made again exactly;
- otherwise the largest score difference and the holdout metrics' deltas, so a stochastic
  model (a network, a bagged ensemble without a seed) is judged by what matters.

Differences in the environment (package versions, Python, a different or dirty git tree, newer
feature definitions) are reported; `strict=True` refuses to train while any exists. A version
whose run lacks something (made outside a run, no training function named, no data kept) gets
the list of what is missing to make it reproducible, and nothing is trained.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Signature
from shipyard.core.errors import Conflict, InvalidInput, NotFound, UserCodeFailed
from shipyard.features import FeatureStore
from shipyard.monitoring import holdout_metrics
from shipyard.registry import Registry
from shipyard.retraining import training_function
from shipyard.runtime import load_predictor, package
from shipyard.tracking import RunRecord, Tracker, environment, git_state

__all__ = ["Reproduction", "reproduce", "reproduction_gaps"]

SAMPLE_ROWS = 1000  # rows that fix the reproduced model's packaging sample


@dataclass
class Reproduction:
    """What reproducing a version found and, when it trained, how the result compares."""

    ref: str
    run_id: str | None
    entrypoint: str | None
    params: dict[str, Any]
    data: dict[str, str]  # role -> data version id
    missing: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = "not reproducible"  # identical | different | not reproducible
    compared_on: str = ""
    rows: int = 0
    max_score_difference: float | None = None
    original: dict[str, float] = field(default_factory=dict)
    reproduced: dict[str, float] = field(default_factory=dict)
    registered: str | None = None

    @property
    def deltas(self) -> dict[str, float]:
        return {
            k: self.reproduced[k] - v
            for k, v in self.original.items()
            if k in self.reproduced and k != "latency_per_row_ms"
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref, "run": self.run_id, "entrypoint": self.entrypoint,
            "params": self.params, "data": self.data, "missing": self.missing,
            "differences": self.differences, "notes": self.notes, "verdict": self.verdict,
            "compared_on": self.compared_on, "rows": self.rows,
            "max_score_difference": self.max_score_difference, "original": self.original,
            "reproduced": self.reproduced, "deltas": self.deltas, "registered": self.registered,
        }  # fmt: skip


def reproduce(
    registry: Registry,
    tracker: Tracker,
    ref: str,
    *,
    strict: bool = False,
    register: bool = False,
) -> Reproduction:
    """Train `ref` (`NAME:VERSION` or `NAME:ALIAS`) again from its run's record and compare.

    Raises:
        Conflict: with `strict`, when the environment differs from the recorded one.
    """
    version = registry.resolve(ref)
    run = tracker.get(version.run_id) if version.run_id else None
    result = Reproduction(
        ref=version.ref, run_id=run.id if run else None,
        entrypoint=(run.entrypoint or None) if run else None,
        params=dict(run.params) if run else {},
        data={k: v["sha256"] for k, v in (run.datasets if run else {}).items() if v.get("snapshot")},
    )  # fmt: skip
    result.missing = reproduction_gaps(version.ref, run)
    if result.missing:
        return result
    assert run is not None
    assert result.entrypoint is not None
    result.differences = _differences(run)
    result.notes = _feature_notes(registry, version.lineage or {})
    if strict and result.differences:
        raise Conflict(
            f"{version.ref} was trained in another environment: "
            + "; ".join(result.differences)
            + " (without --strict, it is made again anyway and the differences reported)"
        )
    train = tracker.data.load(result.data["train"]).to_pandas()
    code_dir = run.environment.get("code_dir")
    function = training_function(
        result.entrypoint, Path(code_dir) if code_dir else None, version.name
    )
    seed = run.environment.get("seed")
    with tracker.start_run(
        experiment=version.name, name=f"reproduce {version.ref}", params=run.params,
        tags={"reproduces": version.ref}, entrypoint=result.entrypoint,
        code_dir=Path(code_dir) if code_dir else None, seed=seed,
    ) as again:  # fmt: skip
        for role, entry in run.datasets.items():
            if entry.get("snapshot"):
                again.log_dataset(role, tracker.data.load(entry["sha256"]), key=entry.get("key"), label=entry.get("label"))  # fmt: skip
        try:
            model = function(train, dict(run.params))
        except Exception as error:  # the user's code: named, with its line
            raise UserCodeFailed.raised("training function", result.entrypoint, error) from error
        _compare(registry, tracker, version, run, model, result)
        again.log_metrics({f"reproduced_{k}": v for k, v in result.reproduced.items()})
        again.set_tag("verdict", result.verdict)
        if register:
            made = registry.register(
                model, name=version.name, sample=train[version.signature.names].iloc[:2000],
                training_data=train, params=run.params, purpose=version.purpose,
                description=f"reproduction of {version.ref}", threshold=version.threshold,
                metrics={k: round(v, 6) for k, v in result.reproduced.items()},
                lineage={"reproduces": version.version, "parent": version.version},
            )  # fmt: skip
            result.registered = made.ref
    return result


def reproduction_gaps(ref: str, run: RunRecord | None) -> list[str]:
    """What the record lacks to train the version again, each with how to record it."""
    if run is None:
        return [
            f"{ref} was registered outside a tracked run: register it inside "
            "`with shipyard.start_run(entrypoint='module:function', params=...)`, or retrain it "
            "with `shipyard pipeline run`"
        ]
    missing = []
    if not run.entrypoint or ":" not in run.entrypoint:
        missing.append(
            "the run does not name its training function: start_run(entrypoint='module:function'), "
            "a function called as function(training_frame, params)"
        )
    train = run.datasets.get("train")
    if train is None or not train.get("snapshot"):
        missing.append(
            "the run kept no training data version: run.log_dataset('train', frame) (or pass "
            "training_data= to register inside the run)"
        )
    return missing


def _differences(run: RunRecord) -> list[str]:
    """How this environment differs from the one the run trained in."""
    recorded = run.environment
    if not recorded:
        return ["the run recorded no environment (made before shipyard recorded package versions)"]
    code_dir = recorded.get("code_dir")
    now = environment(Path(code_dir) if code_dir else None)
    out = []
    if recorded.get("python") != now["python"]:
        out.append(f"Python {recorded.get('python')} at training, {now['python']} now")
    before, after = recorded.get("packages", {}), now["packages"]
    for name in sorted(set(before) | set(after)):
        if name == "shipyard" or before.get(name) == after.get(name):
            continue  # shipyard's own version is reported, not a difference in training
        out.append(
            f"{name} {before.get(name, 'not installed')} at training, "
            f"{after.get(name, 'not installed')} now"
        )
    if run.git.get("commit"):
        current = git_state(Path(code_dir) if code_dir else None)
        if current.get("commit") != run.git["commit"]:
            out.append(
                f"the code is at commit {str(current.get('commit') or 'none')[:12]}, "
                f"trained at {run.git['commit'][:12]}"
            )
        elif current.get("dirty"):
            out.append("the code's git tree has uncommitted changes")
        if run.git.get("dirty"):
            out.append("the run trained from a git tree with uncommitted changes")
    return out


def _feature_notes(registry: Registry, lineage: dict[str, Any]) -> list[str]:
    views = (lineage.get("feature_store") or {}).get("views") or {}
    notes = []
    store = FeatureStore(registry)
    for view, used in views.items():
        try:
            latest = store.view(view)["version"]
        except NotFound:
            notes.append(f"feature view {view} (version {used} at training) no longer exists")
            continue
        if latest != used:
            notes.append(
                f"feature view {view} is at version {latest}; training used version {used} "
                "(the training data version holds the values it used)"
            )
    return notes


def _compare(
    registry: Registry,
    tracker: Tracker,
    version: Any,
    run: RunRecord,
    model: Any,
    result: Reproduction,
) -> None:
    """Score the original and the reproduction on the same rows, through their runtimes."""
    role = "holdout" if "holdout" in result.data else "train"
    entry = run.datasets[role]
    rows = tracker.data.load(entry["sha256"]).to_pandas()
    sig: Signature = version.signature
    missing = [c for c in sig.names if c not in rows.columns]
    if missing:
        raise InvalidInput(
            f"the {role} data of {version.ref} lacks the model's column(s) {missing}; it cannot "
            "score both versions"
        )
    columns = sig.validate_frame(rows[sig.names])
    original = registry.open(version.name, version.version).predictor
    folder = Path(tempfile.mkdtemp(prefix="shipyard-reproduce-"))
    try:
        packaged = package(
            model, sig, sig.validate_frame(rows[sig.names].iloc[:SAMPLE_ROWS]), folder / "model"
        )
        again = load_predictor(folder / "model", packaged.info, packaged.runtime, packaged.onnx)
        before, after = np.asarray(original.predict(columns)), np.asarray(again.predict(columns))
        result.compared_on, result.rows = role, len(rows)
        result.verdict = "identical" if _same(before, after) else "different"
        result.max_score_difference = _largest_gap(before, after)
        label = entry.get("label")
        if label and label in rows.columns:
            truth = rows[label].to_numpy()
            classes = registry.classes(version.name, version.version)
            result.original = holdout_metrics(
                original, columns, truth, version.task, classes, version.threshold
            )
            result.reproduced = holdout_metrics(
                again, columns, truth, version.task, classes, version.threshold
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _largest_gap(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.shape != b.shape or a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        return None
    return float(np.max(np.abs(a.astype(float) - b.astype(float)))) if a.size else 0.0
