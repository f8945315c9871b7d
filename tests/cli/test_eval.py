"""`videovlm eval`: predictions, a report and one line on stderr; a bad questions file is refused
line by line before any model loads, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import OPTIONS, QUESTIONS, lines, make_eval_videos, run_cli, write_questions
from videovlm.evaluate import PREDICTIONS_NAME, REPORT_MD_NAME, REPORT_NAME


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_eval_videos(tmp_path_factory.mktemp("eval_videos"))


def test_cli_eval_writes_predictions_report_and_one_line(videos, tiny_idefics3, tmp_path,
                                                          capsys):
    qfile = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    out = tmp_path / "out"
    args = ["eval", str(qfile), "--videos", str(videos), "-o", str(out), "--protocol",
            "cinepile", "--model", str(tiny_idefics3), "-n", "2", "--limit", "3", "--quiet"]
    assert run_cli(args) == 0
    err = capsys.readouterr().err.strip().splitlines()
    summary = json.loads((out / REPORT_NAME).read_text())
    lo, hi = summary["accuracy_interval"]
    unparseable = f", {summary['unparseable']} unparseable" if summary["unparseable"] else ""
    assert err == [f"videovlm: eval: accuracy {summary['accuracy']:.4f} [95% {lo:.4f}-{hi:.4f}] "
                   f"({summary['correct']}/3){unparseable} on cinepile -> {out / REPORT_MD_NAME}"]
    preds = lines(out / PREDICTIONS_NAME)
    assert [p["id"] for p in preds] == ["q1", "q2", "q3"]
    assert summary["correct"] == sum(p["correct"] for p in preds)


BAD_LINES = [
    "not json",
    {"video": "a/x.mp4", "question": "?", "choices": OPTIONS},  # no answer
    {"video": "a/x.mp4", "question": "?", "choices": ["only one"], "answer": "A"},
    {"video": "a/x.mp4", "question": "?", "choices": OPTIONS, "answer": "purple"},
    {"video": "missing.mp4", "question": "?", "choices": OPTIONS, "answer": "A", "id": "m"},
    {"video": "a/x.mp4", "question": "?", "choices": OPTIONS, "answer": "A", "id": "m"},
]


def test_cli_bad_questions_file_one_line_per_problem_exit_2_nothing_written(videos, tmp_path,
                                                                            capsys):
    qfile = write_questions(tmp_path / "q.jsonl", BAD_LINES)
    out = tmp_path / "out"
    # a model that does not exist: the file's problems are found before any model loads
    rc = run_cli(["eval", str(qfile), "--videos", str(videos), "-o", str(out), "--model",
                  str(tmp_path / "no-model"), "--strict"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("videovlm: error: ") for line in err), err
    assert [line.split(": ")[2].rsplit(":", 1)[-1] for line in err[:5]] == [
        "1", "2", "3", "4", "6"]
    assert "not a JSON object" in err[0] and "missing answer" in err[1]
    assert "2 to 26" in err[2] and "'purple' is neither" in err[3]
    assert "id 'm' repeats" in err[4]
    assert "video 'missing.mp4' not found" in err[5] and len(err) == 6
    assert not out.exists()
