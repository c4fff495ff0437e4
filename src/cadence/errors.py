"""The exceptions Cadence raises. A leaf: imports nothing else from cadence.

Every message says what is wrong, where, the value received, what is allowed and the fix.
"""

from __future__ import annotations

import reprlib


class CadenceError(Exception):
    """Base class of every error Cadence raises on purpose."""

    exit_code = 1


class ConfigError(CadenceError, ValueError):
    """A setting is unknown, out of range, or inconsistent with another one."""

    exit_code = 2


class DataError(CadenceError, ValueError):
    """Input data is malformed: wrong shape, labels out of range, non-finite values, missing files."""

    exit_code = 2


class CheckpointError(CadenceError):
    """No valid checkpoint could be read or written."""

    exit_code = 2


class SaveError(CadenceError):
    """A run's results could not be written (full disk, read-only folder); what was there is left intact."""


class StreamError(CadenceError):
    """A stream could not be read or acknowledged."""


class DistributedError(CadenceError):
    """A process of a data-parallel job failed, or another stopped answering (engine/distributed.py)."""

    exit_codes: dict[int, int] | None = (
        None  # rank -> exit code of each failed process, when torchrun reported them
    )


ECHO_LIMIT = 200  # characters of a user's value an error message repeats


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)` cut to at most `limit` characters, without building the whole repr of a huge value.

    Messages repeat what they received; a value built from YAML aliases can hold millions of items, and its
    full repr would be a message of megabytes.
    """
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    short.maxdict = short.maxlist = short.maxtuple = short.maxset = 8
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip_text(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to at most `limit` characters (for text quoted as is, such as a parser's message)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
