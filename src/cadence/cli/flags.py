"""Command-line flags generated from RunConfig: every config key is a flag whose name, help, default, range
and choices come from config.py (config_keys), plus `--set KEY=VALUE` for any dotted key.

`config_options()` adds them to any typer command. typer builds options from a function's signature, so the
decorator gives the command a signature with one keyword per key (public typer API, no click internals) and
hands the command the values given as one dict of dotted keys.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import annotated_types
import typer
import yaml
from rich.markup import escape

from cadence.config_keys import Key, config_keys, short_names

F = TypeVar("F", bound=Callable[..., Any])

# The flags typed most often get a short form too.
SHORT_FLAGS = {
    "data.name": "-d",
    "model.spec": "-m",
    "strategy.name": "-s",
    "strategy.batch_size": "-b",
    "stop.max_epochs": "-e",
}
_PARAM = "cfg__"  # keyword prefix of generated parameters; the rest is the dotted key with "." -> "__"
_SET_HELP = (
    "any config key, dotted or short (optimizer.betas=[0.9,0.99], schedule.plateau.patience=3, "
    "stop.max_epochs=null); values are read as YAML. Repeatable."
)


def flag_names(key: Key) -> list[str]:
    """`--batch-size` (and aliases such as `--epochs`) for a key: lower case, dashes for underscores."""
    names = [f"--{n.lower().replace('_', '-')}" for n in (key.name, *key.aliases)]
    return list(dict.fromkeys(names))  # T_max and its alias t_max are one flag


def config_options(exclude: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator: add one option per RunConfig key, and `--set KEY=VALUE`, to a typer command function.

    The function takes a parameter `overrides: dict[str, Any]` in place of them: the dotted keys given on
    the command line (flags and --set alike), ready for `RunConfig.with_overrides`. Its other parameters
    stay as they are. Use it under `@app.command()`.

    Args:
        exclude: dotted keys or sections ("optimizer", "stop.max_epochs") the command sets itself: no flag
            is made for them, and --set refuses them.
    """
    keys = [k for k in config_keys() if not _excluded(k.dotted, exclude)]

    def decorate(command: F) -> F:
        own = inspect.signature(command, eval_str=True).parameters
        if "overrides" not in own:
            raise TypeError(f"{command.__name__} needs an `overrides` parameter to receive the config flags")
        taken = {name for p in own.values() for name in _declared_flags(p)}
        params = [p for name, p in own.items() if name != "overrides"]
        dotted_of: dict[str, str] = {}  # generated parameter -> its dotted key
        for key in keys:
            names = [n for n in flag_names(key) if n not in taken]  # a command's own flag wins
            for i, flag in enumerate(names):  # the first is shown; aliases are hidden, named in its help
                param = _parameter(key, flag, aliases=names[1:] if i == 0 else None)
                dotted_of[param.name] = key.dotted
                params.append(param)
        params.append(
            inspect.Parameter(
                "set_values",
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help=_SET_HELP)],
            )
        )

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given: dict[str, Any] = {}
            for name, dotted in dotted_of.items():
                value = kwargs.pop(name)
                if value is None:
                    continue
                if dotted in given:
                    raise typer.BadParameter(f"{dotted} given twice (a flag and its alias); keep one.")
                given[dotted] = _plain(value)
            sets = parse_sets(kwargs.pop("set_values") or [], exclude)
            twice = sorted(set(given) & set(sets))
            if twice:
                raise typer.BadParameter(
                    f"{', '.join(twice)} given by a flag and by --set; keep one.", param_hint="--set"
                )
            return command(**kwargs, overrides={**given, **sets})

        wrapper.__signature__ = inspect.Signature(params)  # what typer reads
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


def with_default(text: str, default: object) -> str:
    """Help text ending in `[default: ...]`, escaped for typer's rich markup (which would eat the brackets);
    for options whose own default (None: "not given") is not the value used."""
    return escape(f"{text} [default: {default}]")


def parse_sets(items: Sequence[str], exclude: Sequence[str] = ()) -> dict[str, Any]:
    """{dotted key: value} from `KEY=VALUE` strings; the key dotted or short, the value read as YAML
    (strings stay strings where the key holds text, so `data.name=007` is not the number 7).

    Raises:
        typer.BadParameter: no `=`, an unknown short name, or a key the command sets itself.
    """
    names = short_names()
    by_key = {k.dotted: k for k in config_keys()}
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE (e.g. optimizer.lr=0.1).", param_hint="--set")
        if "." not in key and key not in names and key not in by_key:
            raise typer.BadParameter(
                f"unknown config key {key!r}. Fix: a dotted key (optimizer.lr) or a short name (lr).",
                param_hint="--set",
            )
        dotted = key if key in by_key or "." in key else names[key]
        if _excluded(dotted, exclude):
            raise typer.BadParameter(f"{dotted} is set by this command itself (see --help).", param_hint="--set")
        known = by_key.get(dotted)
        out[dotted] = text if known is not None and _is_text(known.field.annotation) else _yaml_value(text)
    return out


def _parameter(key: Key, flag: str, aliases: list[str] | None) -> inspect.Parameter:
    """The keyword parameter typer turns into option `flag` for `key`: shown with its help when `aliases`
    is a list (the aliases it names), hidden when None (it is an alias)."""
    kind, parse = _flag_type(key.field.annotation)
    decls = [f"{flag}/--no-{flag[2:]}" if kind is bool else flag]
    if aliases is not None and key.dotted in SHORT_FLAGS:
        decls.append(SHORT_FLAGS[key.dotted])
    help_text = _help(key, kind, flag) + (f" (also {', '.join(aliases)})" if aliases else "")
    option = typer.Option(
        *decls,
        help=escape(help_text),
        show_default=False,  # the default is in the help: the flag's own default (None) means "not given"
        rich_help_panel=key.section.split(".")[0].capitalize() or "Run",
        parser=parse,
        metavar="LIST" if parse is not None else None,
        hidden=aliases is None,
    )
    name = (
        _PARAM
        + key.dotted.replace(".", "__")
        + ("" if aliases is not None else "__as__" + flag[2:].replace("-", "_"))
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def _flag_type(annotation: Any) -> tuple[Any, Callable[[str], Any] | None]:
    """The type typer parses a flag as, and a parser for what it cannot express (variable tuples)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    inner = args[0] if get_origin(annotation) is not Literal and len(args) == 1 else annotation
    if get_origin(inner) is tuple and Ellipsis in get_args(inner):  # regularization.exclude: "bias,norm"
        return str, lambda text: tuple(p.strip() for p in text.split(",") if p.strip())
    return inner, None


def _help(key: Key, kind: Any, flag: str) -> str:
    text = key.field.description or key.dotted
    limits = [_limit(m) for m in key.field.metadata]
    limits = [x for x in limits if x]
    if limits:
        text += f" ({', '.join(limits)})"
    if get_origin(kind) is tuple and Ellipsis in get_args(kind):
        text += "; comma-separated, empty for none"
    default = key.default
    if default is not None:
        if isinstance(default, bool):
            shown = flag[2:] if default else f"no-{flag[2:]}"
        elif isinstance(default, Enum):
            shown = default.value
        elif isinstance(default, tuple):
            shown = ",".join(map(str, default)) if kind is str else " ".join(map(str, default))
        else:
            shown = default
        text += f" [default: {shown}]"
    return text


def _limit(meta: Any) -> str | None:
    """`> 0` for pydantic's Field(gt=0) (an annotated_types bound), None for other metadata."""
    for cls, attr, sign in (
        (annotated_types.Gt, "gt", ">"),
        (annotated_types.Ge, "ge", ">="),
        (annotated_types.Lt, "lt", "<"),
        (annotated_types.Le, "le", "<="),
    ):
        if isinstance(meta, cls):
            return f"{sign} {getattr(meta, attr)}"
    return None


def _excluded(dotted: str, exclude: Sequence[str]) -> bool:
    return any(dotted == e or dotted.startswith(e + ".") for e in exclude)


def _declared_flags(param: inspect.Parameter) -> list[str]:
    """The option strings a command's own parameter declares (`--out`, `-o`)."""
    found = []
    for meta in getattr(param.annotation, "__metadata__", ()):
        for decl in getattr(meta, "param_decls", None) or ():
            found += [d for part in decl.split("/") for d in [part.strip()] if d.startswith("-")]
        default = getattr(meta, "default", None)
        if isinstance(default, str) and default.startswith("-"):  # Option("--x") keeps its first decl here
            found += [d.strip() for d in default.split("/")]
    return found or [f"--{param.name.replace('_', '-')}"]


def _is_text(annotation: Any) -> bool:
    args = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    return all(
        a in (str, Path) or get_origin(a) is Literal or (isinstance(a, type) and issubclass(a, Enum)) for a in args
    )


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not YAML: let the config check say what the key expects


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
