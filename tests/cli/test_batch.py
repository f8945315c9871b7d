"""`videovlm batch` with the real model stage on a tiny checkpoint: records and outputs, resume,
a questions file, one-line refusals, and survival of SIGKILL (Ctrl-C and SIGTERM:
tests/test_stops_and_disks.py)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import media
from tests.helpers import FAST_RECIPE, make_small_tree, records, run_cli
from videovlm.batch import RESULTS_NAME


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    return make_small_tree(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def fast_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "fast.toml"
    path.write_text(FAST_RECIPE)
    return path


def test_cli_batch_records_outputs_and_resume(small_tree, fast_recipe, tiny_idefics3, tmp_path,
                                              capsys):
    out = tmp_path / "out"
    args = ["batch", str(small_tree), "-o", str(out), "--pipeline", str(fast_recipe),
            "--model", str(tiny_idefics3), "-f", "json,srt"]
    assert run_cli(args) == 1
    err = capsys.readouterr().err
    assert "ignored 1 file(s) that are not videos by content: broken.mp4" in err
    assert "2 done, 1 failed, 0 skipped" in err
    recs = {r["input"]: r for r in records(out)}
    assert set(recs) == {"a/x.mp4", "b/x.mp4", "cut.mp4"}
    assert recs["cut.mp4"]["error"]["type"] == "InputError"
    for rel in ("a/x.mp4", "b/x.mp4"):
        r = recs[rel]
        assert r["error"] is None and r["model"]["id"] == str(tiny_idefics3)
        assert r["outputs"] == [f"{rel}.json", f"{rel}.srt"]
        assert json.loads((out / f"{rel}.json").read_text())["video"]["path"].endswith(rel)
    before = (out / RESULTS_NAME).read_bytes()
    assert run_cli(args) == 1  # resumed: nothing redone, the earlier failure still counts
    assert ("0 done, 0 failed, 3 skipped (1 failed before: --retry-failed redoes them)"
            in capsys.readouterr().err)
    assert (out / RESULTS_NAME).read_bytes() == before


def test_cli_batch_retry_failed_redoes_only_the_failures(fast_recipe, tiny_idefics3, tmp_path,
                                                         capsys):
    tree = make_small_tree(tmp_path / "tree")
    out = tmp_path / "out"
    args = ["batch", str(tree), "-o", str(out), "--pipeline", str(fast_recipe), "--model",
            str(tiny_idefics3), "--quiet"]
    assert run_cli(args) == 1  # cut.mp4 has no frame
    first = {r["input"]: r for r in records(out)}
    assert first["cut.mp4"]["error"] is not None
    (tree / "cut.mp4").write_bytes((tree / "a" / "x.mp4").read_bytes())  # the whole file now
    capsys.readouterr()
    assert run_cli([*args, "--retry-failed"]) == 0
    assert "1 done, 0 failed, 2 skipped" in capsys.readouterr().err
    again = records(out)
    assert [r["input"] for r in again] == ["a/x.mp4", "b/x.mp4", "cut.mp4"]  # one record each
    assert again[:2] == [first["a/x.mp4"], first["b/x.mp4"]]  # not redone
    assert again[2]["error"] is None


def test_cli_batch_questions_file(small_tree, tiny_idefics3, tmp_path):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(
        '{"video": "a/x.mp4", "question": "What colour is the band?", '
        '"choices": ["red", "green"]}\n'
        '{"video": "a/x.mp4", "question": "What is shown?"}\n'
        '{"video": "b/x.mp4", "question": "How many cells?"}\n')
    out = tmp_path / "out"
    rc = run_cli(["batch", str(small_tree), "-o", str(out), "--questions", str(qfile),
                  "--model", str(tiny_idefics3), "-n", "2", "--quiet"])
    assert rc == 0  # only the videos the file names are inputs
    recs = {r["input"]: r for r in records(out)}
    assert set(recs) == {"a/x.mp4", "b/x.mp4"}
    a = recs["a/x.mp4"]["answers"]
    assert [x["question"] for x in a] == ["What colour is the band?", "What is shown?"]
    assert a[0]["choices"] == ["red", "green"] and a[0]["choice"] in ("A", "B")
    assert a[1]["choices"] is None
    assert [x["question"] for x in recs["b/x.mp4"]["answers"]] == ["How many cells?"]


@pytest.mark.parametrize("case", ["no_videos", "unknown_question_video", "missing_model",
                                  "pipeline_without_questions"])
def test_cli_batch_user_mistakes_are_one_line_and_write_nothing(case, small_tree, tmp_path,
                                                                capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"video": "nope.mp4", "question": "?"}\n')
    args = {
        "no_videos": ["batch", str(empty), "-o", str(out)],
        "unknown_question_video": ["batch", str(small_tree), "-o", str(out),
                                   "--questions", str(qfile)],
        "missing_model": ["batch", str(small_tree), "-o", str(out), "--model",
                          str(tmp_path / "no-such-model")],
        "pipeline_without_questions": ["batch", str(small_tree), "-o", str(out),
                                       "--pipeline", "timeline", "--questions", str(qfile)],
    }[case]
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and err[-1].startswith("videovlm: error: "), err
    assert not out.exists()


def batch_in_a_process(tmp_path: Path, n_videos: int, *options: str) -> tuple[Path, list[str]]:
    """``n_videos`` short clips, and the ``videovlm batch`` command line over them (run in its
    own process, to be signalled): the output folder and the command."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(n_videos):
        media.make_video(videos / f"v{i}.mp4", n_frames=10)
    out = tmp_path / "out"
    return out, [sys.executable, "-m", "videovlm", "batch", str(videos), "-o", str(out),
                 *options]


@pytest.mark.slow
def test_cli_sigkill_at_random_moments_then_resume(tmp_path, fast_recipe, tiny_idefics3):
    out, cmd = batch_in_a_process(tmp_path, 8, "--pipeline", str(fast_recipe), "--model",
                                  str(tiny_idefics3), "-f", "json,srt")
    rng = random.Random(7)
    for _ in range(4):  # the model loads in ~2-4 s, then a video takes a fraction of a second
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert subprocess.run(cmd, stderr=subprocess.DEVNULL, timeout=300).returncode == 0
    recs = records(out)
    assert sorted(r["input"] for r in recs) == [f"v{i}.mp4" for i in range(8)]
    for r in recs:
        assert r["outputs"] == [f"{r['input']}.json", f"{r['input']}.srt"]
        assert json.loads((out / f"{r['input']}.json").read_text())["segments"] == r["segments"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


BAD_QUESTIONS = [
    {"video": "a/x.mp4", "question": "Fine?"},
    '{"video": "a/x.mp4", "question": "Q"',  # cut short: not JSON
    {"video": "a/x.mp4", "question": "Q", "colour": 1},
    {"video": "a/x.mp4", "question": "Q", "choices": ["one"]},
    {"video": "nope.mp4", "question": "Q"},
    {"video": "x.mp4", "question": "Q"},  # a/x.mp4 or b/x.mp4?
    {"video": "b/x.mp4", "questoin": "Q"},
]


def test_cli_batch_questions_file_mistakes_are_all_said_at_once(small_tree, tmp_path, capsys):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n"
                             for x in BAD_QUESTIONS))
    out = tmp_path / "out"
    # a model that does not exist: the file's problems are found before any model loads
    rc = run_cli(["batch", str(small_tree), "-o", str(out), "--questions", str(qfile),
                  "--model", str(tmp_path / "no-model"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith(f"videovlm: error: {qfile}:") for line in err), err
    assert [line.split(": ")[2].rsplit(":", 1)[-1] for line in err] == ["2", "3", "4", "5", "6",
                                                                        "7"]
    assert "not a JSON object" in err[0] and "unknown key(s) colour" in err[1]
    assert "2 to 26 strings" in err[2] and "'nope.mp4' not found" in err[3]
    assert "matches 2 videos" in err[4] and "missing question" in err[5]
    assert not out.exists()


def test_cli_batch_says_the_first_twenty_problems_and_how_many_more(small_tree, tmp_path,
                                                                    capsys):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(f'{{"video": "v{i}.mp4", "question": "Q"}}\n' for i in range(25)))
    assert run_cli(["batch", str(small_tree), "-o", str(tmp_path / "out"), "--questions",
                    str(qfile), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 21 and "'v19.mp4' not found" in err[19]
    assert err[20] == "videovlm: error: ... and 5 more problems"
