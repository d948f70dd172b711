"""User-facing error types.

Every mistake a user can make (a wrong name, a card that does not validate, a missing file) raises a
subclass of :class:`FairbenchError`. The CLI prints its message as one line and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "CardError",
    "DataError",
    "FairbenchError",
    "ResultsError",
    "UnknownNameError",
    "WeightsError",
]


class FairbenchError(Exception):
    """Base class for errors caused by user input or the environment, reported without a traceback."""

    exit_code = 2


class UnknownNameError(FairbenchError, KeyError):
    """A registry lookup failed; the message lists close matches and everything registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CardError(FairbenchError):
    """A task or model card does not parse or validate; the message names the file and the field."""


class DataError(FairbenchError):
    """Dataset files are missing, unreadable or inconsistent with their card."""


class WeightsError(FairbenchError):
    """Model weights are missing or do not match the architecture."""


class ResultsError(FairbenchError):
    """A result file or output directory cannot be read or written."""
