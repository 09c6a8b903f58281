"""`shipyard predict`: score records locally, without a server."""

from __future__ import annotations

import typer
from rich.table import Table

from shipyard.cli._common import console, emit_json, open_registry, read_records, settings
from shipyard.core import ModelRef
from shipyard.serving import PredictionService


def predict(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME (serving alias), NAME:VERSION or NAME:ALIAS"),
    input_path: str = typer.Option(
        ..., "--input", "-i", help="JSON file of records, or - for stdin"
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON like the HTTP API"),
) -> None:
    """Score records from a file or stdin with a registered model."""
    records = read_records(input_path)
    parsed = ModelRef.parse(ref)
    with open_registry(ctx) as registry:
        service = PredictionService(registry, settings(ctx))
        version = registry.resolve(parsed, default_alias=settings(ctx).serving_alias).version
        served = service.load(parsed.name, version)
        result = service.predict_records(served, records)
    rows = result.records()
    if as_json:
        emit_json(
            {
                "model": served.name,
                "version": served.version,
                "predictions": rows,
                "prediction_ids": result.ids,
            }
        )
        return
    table = Table(
        "#", *rows[0].keys(), title=f"{served.name}:{served.version} on {served.predictor.runtime}"
    )
    for i, row in enumerate(rows):
        table.add_row(
            str(i), *(f"{v:.6f}" if isinstance(v, float) else str(v) for v in row.values())
        )
    console.print(table)
