"""`shipyard predict`: score records locally, without a server, from and to JSON, CSV or Parquet."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from shipyard.cli._common import (
    TABLE_SUFFIXES,
    console,
    emit_json,
    err_console,
    json_flag,
    open_registry,
    read_records,
    read_table,
    settings,
)
from shipyard.core import ModelRef
from shipyard.core.errors import InvalidInput
from shipyard.serving import PredictionService

OUTPUT_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".pq")
TABLE_ROWS_SHOWN = 50


def predict(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME (serving alias), NAME:VERSION or NAME:ALIAS"),
    input_path: str = typer.Option(
        ...,
        "--input",
        "-i",
        help="records to score: a .json/.jsonl file, a .csv or .parquet table, or - for JSON on stdin",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="write the predictions to this .json, .jsonl, .csv or .parquet file (one row per "
        "input row, in order, with its prediction_id)",
    ),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="also explain each prediction: every feature's contribution and the base value, "
        "adding up to the model's output (the method and its space are named)",
    ),
    as_json: bool = json_flag("the predictions, in the shape /v1/models/NAME/predict answers,"),
) -> None:
    """Score records from a file or stdin with a registered model.

    Any number of rows: they are scored in batches of SHIPYARD_MAX_BATCH_RECORDS.
    """
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InvalidInput(
            f"cannot write {output.name}: name the output .json, .jsonl, .csv or .parquet"
        )
    rows = _read(input_path)
    parsed = ModelRef.parse(ref)
    config = settings(ctx)
    with open_registry(ctx) as registry:
        service = PredictionService(registry, config)
        version = registry.resolve(parsed, default_alias=config.serving_alias).version
        served = service.load(parsed.name, version)
        predictions: list[dict[str, Any]] = []
        ids: list[str] = []
        step = config.max_batch_records
        for start in range(0, max(len(rows), 1), step):
            chunk = rows[start : start + step]
            columns = (
                served.signature.validate_records(chunk)
                if isinstance(chunk, list)
                else served.signature.validate_frame(chunk)
            )
            result = service.score_now(served, columns, len(chunk))
            if explain:
                result = replace(result, explanation=service.explain_now(served, columns))
            predictions.extend(result.records())
            ids.extend(result.ids)
        runtime = served.predictor.runtime
    answer = {
        "model": served.name,
        "version": served.version,
        "predictions": predictions,
        "prediction_ids": ids,
    }
    if output is not None:
        _write(output, answer)
        err_console.print(
            f"wrote {len(ids)} prediction(s) of {served.name}:{served.version} to {output}",
            highlight=False,
        )
    if as_json:
        emit_json(answer)
    elif output is None:
        _print_table(f"{served.name}:{served.version} on {runtime}", predictions)
        if explain:
            _print_explanations(predictions)


def _read(source: str) -> Any:
    """A list of records (JSON) or a DataFrame (CSV, Parquet), by the file's suffix."""
    if source != "-" and Path(source).suffix.lower() in TABLE_SUFFIXES:
        frame = read_table(Path(source))
        if frame.empty:
            raise InvalidInput(f"{source} has no rows to score")
        return frame
    return read_records(source)


def _flat(prediction: dict[str, Any]) -> dict[str, Any]:
    """One table row: a multiclass prediction's probabilities become probability_<class>; an
    explanation becomes explanation_method, explanation_space, base_value, contribution_<feature>
    (and contribution_error_<feature> for a sampled one)."""
    row = {k: v for k, v in prediction.items() if not isinstance(v, dict)}
    for key, value in prediction.items():
        if key == "explanation":
            row.update(
                {
                    "explanation_method": value["method"],
                    "explanation_space": value["space"],
                    "base_value": value["base"],
                }
            )
            row.update({f"contribution_{n}": v for n, v in value["contributions"].items()})
            row.update({f"contribution_error_{n}": v for n, v in value.get("error", {}).items()})
        elif isinstance(value, dict):
            prefix = "probability" if key == "probabilities" else key
            row.update({f"{prefix}_{name}": v for name, v in value.items()})
    return row


def _write(path: Path, answer: dict[str, Any]) -> None:
    import orjson

    suffix = path.suffix.lower()
    rows = [
        {"prediction_id": pid, **prediction}
        for pid, prediction in zip(answer["prediction_ids"], answer["predictions"], strict=True)
    ]
    try:
        if suffix == ".json":
            path.write_bytes(orjson.dumps(answer, option=orjson.OPT_INDENT_2))
        elif suffix == ".jsonl":
            path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        else:
            import pandas as pd

            frame = pd.DataFrame.from_records([_flat(row) for row in rows])
            if suffix == ".csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
    except OSError as error:
        raise InvalidInput(f"cannot write {path}: {error.strerror or error}") from None


def _print_table(title: str, predictions: list[dict[str, Any]]) -> None:
    shown = [
        _flat({k: v for k, v in p.items() if k != "explanation"})
        for p in predictions[:TABLE_ROWS_SHOWN]
    ]
    table = Table("#", *shown[0].keys(), title=title)
    for i, row in enumerate(shown):
        table.add_row(
            str(i), *(f"{v:.6f}" if isinstance(v, float) else str(v) for v in row.values())
        )
    console.print(table)
    if len(predictions) > TABLE_ROWS_SHOWN:
        console.print(
            f"... and {len(predictions) - TABLE_ROWS_SHOWN} more; --output FILE keeps them all",
            highlight=False,
        )


EXPLAINED_SHOWN = 10  # rows whose explanation the terminal shows
CONTRIBUTIONS_SHOWN = 5  # largest contributions shown per row


def _print_explanations(predictions: list[dict[str, Any]]) -> None:
    first = predictions[0]["explanation"]
    table = Table(
        "#",
        "output",
        "base",
        f"largest contributions ({first['space']}, {first['method']})",
        title="why",
    )
    for i, prediction in enumerate(predictions[:EXPLAINED_SHOWN]):
        explained = prediction["explanation"]
        largest = sorted(explained["contributions"].items(), key=lambda kv: -abs(kv[1]))
        errors = explained.get("error", {})
        parts = [
            f"{name} {value:+.4f}" + (f" ±{errors[name]:.4f}" if name in errors else "")
            for name, value in largest[:CONTRIBUTIONS_SHOWN]
        ]
        table.add_row(
            str(i), f"{explained['output']:.4f}", f"{explained['base']:.4f}", ", ".join(parts)
        )
    console.print(table)
