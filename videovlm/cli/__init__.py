"""The command line: turns options into calls of the library; no video or model logic lives here.

Each command group sits in its own module (``frames``, ``model_cmds``, ``batch_cmd``...) and is
registered on :data:`cli` below. A :class:`~videovlm.errors.VideoVLMError` becomes one line on
stderr and its exit code; nothing else is caught.
"""

from __future__ import annotations

import sys

import click

from videovlm import __version__
from videovlm.errors import VideoVLMError


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
        rc = cli.main(args=argv, prog_name="videovlm", standalone_mode=False)
    except VideoVLMError as exc:
        click.echo(f"videovlm: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("videovlm: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
