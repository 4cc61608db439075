"""Dagster run config derived from the core's config dataclasses, so a hyper-parameter is declared once.

``relevance_core`` declares every knob, with its default and its meaning, in a frozen dataclass
(``TwoTowerConfig``, ``SessionConfig``, ``PairsConfig``, ``RankerConfig``, ``StageConfig``). An asset's
``dg.Config`` is generated from it: every field settable from the launchpad, no default written twice.
Dagster's config types cannot say "an int or a string" (``devices``: ``2`` or ``"auto"``), so such a field
is text in run config and turned back into a number when it is one; "a count or a fraction" is the count.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
from pydantic import Field


def _run_config_type(t: Any) -> Any:
    """The Dagster-expressible type for a core field's type."""
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        optional = len(kinds) < len(args)
        if len(kinds) == 1:
            base = kinds[0]
        elif str in kinds:  # "auto" or a number: text, read back as a number when it is one
            base = str
        else:  # a count or a fraction (``limit_train_batches``): the count
            base = int if int in kinds else kinds[0]
        return base | None if optional else base
    return t


def core_fields(
    core: type,
    *,
    prefix: str = "",
    only: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, tuple[Any, Any]]:
    """``{run config field: (type, pydantic Field)}`` for the fields of the dataclass ``core`` (``only``
    some of them; names prefixed with ``prefix``; ``defaults`` replacing the core's for Dagster runs)."""
    hints = typing.get_type_hints(core)
    wanted = set(only) if only is not None else None
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(core):
        if wanted is not None and f.name not in wanted:
            continue
        if defaults and f.name in defaults:
            spec = Field(default=defaults[f.name])
        elif f.default is not dataclasses.MISSING:
            spec = Field(default=f.default)
        else:
            spec = Field(default_factory=f.default_factory)
        out[prefix + f.name] = (_run_config_type(hints[f.name]), spec)
    return out


def build_config(name: str, doc: str, fields: Mapping[str, tuple[Any, Any]]) -> type[dg.Config]:
    """A ``dg.Config`` class with ``fields`` (from :func:`core_fields`, several cores may be combined)."""
    namespace: dict[str, Any] = {"__doc__": doc, "__annotations__": {}, "__module__": __name__}
    for field_name, (typ, spec) in fields.items():
        namespace["__annotations__"][field_name] = typ
        namespace[field_name] = spec
    return types.new_class(name, (dg.Config,), {}, lambda ns: ns.update(namespace))


def to_core(config: dg.Config, core: type, *, prefix: str = "", **extra: Any) -> Any:
    """The core dataclass from the run config fields named ``prefix + field`` (text back to numbers where
    the core field takes them); ``extra`` fills fields the run config does not carry."""
    hints = typing.get_type_hints(core)
    values = config.model_dump()
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(core):
        key = prefix + f.name
        if key not in values:
            continue
        kwargs[f.name] = _from_text(values[key], hints[f.name])
    kwargs.update(extra)
    return core(**kwargs)


def _from_text(value: Any, t: Any) -> Any:
    if not isinstance(value, str):
        return value
    args = typing.get_args(t)
    if int in args and value.strip().lstrip("-").isdigit():
        return int(value)
    if float in args:
        try:
            return float(value)
        except ValueError:
            return value
    return value
