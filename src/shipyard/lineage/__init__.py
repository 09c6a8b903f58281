"""Lineage: the data versions registered models were trained on, how they differ, and making a
past version again (`shipyard data`, `shipyard reproduce`, `shipyard models card`)."""

from __future__ import annotations

from shipyard.lineage._card import CardText, ModelCard, card_text_of, model_card
from shipyard.lineage._card_render import render_html, render_markdown
from shipyard.lineage._data import DataDiff, DataUse, data_uses, diff_data, resolve_data
from shipyard.lineage._reproduce import Reproduction, reproduce, reproduction_gaps

__all__ = [
    "CardText",
    "DataDiff",
    "DataUse",
    "ModelCard",
    "Reproduction",
    "card_text_of",
    "data_uses",
    "diff_data",
    "model_card",
    "render_html",
    "render_markdown",
    "reproduce",
    "reproduction_gaps",
    "resolve_data",
]
