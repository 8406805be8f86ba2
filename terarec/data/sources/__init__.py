"""Data sources, one module per published format; each returns a ``SourceData``.

``load_source(name, path, **options)`` dispatches by name so the command line and configs
can name a format: synthetic, movielens, amazon, frappe, frappe-splits, criteo, events,
synthetic-ctr.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from terarec.data.sources.base import SourceData

SOURCES: dict[str, str] = {
    "movielens": "terarec.data.sources.movielens:load_movielens",
    "amazon": "terarec.data.sources.amazon:load_amazon",
    "frappe": "terarec.data.sources.frappe:load_frappe",
    "frappe-splits": "terarec.data.sources.frappe:load_frappe_splits",
    "criteo": "terarec.data.sources.criteo:load_criteo",
    "events": "terarec.data.sources.events:load_events",
    "synthetic-ctr": "terarec.data.sources.synthetic_ctr:load_synthetic_ctr",
}


def load_source(name: str, path: str, **options: Any) -> SourceData:
    """Read ``path`` with the named source's loader (options are that loader's keywords)."""
    if name not in SOURCES:
        close = difflib.get_close_matches(name, list(SOURCES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown source '{name}' (known: {', '.join(SOURCES)}){hint}")
    module, function = SOURCES[name].split(":")
    return getattr(importlib.import_module(module), function)(path, **options)
