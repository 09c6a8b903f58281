"""Tables from CSV and Parquet files, with one clear error for a file that is not one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidInput

__all__ = ["read_table_file"]


def read_table_file(path: Path, kind: str) -> Any:
    """A pandas DataFrame from `path`, a `csv` or `parquet` file.

    Raises:
        InvalidInput: naming the file and where it stopped making sense (pandas' and
            pyarrow's parse errors are ValueError or OSError subclasses).
    """
    import pandas as pd

    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except (ValueError, OSError) as error:
        what = "CSV" if kind == "csv" else "Parquet"
        raise InvalidInput(f"{path} is not a readable {what} file: {error}") from None
