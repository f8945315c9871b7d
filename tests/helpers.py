"""Helpers that more than one test module uses: the CLI run in-process, the batch log as records,
the small trees of videos and the recipes and questions files the batch and eval tests share,
and a counter of the frames the vision tower encodes.

Test modules import from here, never from each other, so that moving or changing one test module
breaks no other.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import media
from videovlm.batch import RESULTS_NAME

# -- the CLI ------------------------------------------------------------------------------------


def run_cli(args: list[str]) -> int:
    """The exit code of ``videovlm ARGS``, run in this process through the real entry point."""
    from videovlm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def run_cli_output(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``videovlm ARGS``, run in this process."""
    from videovlm.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- recipes ------------------------------------------------------------------------------------

QA_PROMPTS = '[prompts]\nintro = "{n_frames} frames"\nquestion = "{question}"\n'

FAST_RECIPE = """
extends = "timeline"
name = "fast-timeline"
[sampling]
n = 3
[generation]
max_new_tokens = 3
"""


# -- batch --------------------------------------------------------------------------------------


def records(out: Path) -> list[dict]:
    """The records of ``out``'s results.jsonl, which must end with a complete line."""
    lines = (out / RESULTS_NAME).read_bytes().split(b"\n")
    assert lines[-1] == b"", "results.jsonl must end with a complete line"
    return [json.loads(line) for line in lines[:-1]]


def make_small_tree(root: Path) -> Path:
    """Two clips with one name in two folders, a text file named .mp4, a cut-off clip."""
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        media.make_video(root / sub / "x.mp4", n_frames=10)
    media.make_text(root / "broken.mp4")  # text with a video's name: ignored, reported
    media.truncate(root / "a" / "x.mp4", root / "cut.mp4", 0.3)  # a video's header, no frames
    return root


# -- eval ---------------------------------------------------------------------------------------

OPTIONS = ["red", "green", "blue", "black"]

QUESTIONS = [
    {"id": "q1", "video": "a/x.mp4", "question": "What colour is the band?", "choices": OPTIONS,
     "answer": "B"},
    {"id": "q2", "video": "y.mp4", "question": "Which colour?",
     "choices": ["A. red", "B. green", "C. blue", "D. black"], "answer": "blue"},
    {"id": "q3", "video": "a/x.mp4", "question": "Which shape?",
     "choices": ["circle", "square", "line", "dot"], "answer": "(D)"},
    {"id": "q4", "video": "a/x.mp4", "question": "How many cells?", "choices": OPTIONS,
     "answer": "A. red"},
]


def make_eval_videos(root: Path) -> Path:
    """The videos ``QUESTIONS`` name, plus a cut-off clip whose decoding fails."""
    (root / "a").mkdir()
    media.make_video(root / "a" / "x.mp4", n_frames=8)
    media.make_video(root / "y.mp4", n_frames=8, size=(48, 64))
    media.truncate(root / "y.mp4", root / "cut.mp4", 0.3)  # a header and no frames: fails decode
    return root


def recipe_file(tmp_path_factory: pytest.TempPathFactory, name: str, text: str) -> Path:
    """A recipe file ``name`` holding ``text``, in a fresh folder (for module-scoped fixtures)."""
    path = tmp_path_factory.mktemp("recipe") / name
    path.write_text(text)
    return path


def write_questions(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def lines(path: Path) -> list[dict]:
    """A JSON Lines file's objects."""
    return [json.loads(x) for x in path.read_text().splitlines()]


class EncodedFrames:
    """Counts the frames the real vision tower encodes (a forward hook on it; frames go
    through it one at a time or a few at a time, so frames are counted, not calls)."""

    def __init__(self, model) -> None:
        self.frames = 0
        self.handle = model.network.model.vision_model.register_forward_hook(
            self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs, _output) -> None:
        pixels = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]
        self.frames += int(pixels.shape[0])

    def __enter__(self) -> EncodedFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


# -- serve --------------------------------------------------------------------------------------


class ServeProcess:
    """``videovlm serve ARGS`` in a child process on a free port, as a user starts it: the URL
    read from its "serving ... on http://..." line, its stderr kept for the test to read."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys
        import threading

        root = Path(__file__).resolve().parent.parent
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "videovlm", "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root), **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(120) or self.url is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        import re

        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"serving .* on (http://\S+?)/ ", line)
            if found:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
