"""Registering a version: the bundle is written completely before the version becomes
visible, and a registration that fails or is killed leaves nothing behind.

A registration claims its version number with a pending row naming its host and process.
If it fails, it removes its half-written bundle and row, hands the number out again and drops
the model it created. If it is killed (`kill -9`, a lost machine), the next registration or
server start finds the pending row of a process that no longer runs (or, from another host,
one older than a day) and does the same, and removes the scratch folders of dead processes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from shipyard.core import (
    Signature,
    fingerprint,
    profile,
    reference_sample,
    validate_alias,
    validate_model_name,
)
from shipyard.core.errors import InvalidInput
from shipyard.core.lifetime import pid_alive
from shipyard.core.version import __version__
from shipyard.explain import global_importance
from shipyard.registry import _repository as repo
from shipyard.registry._base import RegistryBase
from shipyard.registry._bundle import (
    LoadedBundle,
    bundle_prefix,
    upload_bundle,
    write_json,
    write_metadata,
)
from shipyard.registry._records import ModelVersion
from shipyard.runtime import (
    Packaged,
    described_inputs,
    detect_flavour,
    load_predictor,
    package,
)
from shipyard.store import utcnow
from shipyard.tracking import active_run

__all__ = ["Registering"]

log = logging.getLogger("shipyard.registry")

SAMPLE_ROWS_CHECKED = 1000
PROFILE_ROWS = 200_000
REFERENCE_ROWS = 100_000
IMPORTANCE_ROWS = 200  # reference rows a version's global importance is the mean over
ABANDONED_AFTER = timedelta(hours=24)  # a pending version of another host's process
_SCRATCH = re.compile(r"^shipyard-bundle-(\d+)-")


class Registering(RegistryBase):
    """`register()` and the clean-up of registrations that never finished."""

    def ensure_model(self, name: str, *, description: str = "") -> bool:
        """Create `name`, with no versions yet, unless it exists; True when it was created
        (a retraining pipeline's first version needs its model to exist before it runs)."""
        with self.database.transaction() as conn:
            return repo.ensure_model(conn, validate_model_name(name), self.actor, description)

    def register(
        self,
        model: Any,
        *,
        name: str,
        sample: Any = None,
        metrics: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str = "",
        purpose: str = "",
        features: Iterable[str] | None = None,
        training_data: Any = None,
        threshold: float | None = None,
        signature: Signature | Mapping[str, Any] | None = None,
        aliases: Iterable[str] = (),
        run_id: str | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Register `model` as the next version of `name`.

        The bundle is written completely before the version becomes visible; if anything fails
        on the way, the half-written bundle, the version and (for a first registration) the
        model are removed, and the version number is handed out again.

        Args:
            model: a fitted scikit-learn estimator or pipeline, LightGBM or XGBoost model, a
                PyTorch network (a `torch.nn.Module` regressor, or `shipyard.TorchModel` naming
                a classifier's classes), an ONNX `ModelProto`, or the path of an MLflow model
                directory.
            name: the model's name, e.g. `fraud-detector`.
            sample: rows of training features (DataFrame, Arrow table, records, 2-D array). It
                fixes the input signature, must score without error, checks the ONNX fast path,
                and is the reference profile unless `training_data` is given. Optional for
                models that say what they take (an MLflow model with a signature, an ONNX
                graph, LightGBM, XGBoost); without it and without `training_data` the version
                has no reference, so its inputs are not checked for drift.
            metrics: evaluation metrics, e.g. `{"auc": 0.94}`.
            params: hyperparameters, stored as config.json.
            tags: free-form labels.
            description: what the model is.
            purpose: what the model is for (the business decision it drives).
            features: the features the model uses (default: the signature's columns).
            training_data: the training set (a frame or a path) to fingerprint and profile.
            threshold: score at or above which a binary classifier answers the positive class
                (default 0.5).
            signature: an explicit signature instead of inferring one from `sample`.
            aliases: aliases to point at the new version once it is registered.
            run_id: the tracking run that trained the model (default: the run a
                `with shipyard.start_run(...)` block around this call opened).
            lineage: where the version comes from, e.g. `{"parent": 3, "trigger": {...}}`.
        """
        validate_model_name(name)
        alias_list = [validate_alias(a) for a in aliases]
        sig, example = self._inputs(model, sample, signature)
        # what proves the model scores and checks the ONNX fast path: the caller's sample, else
        # the artifact's own example, else neutral rows of its signature
        scoring = sample if sample is not None else example
        if scoring is None:
            scoring = sig.placeholder_rows()
        checked = sig.validate_frame(_head(scoring, SAMPLE_ROWS_CHECKED))
        threshold = _threshold(threshold)
        self.clean_up_abandoned()

        claim = _claim()
        with self.database.transaction() as conn:
            repo.ensure_model(conn, name, self.actor, description)
            version = repo.allocate_version(conn, name)
            repo.insert_pending_version(conn, name, version, self.actor, claim)

        prefix = bundle_prefix(name, version)
        try:
            record = self._write_bundle(
                model,
                name,
                version,
                sig,
                checked,
                sample,
                training_data,
                prefix,
                metrics=dict(metrics or {}),
                params=dict(params or {}),
                tags=dict(tags or {}),
                description=description,
                purpose=purpose,
                threshold=threshold,
                features=list(features) if features is not None else sig.names,
            )
            run = active_run()
            record["run_id"] = run_id or (run.id if run is not None else None)
            record["lineage"] = dict(lineage) if lineage is not None else None
            with self.database.transaction() as conn:
                repo.finalise_version(conn, name, version, record)
                repo.add_audit(
                    conn,
                    self.actor,
                    "version.registered",
                    name,
                    version,
                    {
                        "flavour": record["flavour"],
                        "runtime": record["runtime"],
                        "metrics": record["metrics"],
                        "data_fingerprint": record["data_fingerprint"],
                        "run": record["run_id"],
                        "lineage": record["lineage"],
                    },
                )
                for alias in alias_list:
                    self._move_alias(conn, name, alias, version)
            if run is not None and run_id in (None, run.id):
                run.set_tag("registered", f"{name}:{version}")
        except BaseException:
            try:
                self._discard(name, version)
            except Exception as cleanup:  # the store that failed the write may fail this too:
                # the user is told why the registration failed, not why its clean-up did
                log.warning(
                    "could not remove the failed registration %s:%s: %s", name, version, cleanup
                )
            raise
        if (
            run is not None
            and run_id in (None, run.id)
            and training_data is not None
            and "train" not in run.datasets()
        ):  # the run keeps the training set as a data version, to make the model again from
            run.log_dataset("train", training_data)
        return self.database.read(lambda conn: self._version(conn, name, version)[0])

    def _inputs(
        self, model: Any, sample: Any, signature: Signature | Mapping[str, Any] | None
    ) -> tuple[Signature, Any]:
        """The signature (given, inferred from the sample, or the one the artifact declares)
        and the artifact's example rows, if it carries some."""
        described = described_inputs(model) if sample is None else None
        example = described[1] if described is not None else None
        if isinstance(signature, Signature):
            return signature, example
        if signature is not None:
            return Signature.from_dict(signature), example
        if sample is not None:
            return Signature.infer(sample), example
        if described is not None:
            return described
        raise InvalidInput(
            f"this {detect_flavour(model).name} model does not say which inputs it takes, so "
            "register() needs sample=: a few rows of the training features (they fix the input "
            "signature, prove the model scores and check the ONNX fast path). MLflow models with "
            "a signature, ONNX graphs and LightGBM/XGBoost models need none"
        )

    def _write_bundle(
        self,
        model: Any,
        name: str,
        version: int,
        sig: Signature,
        checked: Any,
        sample: Any,
        training_data: Any,
        prefix: str,
        **fields: Any,
    ) -> dict[str, Any]:
        data_for_profile = (
            training_data
            if training_data is not None and not isinstance(training_data, str | Path)
            else sample
        )
        if self.scratch_dir is not None:
            self.scratch_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(
            tempfile.mkdtemp(prefix=f"shipyard-bundle-{os.getpid()}-", dir=self.scratch_dir)
        )
        try:
            packaged = package(model, sig, checked, folder / "model")
            task = packaged.info.task
            if task != "binary" and fields["threshold"] is not None:
                raise InvalidInput(
                    f"threshold={fields['threshold']} applies to binary classifiers, and "
                    f"{name} is a {task} model ({'it answers one value per row' if task == 'regression' else 'it answers the most likely class'}); "
                    "register it without threshold"
                )
            if task == "binary" and fields["threshold"] is None:
                fields["threshold"] = 0.5
            if packaged.onnx is not None:
                (folder / "model.onnx").write_bytes(packaged.onnx)
            write_json(folder / "config.json", fields["params"])
            (folder / "requirements.txt").write_text("\n".join(packaged.requirements) + "\n")
            if data_for_profile is not None:  # no data, no reference: drift is not checked
                write_json(
                    folder / "reference" / "profile.json",
                    profile(_head(data_for_profile, PROFILE_ROWS), sig),
                )
                # rows for drift tests against live traffic (a profile cannot give a KS test)
                pq.write_table(
                    reference_sample(data_for_profile, sig, REFERENCE_ROWS),
                    folder / "reference" / "sample.parquet",
                    compression="zstd",
                )
            importance = self._importance(folder, packaged, sig, f"{name}:{version}")
            seen = training_data if training_data is not None else sample
            data_fp = fingerprint(seen) if seen is not None else None
            created_at = utcnow()
            metadata = {
                "format": 1,
                "shipyard_version": __version__,
                "name": name,
                "version": version,
                "created_at": created_at.isoformat(),
                "creator": self.actor,
                "signature": sig.to_dict(),
                "data_fingerprint": data_fp,
                "model": packaged.info.to_dict(),
                "runtime": packaged.runtime,
                "onnx": packaged.onnx_report,
                **fields,
            }
            write_metadata(folder, metadata)
            metadata_sha, size = upload_bundle(self.artifacts, folder, prefix)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {
            "created_at": created_at,
            "description": fields["description"],
            "purpose": fields["purpose"],
            "flavour": packaged.info.flavour,
            "runtime": packaged.runtime,
            "task": packaged.info.task,
            "threshold": fields["threshold"] if packaged.info.task == "binary" else None,
            "signature": sig.to_dict(),
            "metrics": fields["metrics"],
            "params": fields["params"],
            "tags": fields["tags"],
            "features": fields["features"],
            "data_fingerprint": data_fp,
            "bundle_path": prefix,
            "metadata_sha256": metadata_sha,
            "size_bytes": size,
            "importance": importance,
        }

    def _importance(
        self, folder: Path, packaged: Packaged, sig: Signature, what: str
    ) -> dict[str, Any] | None:
        """What the version relies on: mean |contribution| per feature over its reference rows,
        explained as serving explains them (from the bundle as written). A version without
        reference rows, or one whose explanation fails, is registered without (and says why
        in the log): registering does not depend on it."""
        if not (folder / "reference" / "sample.parquet").exists():
            return None
        try:
            predictor = load_predictor(
                folder / "model", packaged.info, packaged.runtime, packaged.onnx
            )
            bundle = LoadedBundle({"model": packaged.info.to_dict()}, folder, predictor)
            reference = bundle.reference(sig, IMPORTANCE_ROWS)
            if reference is None:
                return None
            return global_importance(
                bundle.explainer(sig, what), reference, rows=IMPORTANCE_ROWS, budget=1.0
            )
        except Exception as error:  # the model's own code, mixed reference rows: never fatal
            log.warning("%s is registered without feature importance: %s", what, error)
            return None

    # -- what failed or killed registrations leave ------------------------------------------

    def clean_up_abandoned(self, *, now: datetime | None = None) -> list[str]:
        """Remove what registrations that never finished left behind; returns the versions
        removed (`name:version`). Runs at every registration and when a server starts."""
        moment = now or utcnow()
        removed = []
        for name, version, started, claim in self.database.read(repo.pending_versions):
            if _abandoned(claim, moment - started) and self._take_over(name, version, moment):
                self._discard(name, version, abandoned=claim)
                removed.append(f"{name}:{version}")
        self._remove_dead_scratch()
        return removed

    def _take_over(self, name: str, version: int, moment: datetime) -> bool:
        """Claim an abandoned pending version for its clean-up, checking again under a lock:
        another process may have cleaned it up since, and a new registration taken its number."""
        with self.database.transaction() as conn:
            found = repo.pending_version(conn, name, version)
            if found is None or not _abandoned(found[1], moment - found[0]):
                return False
            repo.set_claim(conn, name, version, {**_claim(), "cleaning_up": found[1]})
        return True

    def _discard(self, name: str, version: int, abandoned: dict[str, Any] | None = None) -> None:
        """Remove a version that never became visible, its bundle files, and a model left empty.

        The files go while the number is still taken (no new registration can write under the
        same prefix); only then is the number handed out again.
        """
        self.artifacts.delete_tree(bundle_prefix(name, version))
        with self.database.transaction() as conn:
            repo.delete_version(conn, name, version)
            repo.release_version_number(conn, name, version)
            model_removed = repo.delete_model_if_empty(conn, name)
            if abandoned is not None:
                repo.add_audit(
                    conn, self.actor, "version.abandoned", name, version,
                    {"registration": abandoned, "model_removed": model_removed},
                )  # fmt: skip

    def _remove_dead_scratch(self) -> None:
        folder = self.scratch_dir or Path(tempfile.gettempdir())
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            match = _SCRATCH.match(path.name)
            if match and path.is_dir() and not pid_alive(int(match.group(1))):
                shutil.rmtree(path, ignore_errors=True)


def _claim() -> dict[str, Any]:
    """Which process answers for a pending version: this one."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": utcnow().isoformat()}


def _abandoned(claim: dict[str, Any], age: timedelta) -> bool:
    pid = claim.get("pid")
    if claim.get("host") == socket.gethostname() and isinstance(pid, int):
        return not pid_alive(pid) or age > ABANDONED_AFTER
    return age > ABANDONED_AFTER


def _head(data: Any, rows: int) -> Any:
    if hasattr(data, "iloc"):
        return data.iloc[:rows]
    if hasattr(data, "slice") and hasattr(data, "schema"):
        return data.slice(0, rows)
    if isinstance(data, list):
        return data[:rows]
    if hasattr(data, "shape"):
        return data[:rows]
    return data


def _threshold(value: float | None) -> float | None:
    if value is None:
        return None  # 0.5 for a binary classifier; other tasks have none
    if not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(f"threshold must be between 0 and 1, got {value}")
    return float(value)
