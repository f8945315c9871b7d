"""Errors a user can act on.

Anything raised as a :class:`VideoVLMError` is the user's to fix (a missing file, a model that is
not downloaded, a bad option): the CLI prints its message as one line and exits with
``exit_code``; it never shows a traceback for these. Everything else is a bug in videovlm.
"""

from __future__ import annotations


class VideoVLMError(Exception):
    """A problem with the user's input or environment, described in one actionable line."""

    exit_code = 2


class InputError(VideoVLMError):
    """The input file is missing, not a video, or not decodable."""


class BackendError(VideoVLMError):
    """A decoding backend is not installed or cannot decode this file correctly."""


class ModelError(VideoVLMError):
    """The model cannot be found or loaded (for example: no hub access and not cached)."""


class RecipeError(VideoVLMError):
    """A pipeline recipe is invalid (unknown key, wrong type, missing prompt)."""


class OutputError(VideoVLMError):
    """An output cannot be written: a read-only folder, a path through a file, a full disk."""


class DiskFullError(OutputError, OSError):
    """The disk holding an output is full (``ENOSPC``, or a quota's ``EDQUOT``).

    Also an ``OSError``, so what writes only for speed (the frame cache) goes on without its
    entry as for any failed write, while an output's writer stops the command with this line:
    a batch then stops rather than record every following video as failed, and resumes once
    there is space.
    """

    def __init__(self, errno: int, message: str) -> None:
        OSError.__init__(self, errno, message)

    def __str__(self) -> str:
        return str(self.strerror)


class DecoderCrash(BackendError):
    """A decoder died in native code (a signal: SIGSEGV, SIGABRT) on this file; the command
    survives it, decoding runs in a child process (:mod:`videovlm.isolation`)."""
