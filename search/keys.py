"""How a section's key is named when the sections are flattened, written once: `section/key` for Optuna's
parameters and the flat configs Tune unflattens (Tune splits on "/"), `section.key` in tables
(trials.csv's `config.section.key` columns, the report, a trial's dashboard name)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PARAM_SEP = "/"  # Tune's unflatten_dict splits a flat config on it
COLUMN_SEP = "."


def param_name(section: str, key: str) -> str:
    """The Optuna parameter (and flat Tune config key) of section.key: `section/key`."""
    return f"{section}{PARAM_SEP}{key}"


def flat_params(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """{section: {key: value}} as {`section/key`: value}."""
    return {param_name(s, k): v for s, values in sections.items() for k, v in values.items()}


def nested_params(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{`section/key`: value} as {section: {key: value}} (the inverse of `flat_params`)."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        section, key = name.split(PARAM_SEP)
        out.setdefault(section, {})[key] = value
    return out


def column_name(param: str) -> str:
    """A table's name of the parameter `section/key`: `section.key`."""
    return param.replace(PARAM_SEP, COLUMN_SEP)


def flat_columns(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {`prefix` + `section.key`: value}, at any depth."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_columns(value, f"{name}{COLUMN_SEP}"))
        else:
            out[name] = value
    return out
