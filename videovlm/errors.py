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


class DecoderCrash(BackendError):
    """A decoder died in native code (a signal: SIGSEGV, SIGABRT) on this file; the command
    survives it, decoding runs in a child process (:mod:`videovlm.decode.isolation`)."""
