"""MLOps maturity: the level this installation has actually reached, on evidence read from its
state, with what each unmet criterion needs.

The ladder (the seed's definitions). A level is reached when every criterion of it and of the
levels below it holds:

    0  manual                     models trained and deployed by hand, nothing tracked
    1  tracked and repeatable
       registry     a model's newest version has metrics, a signature and a reference profile
       tracking     a model's newest version links to a run the tracker recorded
       pipeline     the project file declares a model's retraining spec, and a pipeline of
                    that model has trained
    2  automated delivery (CI/CD for ML)
       gates        a pipeline validated its candidate against at least one gate
       progressive  a release went out as a canary or a shadow (a deployment revision with one)
       automation   a CI file of the project runs shipyard commands whose failure fails the
                    job, or the worker delivered by itself (retrain or rollout jobs done)
    3  full MLOps automation
       monitoring   a model has enabled alert rules and recorded monitoring snapshots
       retraining   a pipeline was started by a policy (schedule, alert, labels), not by hand
       decision     a canary was promoted or rolled back by the decision on its live labels,
                    not by a person
       features     feature views are applied and have been materialized

A criterion holds when the installation shows it for at least one model: the level says how
far the installation's practice reaches, and each criterion's evidence names the models that
do not follow it yet. A model's newest version is its highest ready one: older versions
registered by hand do not hold back a model that its pipeline now trains.

Automation at level 2 is a CI job or the worker: the worker runs the same pipeline on its
policies and stops at a refused candidate, as `shipyard pipeline run`'s exit 10 stops a job.
The feature store is required at level 3, as the seed defines it: there a model's training
sets and its served values come from managed views, not from joins each script redoes.

CI files are looked for in the project file's folder and each folder above it up to the
repository root (the first with `.git`): `.github/workflows/*.y*ml`, `.gitlab-ci.yml`,
`Jenkinsfile`, `azure-pipelines.y*ml`, `.circleci/config.yml`, `bitbucket-pipelines.yml` and
`.ci/*`. A command counts where a line (a list item, `run:`, `script:`, a quote, `&&`, `;`)
starts `shipyard` (also through `python -m`, `uv run`, `poetry run` or a path), except
`shipyard server` and `shipyard demo`. It does not count when its failure is let through: an
`||` after it (but `|| exit N`), a pipe in a file without `pipefail`, a file that says
`continue-on-error: true`, `allow_failure: true`, `continueOnError: true`, `catchError`,
`returnStatus: true` or `set +e`, or a `.ci/` script without `set -e`.

`assess(installation)` is pure; `inspect_maturity` reads the installation and assesses it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from shipyard.core.errors import ConfigurationError, ShipyardError
from shipyard.core.project import DEFAULT_FILES, read_project_file
from shipyard.features import FeatureStore
from shipyard.monitoring import AlertManager
from shipyard.registry import Deployment, ModelVersion, Registry
from shipyard.retraining import PipelineRecord, PipelineStep, load_specs, pipeline_history
from shipyard.store import tables
from shipyard.tracking import RunRecord, Tracker

__all__ = ["MATURITY_LEVELS", "MaturityCriterion", "MaturityReport", "inspect_maturity"]

MATURITY_LEVELS: dict[int, str] = {
    0: "manual",
    1: "tracked and repeatable",
    2: "automated delivery (CI/CD for ML)",
    3: "full MLOps automation",
}
"""Each level's name."""

PIPELINES_READ = 200  # the newest pipelines of each model read for evidence
POLICY_TRIGGERS = ("schedule", "alert", "labels")
DELIVERY_JOBS = ("retrain", "rollout")
PROGRESSIVE_ROLES = ("canary", "shadow")
SHOWN = 4  # models, rules or views named in one piece of evidence before "and N more"


@dataclass(frozen=True)
class MaturityCriterion:
    """One rung of the ladder: whether it holds here, the evidence, and what would satisfy it."""

    id: str
    level: int
    title: str
    met: bool
    evidence: str
    to_do: str | None = None  # None when met

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "level": self.level,
            "title": self.title,
            "met": self.met,
            "evidence": self.evidence,
            "to_do": self.to_do,
        }


@dataclass(frozen=True)
class MaturityReport:
    """The level reached (0-3), every criterion, and where the installation was read from."""

    level: int
    criteria: tuple[MaturityCriterion, ...]
    project: str | None
    folder: str

    @property
    def name(self) -> str:
        return MATURITY_LEVELS[self.level]

    @property
    def next_level_needs(self) -> tuple[MaturityCriterion, ...]:
        """The unmet criteria of the level above the one reached (none at level 3)."""
        return tuple(c for c in self.criteria if c.level == self.level + 1 and not c.met)

    def criterion(self, criterion_id: str) -> MaturityCriterion:
        """The criterion with this id (`KeyError` names the ids there are)."""
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise KeyError(f"no criterion {criterion_id!r}; they are {', '.join(RUNGS)}")

    def to_dict(self) -> dict[str, Any]:
        following = self.level + 1 if self.level + 1 in MATURITY_LEVELS else None
        return {
            "level": self.level,
            "name": self.name,
            "project": self.project,
            "folder": self.folder,
            "criteria": [c.to_dict() for c in self.criteria],
            "next_level": following,
            "next_level_needs": [c.to_dict() for c in self.next_level_needs],
        }


# -- what is read ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """What one registered model shows."""

    name: str
    versions: tuple[ModelVersion, ...]  # oldest first, pending ones left out
    reference: bool  # the newest version's bundle has a reference profile
    runs: Mapping[str, RunRecord]  # the versions' runs that the tracker has
    deployments: tuple[Deployment, ...]  # newest first
    rules: tuple[str, ...]  # enabled alert rules
    snapshots: int
    last_snapshot: datetime | None
    pipelines: tuple[PipelineRecord, ...]  # newest first

    @property
    def newest(self) -> ModelVersion | None:
        ready = [v for v in self.versions if v.status == "ready"]
        return ready[-1] if ready else None


@dataclass(frozen=True)
class CiFile:
    """A CI configuration and the shipyard commands it runs."""

    path: str
    gating: tuple[str, ...]  # commands whose failure fails the job
    lenient: tuple[str, ...] = ()  # commands whose failure is let through
    why: str = ""  # why those are let through


@dataclass(frozen=True)
class Installation:
    """Everything the assessment reads, so that it is a pure function of this."""

    folder: Path  # where the project file and CI files were looked for
    models: tuple[ModelFacts, ...] = ()
    project: Path | None = None
    specs: tuple[str, ...] = ()  # models with a retraining spec in the project file
    project_error: str | None = None
    ci: tuple[CiFile, ...] = ()
    delivery_jobs: Mapping[str, int] = field(default_factory=dict)  # done, by kind
    workers: tuple[str, ...] = ()
    last_delivery: datetime | None = None
    views: tuple[str, ...] = ()  # "name vN"
    materializations: int = 0
    last_materialized: datetime | None = None
    entities_written: int = 0

    @property
    def pipelines(self) -> list[PipelineRecord]:
        """Every model's pipelines, newest first."""
        found = [p for m in self.models for p in m.pipelines]
        return sorted(found, key=lambda p: (_moment(p["created_at"]), p["id"]), reverse=True)


# -- the assessment --------------------------------------------------------------------------

# id: (level, title, what to do when unmet; NAME is replaced by a model of the installation)
RUNGS: dict[str, tuple[int, str, str]] = {
    "registry": (1, "models are registered with metrics, a signature and a reference profile",
        "register with metrics, a sample and the training data: `shipyard.register(model, "
        "name=NAME, sample=X, training_data=train, metrics={...})`, or `shipyard models register "
        "model.joblib -n NAME --sample rows.parquet --metric auc=0.93`"),
    "tracking": (1, "training runs are tracked (versions linked to runs)",
        "train inside `with shipyard.start_run(experiment=NAME):` and register there (the "
        "version links to the run), or let `shipyard pipeline run NAME` train it"),
    "pipeline": (1, "training is a declared, repeatable pipeline",
        "declare NAME under `models:` in shipyard.yaml (`train: module:function`, `data:`), "
        "then `shipyard pipeline run NAME`"),
    "gates": (2, "candidates pass validation gates before release",
        "add `gates:` to models.NAME in shipyard.yaml, e.g. ['auc >= 0.75', "
        "'auc >= champion - 0.005'], and run the pipeline"),
    "progressive": (2, "releases are progressive (canary or shadow)",
        "release through a canary: `shipyard deploy NAME --version N --canary 5` (or "
        "`--shadow`), or let the pipeline canary it (`rollout: {canary: 5}`)"),
    "automation": (2, "delivery is automated and gates on shipyard's exit codes",
        "add a CI job that runs `shipyard pipeline run NAME` (exit 10 when a gate refuses the "
        "candidate fails the job), e.g. in .github/workflows/shipyard.yml; or run `shipyard "
        "worker` with `policies:` in shipyard.yaml"),
    "monitoring": (3, "production is monitored (alert rules and monitoring snapshots)",
        "add an alert rule (`shipyard monitor rule-add NAME 'accuracy < 0.90 over 7d with >= "
        "500 labels'`) and record snapshots (`shipyard monitor run NAME`, or a `shipyard worker`)"),
    "retraining": (3, "retraining is triggered automatically (a policy, not a person)",
        "add `policies:` (schedule, on_alert or every_labels) to models.NAME in shipyard.yaml "
        "and run `shipyard worker`"),
    "decision": (3, "promotion and rollback are automatic on live evidence",
        "let the canary's live labels decide: keep `rollout: {approval: auto}` (the default) "
        "for models.NAME and run a `shipyard worker`"),
    "features": (3, "features are managed (views applied and materialized)",
        "define views in a features.py, `shipyard features apply features.py`, then "
        "`shipyard features materialize`"),
}  # fmt: skip

# what a check finds: met, the evidence, and what to do instead of the rung's (None: its own)
Found = tuple[bool, str, str | None]


def assess(installation: Installation) -> MaturityReport:
    """The installation placed on the ladder (see the module docstring)."""
    name = _example(installation)
    criteria = []
    for rung, check in CHECKS.items():
        level, title, to_do = RUNGS[rung]
        met, evidence, instead = check(installation)
        advice = None if met else (instead or to_do).replace("NAME", name)
        criteria.append(MaturityCriterion(rung, level, title, met, evidence, advice))
    reached = 0
    for level in (1, 2, 3):
        if not all(c.met for c in criteria if c.level == level):
            break
        reached = level
    project = str(installation.project) if installation.project else None
    return MaturityReport(reached, tuple(criteria), project, str(installation.folder))


def _registry(inst: Installation) -> Found:
    lines = []
    for m in inst.models:
        v = m.newest
        if v is None:
            lines.append((False, f"{m.name}: no ready version"))
            continue
        has = {"metrics": bool(v.metrics), "signature": bool(v.signature.names),
               "reference profile": m.reference}  # fmt: skip
        missing = [what for what, present in has.items() if not present]
        said = (
            f"{v.ref} has {len(v.metrics)} metrics ({_names(sorted(v.metrics))}), a signature "
            f"of {len(v.signature.names)} columns and a reference profile"
        )
        lines.append((not missing, f"{v.ref} has no {', no '.join(missing)}" if missing else said))
    return _by_model(lines, "no model is registered")


def _tracking(inst: Installation) -> Found:
    lines = []
    for m in inst.models:
        v = m.newest
        if v is None:
            continue
        linked = sum(1 for x in m.versions if x.run_id in m.runs)
        count = f"{linked} of {len(m.versions)} versions linked to runs"
        run = m.runs.get(v.run_id or "")
        if run is not None:
            when = f"{run.status} {_day(run.started_at)}"
            said = f"{v.ref} trained in run {run.id[:12]} ({run.name or run.experiment}, {when})"
            lines.append((True, f"{said}; {count}"))
        elif v.run_id:
            lines.append((False, f"{v.ref} names run {v.run_id[:12]}, which the tracker lacks"))
        else:
            lines.append((False, f"{v.ref} links to no run; {count}"))
    return _by_model(lines, "no model is registered")


def _pipeline(inst: Installation) -> Found:
    trained = [p for p in inst.pipelines if _step(p, "train", "ok") is not None]
    ran = f"{len(trained)} pipeline(s) trained" if trained else "no pipeline has trained"
    if inst.project_error is not None:
        return False, f"{inst.project_error}; {ran}", f"fix {inst.project}"
    if inst.project is None:
        files = "shipyard.yaml, or [tool.shipyard] in pyproject.toml"
        return False, f"no project file ({files}) in {inst.folder}; {ran}", None
    if not inst.specs:
        return False, f"{inst.project} declares no retraining spec; {ran}", None
    declared = [p for p in trained if p["model"] in inst.specs]
    evidence = f"{inst.project} declares {_names(inst.specs)}; "
    if not declared:
        evidence += f"none of their pipelines has trained ({ran} in all)"
        return False, evidence, "run `shipyard pipeline run NAME`, or a `shipyard worker`"
    last = declared[0]
    evidence += (
        f"pipeline {last['id']} of {last['model']} trained on {_day(last['created_at'])} "
        f"({last['status']}); {len(declared)} of their pipelines trained"
    )
    return True, evidence, None


def _gates(inst: Installation) -> Found:
    validated = [(p, s) for p in inst.pipelines if (s := _step(p, "validate")) is not None]
    gated = [(p, s) for p, s in validated if s["evidence"].get("gates")]
    if not gated:
        if validated:
            return False, f"{len(validated)} pipeline(s) validated without a gate", None
        return False, "no pipeline has validated a candidate", None
    p, step = gated[0]
    gates = "; ".join(_gate(g) for g in step["evidence"]["gates"])
    rejected = sum(1 for _, s in gated if s["status"] == "rejected")
    evidence = (
        f"pipeline {p['id']} of {p['model']} validated its candidate on {_day(step['at'])}, "
        f"{step['status']}: {gates}; {len(gated)} gated validation(s), {rejected} rejected"
    )
    return True, evidence, None


def _progressive(inst: Installation) -> Found:
    lines = []
    for m in inst.models:
        if not m.deployments:
            continue
        staged = [d for d in m.deployments if any(v.role in PROGRESSIVE_ROLES for v in d.variants)]
        if not staged:
            lines.append((False, f"{m.name}: {len(m.deployments)} revision(s), none progressive"))
            continue
        d = staged[0]
        lines.append((True, (
            f"{m.name}: {len(staged)} of {len(m.deployments)} revisions canary or shadow, the "
            f"latest revision {d.revision} on {_day(d.created_at)} ({d.describe()})"
        )))  # fmt: skip
    return _by_model(lines, "no model has been deployed")


def _automation(inst: Installation) -> Found:
    parts = []
    for ci in inst.ci:
        if ci.gating:
            parts.append(f"{ci.path} runs {_quoted(ci.gating)} (a failing command fails the job)")
        if ci.lenient:
            parts.append(f"{ci.path} runs {_quoted(ci.lenient)} but lets it fail ({ci.why})")
    if not inst.ci:
        parts.append(f"no CI configuration in {inst.folder} runs a shipyard command")
    if inst.delivery_jobs:
        jobs = " and ".join(f"{n} {kind}" for kind, n in sorted(inst.delivery_jobs.items()))
        workers = f"the worker ({_names(inst.workers)})" if inst.workers else "the worker"
        parts.append(f"{workers} ran {jobs} job(s), the last on {_day(inst.last_delivery)}")
    else:
        parts.append("no worker has run a retrain or rollout job")
    met = any(ci.gating for ci in inst.ci) or bool(inst.delivery_jobs)
    return met, "; ".join(parts), None


def _monitoring(inst: Installation) -> Found:
    lines = []
    for m in inst.models:
        rules = f"{len(m.rules)} alert rule(s)" + (f" ({_names(m.rules, '; ')})" if m.rules else "")
        newest = f", the newest to {_day(m.last_snapshot)}" if m.last_snapshot else ""
        said = f"{m.name}: {rules}, {m.snapshots} snapshot(s){newest}"
        lines.append((bool(m.rules) and m.snapshots > 0, said))
    return _by_model(lines, "no model is registered")


def _retraining(inst: Installation) -> Found:
    pipelines = inst.pipelines
    automatic = [p for p in pipelines if p["trigger"].get("kind") in POLICY_TRIGGERS]
    if not automatic:
        by_hand = f"{len(pipelines)} pipeline(s), every one started by hand"
        return False, by_hand if pipelines else "no pipeline has run", None
    p = automatic[0]
    evidence = (
        f"pipeline {p['id']} of {p['model']} started by {_trigger(p)} on "
        f"{_day(p['created_at'])}; {len(automatic)} of {len(pipelines)} pipelines automatic"
    )
    return True, evidence, None


def _decision(inst: Installation) -> Found:
    ended = [
        (p, s)
        for p in inst.pipelines
        if p["status"] in ("promoted", "rolled_back")
        and (s := _step(p, "promote", "done") or _step(p, "rollback", "done")) is not None
    ]
    decided = [(p, s) for p, s in ended if "challenger" in s["evidence"]]
    if not decided:
        if not ended:
            waiting = sum(
                1 for p in inst.pipelines if p["status"] in ("canary", "awaiting_approval")
            )
            return False, f"no canary has been decided ({waiting} waiting)", None
        p, s = ended[0]
        said = f"pipeline {p['id']} of {p['model']} {_ended(p)} v{p['candidate_version']}"
        return False, f"{said} on {_day(s['at'])} by a person ({s['evidence'].get('reason')})", None
    p, s = decided[0]
    champion, challenger = s["evidence"].get("champion", {}), s["evidence"]["challenger"]
    canary, served = int(challenger.get("labelled", 0)), int(champion.get("labelled", 0))
    evidence = (
        f"pipeline {p['id']} of {p['model']} {_ended(p)} v{p['candidate_version']} on "
        f"{_day(s['at'])} after {canary + served:,} labelled outcomes ({canary:,} canary, "
        f"{served:,} champion): {s['evidence'].get('reason', '')}; {len(decided)} decided on "
        "live evidence"
    )
    return True, evidence, None


def _features(inst: Installation) -> Found:
    views = f"{len(inst.views)} feature view(s) ({_names(inst.views)})"
    runs = (
        f"{inst.materializations} materialization(s), the newest on "
        f"{_day(inst.last_materialized)} ({inst.entities_written:,} entities written in all)"
    )
    evidence = (
        f"{views if inst.views else 'no feature view is applied'}; "
        f"{runs if inst.materializations else 'none materialized'}"
    )
    return bool(inst.views) and inst.materializations > 0, evidence, None


CHECKS: dict[str, Callable[[Installation], Found]] = {
    "registry": _registry,
    "tracking": _tracking,
    "pipeline": _pipeline,
    "gates": _gates,
    "progressive": _progressive,
    "automation": _automation,
    "monitoring": _monitoring,
    "retraining": _retraining,
    "decision": _decision,
    "features": _features,
}


# -- evidence in words ------------------------------------------------------------------------


def _names(items: Sequence[str], sep: str = ", ") -> str:
    shown = sep.join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _by_model(lines: list[tuple[bool, str]], none: str) -> Found:
    """Met when a model meets it; the models that do first, then those that do not yet."""
    ordered = [text for ok, text in lines if ok] + [text for ok, text in lines if not ok]
    return any(ok for ok, _ in lines), _names(ordered, "; ") if lines else none, None


def _quoted(commands: Sequence[str]) -> str:
    return _names([f"`{c}`" for c in commands])


def _example(inst: Installation) -> str:
    """A model to name in what to do: one with a retraining spec, else the first registered."""
    if inst.specs:
        return inst.specs[0]
    return inst.models[0].name if inst.models else "NAME"


def _moment(value: datetime | str | None) -> datetime:
    if value is None:
        return datetime.min.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _day(value: datetime | str | None) -> str:
    return "an unknown day" if value is None else f"{_moment(value):%Y-%m-%d}"


def _step(record: PipelineRecord, name: str, status: str | None = None) -> PipelineStep | None:
    """The pipeline's last `name` step (with that status when given)."""
    steps: list[PipelineStep] = record["steps"]
    for step in steps[::-1]:
        if step["step"] == name and (status is None or step["status"] == status):
            return step
    return None


def _gate(gate: Mapping[str, Any]) -> str:
    value, bar = gate.get("value"), gate.get("bar")
    said = "passed" if gate.get("passed") else "failed"
    if not isinstance(value, int | float):
        return f"{gate.get('gate')} {said}"
    against = f" vs {bar:.4g}" if isinstance(bar, int | float) else ""
    return f"{gate.get('gate')} {said} ({value:.4g}{against})"


def _trigger(record: PipelineRecord) -> str:
    trigger = record["trigger"]
    kind = trigger.get("kind")
    reasons = trigger.get("reasons") or [{}]
    first = reasons[0]
    if kind == "alert":
        value = first.get("value")
        at = f" at {value:.4g}" if isinstance(value, int | float) else ""
        return f"an alert ({first.get('rule', 'a firing alert rule')}{at})"
    if kind == "schedule":
        return f"its schedule ({first.get('schedule', 'cron')})"
    return f"new labels ({first.get('labels', 'enough')} since the last retrain)"


def _ended(record: PipelineRecord) -> str:
    return "promoted" if record["status"] == "promoted" else "rolled back"


# -- CI files ---------------------------------------------------------------------------------

CI_FILES = (
    ".github/workflows/*.yml",
    ".github/workflows/*.yaml",
    ".gitlab-ci.yml",
    "Jenkinsfile",
    "azure-pipelines.yml",
    "azure-pipelines.yaml",
    ".circleci/config.yml",
    "bitbucket-pipelines.yml",
    ".ci/*",
)
CI_MAX_BYTES = 1_000_000
NOT_GATING_COMMANDS = ("server", "demo")  # they serve or show; their exit decides nothing

# where a command starts (a line, a YAML list item or `run:`-like key, a quote, a shell
# separator), environment assignments, a runner or a path, then `shipyard SUBCOMMAND`
_COMMAND = re.compile(
    r"""(?:^|[;&|(`'"])\s*
        (?:-\s+)?(?:(?:run|script|command|sh|bash):\s*[|>]?\s*)?
        (?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*
        (?:(?:uv|poetry|pipx|hatch|pdm|rye)\s+run\s+|python3?\s+-m\s+|[\w.~/-]*/)?
        (?P<command>shipyard\s+(?P<sub>[a-z][a-z-]*)[^;&|'"`#\n]*)
        (?P<rest>[^\n]*)""",
    re.VERBOSE,
)
# after a command: `||` without a failing exit, or a pipe, hides its exit code from the job
_LET_THROUGH = re.compile(r"\|\|(?!\s*exit\s+[1-9])")
_PIPED = re.compile(r"\|(?!\|)")
_LENIENT = re.compile(
    r"continue-on-error:\s*true|allow_failure:\s*true|continueOnError:\s*true|catchError"
    r"|returnStatus:\s*true|^\s*set\s+\+e\b",
    re.MULTILINE,
)
_ERREXIT = re.compile(
    r"^\s*set\s+-[a-zA-Z]*e|set\s+-o\s+errexit|^#!.*\s-[a-zA-Z]*e\b", re.MULTILINE
)


def ci_commands(text: str, *, script: bool = False) -> CiFile:
    """The shipyard commands of one CI file, split by whether their failure fails the job
    (`script`: a shell script of `.ci/`, which stops at a failure only under `set -e`)."""
    gating: list[str] = []
    lenient: list[str] = []
    reasons: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith(("#", "//")):
            continue
        for match in _COMMAND.finditer(line):
            if match["sub"] in NOT_GATING_COMMANDS:
                continue
            command, rest = " ".join(match["command"].split()), match["rest"].lstrip()
            if _LET_THROUGH.match(rest):
                reasons.append("`|| ...` after it")
            elif _PIPED.match(rest) and "pipefail" not in text:
                reasons.append("piped without `pipefail`")
            else:
                gating.append(command)
                continue
            lenient.append(command)
    file_wide = _LENIENT.search(text)
    if file_wide is not None or (script and not _ERREXIT.search(text)):
        lenient, gating = [*gating, *lenient], []
        reasons = [f"`{file_wide.group(0).strip()}`" if file_wide else "a script without `set -e`"]
    why = "; ".join(dict.fromkeys(reasons))
    return CiFile("", tuple(dict.fromkeys(gating)), tuple(dict.fromkeys(lenient)), why)


def _ci_folders(folder: Path) -> list[Path]:
    """`folder`, then each folder above it up to the repository root (none: `folder` only)."""
    chain = [folder, *folder.parents]
    for i, candidate in enumerate(chain):
        if (candidate / ".git").exists():
            return chain[: i + 1]
    return [folder]


def read_ci(folder: Path) -> tuple[CiFile, ...]:
    """The CI files around `folder` that run shipyard commands."""
    found = []
    for base in _ci_folders(folder):
        for pattern in CI_FILES:
            for path in sorted(base.glob(pattern)):
                if not path.is_file() or path.stat().st_size > CI_MAX_BYTES:
                    continue
                try:
                    text = path.read_text(errors="replace")
                except OSError:
                    continue
                ci = ci_commands(text, script=pattern == ".ci/*")
                if ci.gating or ci.lenient:
                    shown = str(path.relative_to(base)) if base == folder else str(path)
                    found.append(CiFile(shown, ci.gating, ci.lenient, ci.why))
    return tuple(found)


# -- reading an installation ------------------------------------------------------------------


def inspect_maturity(
    registry: Registry, project: Path | None = None, *, folder: Path | None = None
) -> MaturityReport:
    """Read the installation behind `registry` and place it on the ladder.

    Args:
        registry: the installation's metadata and artifacts.
        project: its shipyard.yaml (default: the first of shipyard.yaml, shipyard.yml and
            pyproject.toml with [tool.shipyard] in `folder`).
        folder: where to look for the project file when none is named (default: the current
            folder); CI files are looked for in the project file's folder and above it.
    """
    return assess(read_installation(registry, project, folder=folder))


def read_installation(
    registry: Registry, project: Path | None = None, *, folder: Path | None = None
) -> Installation:
    """Everything `assess` looks at, read through the packages' public APIs (and the tables
    where no public read counts what is needed)."""
    project, specs, error = _project(project, folder or Path.cwd())
    where = (project.parent if project is not None else folder or Path.cwd()).resolve()
    tracker = Tracker(registry.database, registry.artifacts, actor=registry.actor)
    alerts = AlertManager(registry.database, actor=registry.actor)
    snapshots = registry.database.read(_snapshot_counts)
    models = tuple(
        _model_facts(registry, tracker, alerts, m.name, snapshots.get(m.name, (0, None)))
        for m in registry.list_models()
    )
    delivery, workers, last = registry.database.read(_delivery_jobs)
    runs, last_run, entities = registry.database.read(_materializations)
    return Installation(
        folder=where,
        models=models,
        project=project,
        specs=specs,
        project_error=error,
        ci=read_ci(where),
        delivery_jobs=delivery,
        workers=workers,
        last_delivery=last,
        views=tuple(f"{v['name']} v{v['version']}" for v in FeatureStore(registry).views()),
        materializations=runs,
        last_materialized=last_run,
        entities_written=entities,
    )


def _project(named: Path | None, folder: Path) -> tuple[Path | None, tuple[str, ...], str | None]:
    """The project file, the models it declares a retraining spec for, or why it is unreadable."""
    if named is not None and not named.exists():
        raise ConfigurationError(f"{named} does not exist; name the project's shipyard.yaml")
    candidates: Iterable[Path] = (
        [named] if named is not None else (folder / f for f in DEFAULT_FILES)
    )
    for candidate in candidates:
        try:
            found = read_project_file(candidate, must_exist=False)
            if found is None:
                continue
            return found[1], tuple(load_specs(found[1])), None
        except ConfigurationError as error:  # said in the evidence: the rest is still read
            return candidate, (), error.message
    return None, (), None


def _model_facts(
    registry: Registry,
    tracker: Tracker,
    alerts: AlertManager,
    name: str,
    snapshots: tuple[int, datetime | None],
) -> ModelFacts:
    versions = tuple(registry.list_versions(name))
    linked = {v.run_id for v in versions if v.run_id}
    runs = {r.id: r for r in tracker.list_runs(limit=len(linked), among=linked)} if linked else {}
    ready = [v for v in versions if v.status == "ready"]
    return ModelFacts(
        name=name,
        versions=versions,
        reference=bool(ready) and _has_reference(registry, ready[-1]),
        runs=runs,
        deployments=tuple(registry.deployment_history(name, limit=10_000)),
        rules=tuple(r["expression"] for r in alerts.rules(name) if r["enabled"]),
        snapshots=snapshots[0],
        last_snapshot=snapshots[1],
        pipelines=tuple(pipeline_history(registry, name, PIPELINES_READ)),
    )


def _has_reference(registry: Registry, version: ModelVersion) -> bool:
    try:
        files = registry.metadata(version.name, version.version).get("files", {})
    except (ShipyardError, OSError):  # a bundle that cannot be read has no usable reference
        return False
    return "reference/profile.json" in files


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def _snapshot_counts(conn: Any) -> dict[str, tuple[int, datetime | None]]:
    s = tables.monitoring_snapshots
    query = select(s.c.model_name, func.count(), func.max(s.c.period_end)).group_by(s.c.model_name)
    return {row[0]: (int(row[1]), _aware(row[2])) for row in conn.execute(query)}


def _delivery_jobs(conn: Any) -> tuple[dict[str, int], tuple[str, ...], datetime | None]:
    j = tables.jobs
    done = (j.c.status == "done") & j.c.kind.in_(DELIVERY_JOBS)
    rows = conn.execute(
        select(j.c.kind, func.count(), func.max(j.c.updated_at)).where(done).group_by(j.c.kind)
    ).all()
    workers = conn.execute(select(j.c.leased_by).where(done).distinct()).scalars().all()
    last = max((_moment(r[2]) for r in rows if r[2] is not None), default=None)
    return (
        {r[0]: int(r[1]) for r in rows},
        tuple(sorted(w for w in workers if w)),
        last,
    )


def _materializations(conn: Any) -> tuple[int, datetime | None, int]:
    m = tables.feature_materializations
    row = conn.execute(
        select(func.count(), func.max(m.c.finished_at), func.sum(m.c.entities_written))
    ).one()
    return int(row[0]), _aware(row[1]), int(row[2] or 0)
