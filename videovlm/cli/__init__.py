"""The command line: turns options into calls of the library; no video or model logic lives here.

Each command group sits in its own module (``frames``, ``model_cmds``, ``batch_cmd``...) and is
registered on :data:`cli` below. A :class:`~videovlm.errors.VideoVLMError` becomes one line on
stderr and its exit code; nothing else is caught. SIGTERM stops a command as Ctrl-C does
(:mod:`videovlm.interrupts`), with exit code 143 instead of 130.
"""

from __future__ import annotations

import sys

import click

from videovlm import __version__
from videovlm.errors import VideoVLMError
from videovlm.interrupts import exit_code, signum_of, sigterm_stops_at_once


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="videovlm")
def cli() -> None:
    """Understand video files with a small vision-language model (SmolVLM)."""


def _register() -> None:
    import importlib

    for name in ("frames", "model_cmds", "find_cmd", "batch_cmd", "recipes", "eval_cmd",
                 "serve_cmd", "speech_cmd", "convert_cmd"):
        importlib.import_module(f"videovlm.cli.{name}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line and an exit code."""
    _register()
    try:
        with sigterm_stops_at_once():
            rc = cli.main(args=argv, prog_name="videovlm", standalone_mode=False)
    except VideoVLMError as exc:
        click.echo(f"videovlm: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # Ctrl-C, or SIGTERM, where nothing was to finish
        click.echo("videovlm: aborted", err=True)
        sys.exit(exit_code(signum_of(exc.__cause__)))
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
