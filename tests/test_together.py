"""``--batch-size``: several videos' prompts decode together (videovlm/batch/together.py) and
every video gets exactly the record it gets one at a time.

Real stages on the sample clips and a tiny SmolVLM2 checkpoint, unquantized (an int8 model
never batches videos: its activations are scaled over every row of a call). Greedy decoding,
so "the same record" is exact: texts, segments, answers, letters, frames and token counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import media
from tests.helpers import recipe_file, records, run_cli, write_questions
from videovlm.batch import RESULTS_NAME
from videovlm.batch.together import run_together
from videovlm.errors import ModelError
from videovlm.evaluate import evaluate, load_eval_questions
from videovlm.model import Ask, Model
from videovlm.result import Result

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SHORT = """
extends = "describe"
name = "describe-short"
[generation]
max_new_tokens = 8
"""
CHANGES = ("timing_s", "cache", "created_at")  # what a rerun may change: the clock, the cache


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """The three sample clips (links) and a cut-off copy of one, whose decoding fails."""
    root = tmp_path_factory.mktemp("samples")
    for clip in ("bikes.mp4", "world.mp4", "bigbuckbunny.mp4"):
        (root / clip).symlink_to(SAMPLES / clip)
    media.truncate(SAMPLES / "bikes.mp4", root / "cut.mp4", 0.05)
    return root


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return recipe_file(tmp_path_factory, "short.toml", SHORT)


@pytest.fixture(scope="module")
def model(tiny_smolvlm) -> Model:
    return Model.load(str(tiny_smolvlm), quantize="none")


def outcome(out: Path) -> dict[str, dict]:
    """Each input's record without what a rerun may change."""
    return {r["input"]: {k: v for k, v in r.items() if k not in CHANGES} for r in records(out)}


def batch(samples: Path, out: Path, model_dir: Path, *options: str) -> int:
    return run_cli(["batch", str(samples), "-o", str(out), "--model", str(model_dir),
                    "--quantize", "none", "-n", "6", "--quiet", *options])


@pytest.fixture(scope="module")
def one_at_a_time(samples, recipe, tiny_smolvlm, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("one") / "out"
    assert batch(samples, out, tiny_smolvlm, "--pipeline", str(recipe)) == 1  # cut.mp4 fails
    return outcome(out)


def test_batch_size_3_gives_each_video_the_record_of_batch_size_1(one_at_a_time, samples,
                                                                   recipe, tiny_smolvlm,
                                                                   tmp_path):
    """Scenes differ in number per clip (lanes ask different numbers of times, the summary of
    one meets another's scenes in a call), the cut-off clip fails in the CPU stage: every
    record is the one-at-a-time record, the failure recorded, the others done."""
    out = tmp_path / "out"
    assert batch(samples, out, tiny_smolvlm, "--pipeline", str(recipe), "--batch-size", "3") == 1
    got = outcome(out)
    assert got == one_at_a_time
    assert got["cut.mp4"]["error"]["type"] == "InputError"
    done = [r for r in got.values() if r["error"] is None]
    assert len(done) == 3 and all(r["summary"] for r in done)
    assert max(len(r["segments"]) for r in done) > min(len(r["segments"]) for r in done)


def test_resume_with_batch_size_2_after_a_crash(one_at_a_time, samples, recipe, tiny_smolvlm,
                                                tmp_path):
    """A run killed after its first record (what a crash leaves: complete lines only) and
    resumed with batches of 2 redoes only the rest, one record each, the same records."""
    out = tmp_path / "out"
    assert batch(samples, out, tiny_smolvlm, "--pipeline", str(recipe), "--batch-size", "2") == 1
    log = out / RESULTS_NAME
    first = log.read_bytes().split(b"\n")[0] + b"\n"
    log.write_bytes(first)
    assert batch(samples, out, tiny_smolvlm, "--pipeline", str(recipe), "--batch-size", "2") == 1
    assert len(records(out)) == 4
    assert outcome(out) == one_at_a_time


def test_questions_with_and_without_choices_batch_like_one_at_a_time(samples, tiny_smolvlm,
                                                                     tmp_path):
    """Open and multiple-choice questions (their letters from the logits too) of several
    videos in one call; a video whose question holds a control token fails alone."""
    qfile = write_questions(tmp_path / "q.jsonl", [
        {"video": "bikes.mp4", "question": "What colour is the bike?",
         "choices": ["red", "blue", "green"]},
        {"video": "bikes.mp4", "question": "Where is this?"},
        {"video": "world.mp4", "question": "What is shown?"},
        {"video": "world.mp4", "question": "Is it day?", "choices": ["yes", "no"]},
        {"video": "bigbuckbunny.mp4", "question": "Who is <end_of_utterance> there?"},
    ])
    runs = {}
    for size in ("1", "3"):
        out = tmp_path / f"out{size}"
        assert batch(samples, out, tiny_smolvlm, "--questions", str(qfile),
                     "--batch-size", size) == 1
        runs[size] = outcome(out)
    assert runs["3"] == runs["1"]
    assert runs["3"]["bigbuckbunny.mp4"]["error"]["message"].count("control tokens") == 1
    bikes = runs["3"]["bikes.mp4"]["answers"]
    assert bikes[0]["choice"] in ("A", "B", "C") and bikes[1]["choice"] is None


def test_eval_batch_size_gives_the_same_predictions(samples, model, tmp_path):
    qfile = write_questions(tmp_path / "q.jsonl", [
        {"id": str(i), "video": video, "question": f"Question {i}?",
         "choices": ["red", "green", "blue"], "answer": "A"}
        for i, video in enumerate(["bikes.mp4", "world.mp4", "bikes.mp4", "bigbuckbunny.mp4"])
    ])
    items = load_eval_questions(qfile, samples)
    predictions = {}
    for size in (1, 2):
        out = tmp_path / f"eval{size}"
        report = evaluate(items, samples, out, model, n=3, batch_size=size, progress=False)
        assert report.exit_code == 0
        predictions[size] = (out / "predictions.jsonl").read_text()
    assert predictions[2] == predictions[1]
    assert len(predictions[1].splitlines()) == 4


def test_int8_runs_one_video_at_a_time_and_says_so_once(samples, recipe, tiny_smolvlm,
                                                        tmp_path, capsys):
    out = tmp_path / "out"
    rc = run_cli(["batch", str(samples), "-o", str(out), "--model", str(tiny_smolvlm),
                  "--pipeline", str(recipe), "-n", "2", "--batch-size", "4",
                  "--include", "world.mp4", "--include", "bikes.mp4"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("--batch-size 4 ignored: the model is int8-quantized") == 1, err
    assert all(r["model"]["quantization"] == "int8" for r in records(out))


def test_batch_size_with_the_ray_engine_is_one_line(samples, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(["batch", str(samples), "-o", str(out), "--engine", "ray",
                    "--batch-size", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["videovlm: error: --batch-size runs on the local engine; with --engine ray "
                   "each model actor takes one video at a time: drop one of them"]
    assert not out.exists()


# -- the lanes themselves ------------------------------------------------------------------------


def test_a_failing_batched_call_fails_only_the_video_at_fault(model):
    """One lane's prompt is too long for the context: the batched call fails, is retried ask by
    ask, and the other lane gets the answers it gets alone. A lane's own exception is its
    outcome."""
    import numpy as np

    from videovlm.decode import Frame
    from videovlm.pack import build_prompt
    from videovlm.prepare import prepare

    rng = np.random.default_rng(0)
    frames = [Frame(i, float(i), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
              for i in range(2)]
    prompt = build_prompt(model, frames, prepare(frames, model.image_size), "unused",
                          intro="Frames.\n", max_new_tokens=6)
    prefix = model.encode_prefix(prompt.head, model.image_features(prompt.images))
    good = Ask(prefix, (prompt.tail_for("What is shown?"),))
    too_long = Ask(prefix, (prompt.tail_for("word " * model.context),))
    alone = model.answer_one(good, max_new_tokens=6)

    def asking(ask: Ask):
        def work(asker) -> Result:
            answers, seconds = asker(ask, {"max_new_tokens": 6})
            assert seconds > 0
            return Result(video={}, summary=json.dumps(answers))
        return work

    def broken(asker) -> Result:
        raise ValueError("this video's own failure")

    out = run_together(model, [asking(good), asking(too_long), broken, asking(good)], rows=8)
    assert json.loads(out[0].summary) == [list(a) for a in alone]
    assert json.loads(out[3].summary) == json.loads(out[0].summary)
    assert isinstance(out[1], ModelError) and "more than the model's" in str(out[1])
    assert isinstance(out[2], ValueError)


def test_ctrl_c_leaves_no_lane_running(model):
    """A second Ctrl-C abandons the batch: the lanes that had not started must not start
    (they would encode their videos on the model in the background, unseen), and the one
    that was running stops at its next ask."""
    import os
    import signal
    import threading
    import time

    started: list[int] = []
    ended = threading.Event()

    def work(i: int):
        def run(asker) -> Result:
            started.append(i)
            if i == 0:  # Ctrl-C while this lane runs (the scheduler waits for it)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
            try:
                asker(Ask(None, ("hi",)), {"max_new_tokens": 2})
            finally:
                ended.set()
            return Result(video={})
        return run

    # Python raises KeyboardInterrupt only where SIGINT is not ignored, and a test run started
    # in the background (`cmd &`, as CI may) inherits it ignored: install the default handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_together(model, [work(i) for i in range(3)], rows=8)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ended.wait(5)
    time.sleep(0.3)
    assert started == [0]
