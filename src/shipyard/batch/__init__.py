"""Batch scoring: every row of a file, folder or SQL source scored by one registered version,
written atomically, resumable after a crash, and logged for monitoring in columnar blocks.

    >>> import shipyard.batch
    >>> shipyard.batch.score("fraud-detector", "transactions.parquet", "scores.parquet")
"""

from __future__ import annotations

from shipyard.batch._inputs import FileInput, Input, SqlInput, open_input
from shipyard.batch._job import DEFAULT_CHUNK_ROWS, BatchResult, Progress, row_ids, score
from shipyard.batch._outputs import FileOutput, Output, TableOutput, open_output
from shipyard.batch._schedule import BatchJobSpec, due_slot, load_batch_jobs

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "BatchJobSpec",
    "BatchResult",
    "FileInput",
    "FileOutput",
    "Input",
    "Output",
    "Progress",
    "SqlInput",
    "TableOutput",
    "due_slot",
    "load_batch_jobs",
    "open_input",
    "open_output",
    "row_ids",
    "score",
]
