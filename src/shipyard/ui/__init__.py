"""The web dashboard at `/ui`: models, production monitoring, retraining, runs, live traffic
and keys, rendered by the server from the same Python APIs the CLI and `/v1` use.

`api.router(...)` holds the routes; `_views` what each page shows; `templates/` and `static/`
(uPlot from npm, shipped inside the package: no CDN) how it looks."""

from __future__ import annotations

__all__: list[str] = []
