"""The demo's last act: the retrained champion made again from its run's record, its model card
written, and the maturity level the installation has reached."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from shipyard.assess import inspect_maturity
from shipyard.core import Settings
from shipyard.lineage import model_card, render_html, reproduce
from shipyard.registry import Registry
from shipyard.tracking import Tracker

__all__ = ["GovernanceResult", "governance_act"]


@dataclass
class GovernanceResult:
    reproduced: str = ""  # identical | different | not reproducible
    differences: list[str] = field(default_factory=list)
    data_versions: int = 0
    card: Path | None = None
    maturity: int = 0
    unmet: list[str] = field(default_factory=list)


def governance_act(settings: Settings, ref: str, console: Console) -> GovernanceResult:
    """Reproduce `ref`, write its card beside the demo's state, place the installation."""
    console.print(Panel.fit(
        f"[bold]governance[/]: {ref} made again from its record, its model card, the maturity level",
        border_style="cyan",
    ))  # fmt: skip
    result = GovernanceResult()
    with Registry.from_settings(settings) as registry:
        tracker = Tracker(registry.database, registry.artifacts, actor=registry.actor)
        again = reproduce(registry, tracker, ref)
        result.reproduced, result.differences = again.verdict, again.differences
        result.data_versions = len(tracker.data.list_versions())
        console.print(
            f"  reproduce {ref}: [bold]{again.verdict}[/] on its {again.rows:,} "
            f"{again.compared_on} rows (data versions {', '.join(s[:12] for s in again.data.values())})"
        )
        card = model_card(registry, tracker, ref, project=settings.config)
        result.card = settings.home / "model-card.html"
        result.card.write_text(render_html(card))
        console.print(f"  model card: {result.card}")
        maturity = inspect_maturity(registry, settings.config)
    result.maturity = maturity.level
    result.unmet = [c.id for c in maturity.criteria if not c.met]
    console.print(
        f"  maturity: [bold]level {maturity.level}[/] ({maturity.name}); "
        + ("every criterion evidenced" if not result.unmet else f"unmet: {', '.join(result.unmet)}")
    )
    return result
