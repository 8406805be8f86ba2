"""Data sources, one module per published format; each returns a ``SourceData``.

``load_source(name, path, **options)`` dispatches by name so the command line and configs
can name a format: synthetic, movielens, amazon, frappe, frappe-splits, criteo, events,
synthetic-ctr.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib
import inspect
import typing
from typing import Any, Callable

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


def loader(name: str) -> Callable[..., SourceData]:
    """The named source's ``load_*`` function; an unknown name is a ValueError naming the nearest."""
    if name not in SOURCES:
        close = difflib.get_close_matches(name, list(SOURCES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown source '{name}' (known: {', '.join(SOURCES)}){hint}")
    module, function = SOURCES[name].split(":")
    return getattr(importlib.import_module(module), function)


def source_options(name: str) -> dict[str, tuple[Any, Any]]:
    """The options a source takes (``-o key=value``): name -> (type, default).

    A loader's keyword parameters after the path; synthetic-ctr takes the fields of its
    SyntheticCTRConfig.
    """
    function = loader(name)
    hints = typing.get_type_hints(function)
    options: dict[str, tuple[Any, Any]] = {}
    for position, (key, parameter) in enumerate(inspect.signature(function).parameters.items()):
        if position == 0 or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        options[key] = (hints.get(key, Any), parameter.default)
    if name == "synthetic-ctr":
        from terarec.data.sources.synthetic_ctr import SyntheticCTRConfig

        config_hints = typing.get_type_hints(SyntheticCTRConfig)
        for config_field in dataclasses.fields(SyntheticCTRConfig):
            default = (config_field.default_factory() if config_field.default is dataclasses.MISSING
                       else config_field.default)
            options[config_field.name] = (config_hints[config_field.name], default)
    return options


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the source's own: an unknown key names the nearest valid one,
    a value of the wrong type names the option and the type expected, and a single column
    name where a list of columns is expected becomes that list (``-o sparse=country``).
    """
    from terarec.config import ConfigError, from_dict

    known = source_options(name)
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"source '{name}' has no option '{key}'{hint} (its options: {', '.join(known)})")
    fields, values = [], {}
    for key, value in options.items():
        annotation, _ = known[key]
        if typing.get_origin(annotation) is collections.abc.Sequence:
            annotation = list[typing.get_args(annotation) or Any]
            value = [value] if isinstance(value, str) else value
        fields.append((key, annotation))
        values[key] = value
    checked = from_dict(dataclasses.make_dataclass("Options", fields), values, f"-o {name}")
    return {key: getattr(checked, key) for key in values}


def load_source(name: str, path: str, **options: Any) -> SourceData:
    """Read ``path`` with the named source's loader (options are that loader's keywords, checked)."""
    return loader(name)(path, **check_options(name, options))
