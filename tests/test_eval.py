"""Evaluation (`videovlm eval`'s engine; the command is tested in tests/cli/test_eval.py, the
figures and reports in tests/test_scoring.py): questions grouped by video and encoded once,
predictions and accuracy recountable from the files, resume, and a bad questions file refused.

Runs the tiny random-weight checkpoint (its letters are chance, so tests check structure and
consistency: every prediction a valid letter, the accuracy equal to a recount of the lines)
on small generated clips whose frames carry their index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import (
    OPTIONS,
    QUESTIONS,
    lines,
    make_eval_videos,
    write_questions,
)
from videovlm.evaluate import (
    PREDICTIONS_NAME,
    REPORT_NAME,
    QuestionsFileError,
    evaluate,
    gold_letter,
    load_eval_questions,
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_eval_videos(tmp_path_factory.mktemp("eval_videos"))


@pytest.fixture(scope="module")
def model(tiny_idefics3):
    from videovlm.model import Model

    return Model.load(str(tiny_idefics3))


def image_encodings(model) -> list[int]:
    """Counts forward passes that carry frames (pixels, or their encodings): how often a
    video's frames are put in a prompt."""
    calls = [0]

    def hook(_module, _args, kwargs):
        if kwargs.get("pixel_values") is not None or kwargs.get("mm_encoder_outputs"):
            calls[0] += 1

    return calls, model.network.register_forward_pre_hook(hook, with_kwargs=True)


def test_gold_answers_as_letters_or_text():
    assert gold_letter("C", OPTIONS) == "C"
    assert gold_letter("(b)", OPTIONS) is None  # a lower-case letter is not a label...
    assert gold_letter("(B)", OPTIONS) == "B"
    assert gold_letter(" Blue ", OPTIONS) == "C"  # ...but text matches whatever its case
    assert gold_letter("D) black", OPTIONS) == "D"
    assert gold_letter("B) black", OPTIONS) is None  # label and text disagree: no answer
    assert gold_letter("E", OPTIONS) is None
    assert gold_letter("purple", OPTIONS) is None


def test_each_video_encoded_once_predictions_and_accuracy(videos, model, tmp_path):
    items = load_eval_questions(write_questions(tmp_path / "q.jsonl", QUESTIONS), videos)
    assert [(i.id, i.answer) for i in items] == [("q1", "B"), ("q2", "C"), ("q3", "D"),
                                                  ("q4", "A")]
    assert items[1].choices == ("red", "green", "blue", "black")  # labels stripped
    out = tmp_path / "out"
    calls, handle = image_encodings(model)
    try:
        report = evaluate(items, videos, out, model, protocol="videomme", n=3, workers=1,
                          progress=False)
    finally:
        handle.remove()
    assert calls[0] == 2  # two videos, each encoded once for all its questions
    assert report.exit_code == 0
    preds = lines(out / PREDICTIONS_NAME)
    assert [p["id"] for p in preds] == ["q1", "q2", "q3", "q4"]  # file order
    for p, q in zip(preds, QUESTIONS, strict=True):
        assert p["video"] == q["video"] and p["question"] == q["question"]
        assert p["logits"] in ("A", "B", "C", "D") and p["parsed"] in (None, "A", "B", "C", "D")
        assert p["correct"] == (p["parsed"] == p["answer"])
        assert p["raw"] is not None and p["state"] in ("parsed", "unparseable")
    summary = json.loads((out / REPORT_NAME).read_text())
    correct = sum(p["correct"] for p in preds)
    assert (summary["correct"], summary["answered"], summary["questions"]) == (correct, 4, 4)
    assert summary["accuracy"] == pytest.approx(correct / 4)
    assert summary["protocol"] == "videomme" and summary["model"]["id"] == model.id
    assert summary["missing_videos"] == [] and summary["missing"] == 0
    records = lines(out / "results.jsonl")
    assert {r["input"] for r in records} == {"a/x.mp4", "y.mp4"}
    assert {r["prompt"]["recipe"] for r in records} == {"eval_videomme"}


def test_shared_prefix_gives_the_answers_of_asking_each_question_alone(videos, model):
    """Questions with their own options continue from one encoding; under greedy decoding
    that changes nothing: each answer is the one run_model gives for the question alone."""
    from videovlm.api import load_video, run_model
    from videovlm.evaluate import EvalItem, answer_video
    from videovlm.pipelines import load_recipe

    recipe = load_recipe("eval_cinepile")
    inputs = load_video(videos / "a" / "x.mp4", recipe, n=3, image_size=model.image_size)
    items = [EvalItem("1", "a/x.mp4", "What colour?", tuple(OPTIONS), "A"),
             EvalItem("2", "a/x.mp4", "Which shape?", ("circle", "square", "line", "dot"), "B"),
             EvalItem("3", "a/x.mp4", "How many?", ("1", "2", "3", "4", "5"), "E")]
    shared = answer_video(model, inputs, recipe, items)
    for item, got in zip(items, shared.answers, strict=True):
        alone = run_model(model, inputs, recipe, questions=[item.question],
                          choices=list(item.choices)).answers[0]
        assert (got.answer, got.choice) == (alone.answer, alone.choice)
        assert got.choice in "ABCDE"[:len(item.choices)]


def test_resume_skips_answered_videos_and_failures_are_recorded(videos, model, tmp_path):
    qs = [*QUESTIONS, {"id": "q5", "video": "cut.mp4", "question": "Is it cut?",
                       "choices": ["yes", "no"], "answer": "yes"}]
    items = load_eval_questions(write_questions(tmp_path / "q.jsonl", qs), videos)
    out = tmp_path / "out"
    first = evaluate(items, videos, out, model, protocol="plain", n=2, workers=0,
                     progress=False)
    assert first.exit_code == 0  # the cut clip failed: its question is missing, the others scored
    summary = first.summary
    assert summary["missing"] == 1 and summary["answered"] == 4 and summary["questions"] == 5
    assert [f["video"] for f in summary["missing_videos"]] == ["cut.mp4"]
    assert summary["missing_videos"][0]["error"].startswith("InputError: ")
    assert "1 missing on 1 video(s)" in first.line()
    log = out / "results.jsonl"
    recorded = log.read_bytes()
    preds = (out / PREDICTIONS_NAME).read_bytes()

    calls, handle = image_encodings(model)
    try:
        again = evaluate(items, videos, out, model, protocol="plain", n=2, workers=0,
                         progress=False)
        assert calls[0] == 0 and again.batch.skipped == 3  # nothing recomputed
        assert log.read_bytes() == recorded and (out / PREDICTIONS_NAME).read_bytes() == preds
        assert again.summary["missing"] == 1  # the earlier failure still counts

        # a run killed after its first video: that video's record stays, the rest are redone
        first_line = recorded.split(b"\n", 1)[0] + b"\n"
        log.write_bytes(first_line + b'{"input": "y.mp4", "answ')  # torn last line
        third = evaluate(items, videos, out, model, protocol="plain", n=2, workers=0,
                         progress=False)
    finally:
        handle.remove()
    assert third.batch.skipped == 1 and calls[0] == 1  # y.mp4 redone; cut.mp4 retried, fails
    assert (out / PREDICTIONS_NAME).read_bytes() == preds  # same predictions after the redo
    assert len(lines(log)) == 3


def test_other_settings_are_refused_on_resume(videos, model, tmp_path):
    from videovlm.errors import VideoVLMError

    items = load_eval_questions(write_questions(tmp_path / "q.jsonl", QUESTIONS[:1]), videos)
    evaluate(items, videos, tmp_path / "out", model, protocol="plain", n=2, workers=0,
             progress=False)
    with pytest.raises(VideoVLMError, match="other settings"):
        evaluate(items, videos, tmp_path / "out", model, protocol="videomme", n=2, workers=0,
                 progress=False)


def test_limit_keeps_the_first_questions(videos, tmp_path):
    qs = [*QUESTIONS, {"video": "not-there.mp4", "question": "?", "choices": OPTIONS,
                       "answer": "A"}]
    path = write_questions(tmp_path / "q.jsonl", qs)
    assert [i.id for i in load_eval_questions(path, videos, limit=2, strict=True)] == ["q1",
                                                                                        "q2"]
    with pytest.raises(QuestionsFileError, match=r"not-there\.mp4"):  # only without the limit
        load_eval_questions(path, videos, strict=True)
    assert len(load_eval_questions(path, videos)) == 5  # not strict: to be counted as missing


def test_questions_file_as_a_json_list(videos, tmp_path):
    listed = tmp_path / "q.json"
    listed.write_text(json.dumps(QUESTIONS, indent=2))
    lined = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    assert load_eval_questions(listed, videos) == load_eval_questions(lined, videos)
