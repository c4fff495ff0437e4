"""The exceptions Cadence raises. A leaf: imports nothing else from cadence.

Every message says what is wrong, where, the value received, what is allowed and the fix.
"""

from __future__ import annotations


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
