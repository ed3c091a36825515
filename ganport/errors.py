"""Exceptions shared by every part of ganport.

Every error a user can cause is a :class:`GanportError` carrying a one-line message that names the
problem and, where there is one, a hint saying how to fix it. The CLI prints ``error: message
(hint)`` and exits non-zero; the gRPC server maps the subclasses to status codes.
"""

from __future__ import annotations


class GanportError(Exception):
    """Base class for errors caused by input, files or environment.

    Args:
        message: what is wrong, naming the offending value or file.
        hint: how to fix it (valid choices, the command to run), or None.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidInputError(GanportError, ValueError):
    """A request argument is invalid (bad label, shape, NaN latent, unknown character...)."""


class ModelNotFoundError(GanportError, LookupError):
    """A model name or package path does not exist."""


class CheckpointError(GanportError):
    """A checkpoint is missing, truncated, foreign or of an unsupported version."""


class DatasetError(GanportError):
    """A data set name is unknown or its files are missing or malformed."""


class SplitNotFoundError(DatasetError):
    """The files of a requested split are absent (not present-but-malformed): the one data error
    after which a held-out part of the training split may stand in for the test split."""


class ExportError(GanportError):
    """Export failed or an exported artifact did not match the eager model."""


class PackageError(GanportError):
    """A model package (directory or file) is missing or malformed."""


class BackendUnavailableError(GanportError):
    """A backend or device was requested that this installation cannot provide."""


class MissingExtraError(GanportError, ImportError):
    """Code was used whose dependencies (an extra of ``pip install 'ganport[...]'``) are not installed."""


class ResourceExhaustedError(GanportError):
    """A queue or size limit was reached; retry later or send a smaller request."""
