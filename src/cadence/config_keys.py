"""Short names of the config keys, derived from config.py's fields: the train() keywords and CLI flags
(`lr`, `batch_size` / `--batch-size`) in one table. Imports only cadence.config.

A leaf field is named by its own name, a section's `name` field by the section (`optimizer`), the fields of
_PREFIXES' sections with a prefix (`plateau_patience`), and the few in _NAMES otherwise; ALIASES keep older
spellings working. A new config field gets its name with no edit here, unless it collides (then config_keys
raises, and the field needs an entry in _NAMES).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cadence.config import RunConfig

_PREFIXES = {
    "schedule.plateau": "plateau_",
    "eval": "eval_",
    "stream": "stream_",
    "stream.drift": "drift_",
    "distributed": "dist_",
}
_NAMES = {
    "model.spec": "model",
    "schedule.per": "schedule_per",
    "ensemble.members": "ensemble",
    "regularization.exclude": "regularization_exclude",
}
ALIASES = {
    "epochs": "stop.max_epochs",
    "early_stopping": "stop.early_stopping_metric",
    "patience": "stop.early_stopping_patience",
    "eval_every": "eval.every_updates",
    "t_max": "schedule.T_max",
    "t_0": "schedule.T_0",
    "t_mult": "schedule.T_mult",
}


@dataclass(frozen=True)
class Key:
    """One leaf setting of RunConfig: its dotted key, short name, aliases and pydantic field."""

    dotted: str  # "optimizer.lr"
    name: str  # "lr"
    aliases: tuple[str, ...]
    section: str  # "optimizer"; "" at the top level
    field: FieldInfo
    default: Any  # RunConfig()'s value (None where the default is chosen at run time)


@cache
def config_keys() -> tuple[Key, ...]:
    """Every leaf of RunConfig in declaration order, with its short name.

    Raises:
        RuntimeError: two keys derive the same short name (a new field needs an entry in _NAMES).
    """
    keys: list[Key] = []
    aliases: dict[str, list[str]] = {}
    for alias, dotted in ALIASES.items():
        aliases.setdefault(dotted, []).append(alias)

    def walk(model: type[BaseModel], defaults: BaseModel | None, prefix: str) -> None:
        for field_name, field in model.model_fields.items():
            dotted = prefix + field_name
            section = prefix[:-1]
            value = getattr(defaults, field_name, None) if defaults is not None else field.get_default()
            sub = _section_model(field.annotation)
            if sub is not None:
                walk(sub, value, dotted + ".")
                continue
            name = _NAMES.get(dotted) or (
                section.rsplit(".", 1)[-1] if field_name == "name" else _PREFIXES.get(section, "") + field_name
            )
            keys.append(Key(dotted, name, tuple(aliases.get(dotted, ())), section, field, value))

    walk(RunConfig, RunConfig(), "")
    seen: dict[str, str] = {}
    for key in keys:
        for name in (key.name, *key.aliases):
            if seen.setdefault(name.lower(), key.dotted) != key.dotted:
                raise RuntimeError(
                    f"config keys {seen[name.lower()]} and {key.dotted} are both named {name!r}. "
                    "Fix: give one of them its own name in cadence/config_keys.py _NAMES."
                )
    return tuple(keys)


def short_names() -> dict[str, str]:
    """{short name or alias: dotted key}, e.g. {"lr": "optimizer.lr", "epochs": "stop.max_epochs", ...}."""
    return {name: key.dotted for key in config_keys() for name in (key.name, *key.aliases)}


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (`PlateauConfig | None` -> PlateauConfig), or None for a leaf."""
    for t in get_args(annotation) or (annotation,):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None
