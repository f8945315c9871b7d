"""`find`: windows scored by the model's P(yes), merged into ranges, on a clip of known shots.

The clip has four coloured shots of 2 s each, so 2 s windows line up with the shots and each
window's content is known. The tiny checkpoints' words are noise, but their scoring is real and
deterministic: what is asserted is the structure (windows cover the video once on frame times,
scores in [0, 1], ranges merged by the rule, batched equals unbatched) and that the score is the
model's own (it differs with the content and equals a direct forward pass on the same prompt).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import srt
import webvtt

from tests.helpers import run_cli_output as run_cli
from tests.media import make_shots
from videovlm.api import find, find_recipe, load_video, stage_video
from videovlm.model import Model
from videovlm.probe import probe
from videovlm.relevance import ANSWER_WORDS, merge_ranges
from videovlm.result import Window
from videovlm.run import Asked, ModelRun
from videovlm.video import VideoInputs

CUTS = [0, 50, 100, 150]  # 25 fps: a new colour every 2 s, 8 s in all
QUERY = "a red square"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shots(tmp_path_factory.mktemp("find") / "shots.mp4", CUTS, 200)


@pytest.fixture(scope="module")
def model(tiny_smolvlm) -> Model:
    return Model.load(str(tiny_smolvlm), quantize="none")  # unquantized: rows batch exactly


def test_merge_joins_adjacent_windows_at_or_above_the_threshold() -> None:
    scores = [0.1, 0.6, 0.9, 0.5, 0.2, 0.7, 0.4, 0.8, 0.8]
    windows = [Window(2.0 * i, 2.0 * (i + 1), s, "") for i, s in enumerate(scores)]
    got = [(r.start_s, r.end_s, r.peak_score, r.peak_start_s) for r in merge_ranges(windows, 0.5)]
    assert got == [(2.0, 8.0, 0.9, 4.0), (10.0, 12.0, 0.7, 10.0), (14.0, 18.0, 0.8, 14.0)]
    assert merge_ranges(windows, 0.95) == []
    assert len(merge_ranges(windows, 0.0)) == 1  # everything, one range over the whole video
    # windows that do not touch are never joined, even when both score high
    apart = [Window(0.0, 1.0, 0.9, ""), Window(2.0, 3.0, 0.9, "")]
    assert [(r.start_s, r.end_s) for r in merge_ranges(apart, 0.5)] == [(0.0, 1.0), (2.0, 3.0)]


def test_windows_cover_the_video_once_with_real_scores(model, shots) -> None:
    result = find(shots, QUERY, model=model, window_s=2.0, threshold=0.0)
    found = result.relevance
    info = probe(shots)
    starts = {info.timeline.time_s(i) for i in range(info.frame_count)} | {info.duration_s}
    windows = found.windows
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0),
                                                       (6.0, 8.0)]
    assert windows[-1].end_s == info.duration_s
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(windows))
    assert all(w.start_s in starts and w.end_s in starts for w in windows)  # frame times
    assert all(0.0 <= w.score <= 1.0 for w in windows)
    for w in windows:  # each window is scored from its own frames, the recipe's count
        assert len(w.frames) == found.frames_per_window == 6
        assert all(w.start_s <= info.timeline.time_s(i) < w.end_s for i in w.frames)
    # the four shots differ in colour, and so do their scores: the model looked at them
    assert len({round(w.score, 6) for w in windows}) == 4
    # threshold 0: every window counts, one range over the whole video
    (whole,) = found.ranges
    assert (whole.start_s, whole.end_s) == (0.0, info.duration_s)
    assert whole.peak_score == max(w.score for w in windows)
    assert result.segments[0].frames == [whole.best_frame]
    assert [f.index for f in result.frames] == [whole.best_frame]  # only the ranges' pictures
    peak = next(w for w in windows if w.score == whole.peak_score)
    assert peak.start_s <= whole.best_time_s < peak.end_s
    assert len(result.sampling["frames"]) == 4 * 6
    d = result.to_dict()
    assert d["relevance"]["query"] == QUERY and len(d["relevance"]["windows"]) == 4
    assert d["mode"] == "windows" and d["prompt"]["calls"] == 4


def test_progress_hears_of_every_window_in_order(model, shots) -> None:
    heard: list[tuple[str, object]] = []
    result = find(shots, QUERY, model=model, window_s=2.0, per_call=3,
                  on_start=lambda spans: heard.append(("start", list(spans))),
                  on_window=lambda i, span, record: heard.append(("window", (i, span))))
    spans = [(w.start_s, w.end_s) for w in result.relevance.windows]
    assert heard == [("start", spans), *(("window", (i, s)) for i, s in enumerate(spans))]


def test_ranges_are_the_merge_of_the_scores(model, shots) -> None:
    plain = find(shots, QUERY, model=model, window_s=2.0).relevance
    threshold = sorted(w.score for w in plain.windows)[1]  # all but the lowest window
    found = find(shots, QUERY, model=model, window_s=2.0, threshold=threshold).relevance
    assert [w.score for w in found.windows] == [w.score for w in plain.windows]
    expected = merge_ranges(found.windows, threshold)
    assert [(r.start_s, r.end_s, r.peak_score) for r in found.ranges] == \
        [(r.start_s, r.end_s, r.peak_score) for r in expected]
    assert sum(r.end_s - r.start_s for r in found.ranges) == pytest.approx(6.0)


def test_batched_windows_score_as_one_at_a_time(model, shots) -> None:
    one = find(shots, QUERY, model=model, window_s=2.0, per_call=1).relevance.windows
    four = find(shots, QUERY, model=model, window_s=2.0, per_call=4).relevance.windows
    assert [w.answer for w in four] == [w.answer for w in one]
    assert [w.score for w in four] == pytest.approx([w.score for w in one], abs=1e-4)


def test_the_score_is_p_yes_of_a_direct_forward_pass(model, shots) -> None:
    """Re-derive the first window's score without the prefix cache, the batch or the letter
    code: one forward pass over the whole prompt, softmax over the best logits of the tokens
    that begin "yes" and "no"."""
    import torch

    rec = find_recipe(None, window_s=2.0)
    got = find(shots, QUERY, model=model, recipe=rec).relevance.windows[0]
    info = probe(shots)
    inputs = load_video(shots, rec, info=info, image_size=model.image_size)
    run = ModelRun(model, inputs, rec, [Asked(QUERY, None, rec)])
    window = load_video(shots, rec, info=info, span=(0.0, 2.0), image_size=model.image_size)
    task = run.fill("query", 6, query=QUERY, start="00:00", end="00:02")
    prompt, frames = run.prompt(window.groups[0], task, inputs=window)
    assert [f.index for f in frames] == got.frames
    with torch.inference_mode():
        logits = model.network(**model._to_device(model.encode(prompt.text, prompt.images))
                               ).logits[0, -1].float()
    tok = model.tokenizer

    def firsts(word: str) -> list[int]:
        ids = [tok(form, add_special_tokens=False)["input_ids"][0]
               for form in (word, " " + word, word.capitalize(), " " + word.capitalize())]
        return [i for i in ids if tok.decode([i]).strip()]  # not a bare space

    yes, no = (logits[firsts(w)].max() for w in ANSWER_WORDS)
    assert got.score == pytest.approx(float(torch.sigmoid(yes - no)), abs=1e-4)


def test_yes_and_no_tokens_are_found_on_a_tokenizer_that_splits_them(model) -> None:
    """The tiny tokenizer spells "yes" as "y" + "es" (SmolVLM's has whole-word tokens): the
    first pieces stand for the words, a bare leading space stands for neither, and the option
    letters keep their single tokens."""
    tok = model.tokenizer
    ids = model._letter_ids(ANSWER_WORDS)
    assert set(ids.values()) == set(ANSWER_WORDS)
    for i, word in ids.items():
        piece = tok.decode([i]).strip()
        assert piece and word.startswith(piece.lower())
    # option letters: exactly the spellings that are one token ("A", and " A" where it is one)
    single = {t[0]: letter for letter in "ABC" for form in (letter, " " + letter)
              if len(t := tok(form, add_special_tokens=False)["input_ids"]) == 1}
    assert model._letter_ids(["A", "B", "C"]) == single


def test_cli_writes_the_ranges_as_json_subtitles_and_a_report(model, shots, tiny_smolvlm,
                                                            tmp_path, capsys) -> None:
    scores = [w.score for w in find(shots, QUERY, model=model, window_s=2.0).relevance.windows]
    threshold = f"{sorted(scores)[2] - 1e-7:.9f}"  # the two best windows
    code, out, err = run_cli(capsys, "find", str(shots), QUERY, "--model", str(tiny_smolvlm),
                             "--quantize", "none", "--window", "2", "--threshold", threshold,
                             "-o", str(tmp_path))
    assert code == 0, err
    d = json.loads((tmp_path / "shots.json").read_text())
    ranges = d["relevance"]["ranges"]
    assert 1 <= len(ranges) <= 2 and out.count("peak") == len(ranges)
    subs = list(srt.parse((tmp_path / "shots.srt").read_text()))
    assert [(s.start.total_seconds(), s.end.total_seconds()) for s in subs] == \
        [(r["start_s"], r["end_s"]) for r in ranges]
    cues = webvtt.read(str(tmp_path / "shots.vtt"))
    assert len(cues) == len(ranges)
    page = (tmp_path / "shots.html").read_text()
    assert page.count("<svg") == 1 and page.count('class="range"') == len(ranges)
    assert page.count("data:image/jpeg;base64,") == len(ranges)  # each range's best frame
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_cli_says_when_nothing_reaches_the_threshold(shots, tiny_smolvlm, capsys) -> None:
    args = ["find", str(shots), QUERY, "--model", str(tiny_smolvlm), "--quantize", "none",
            "--window", "4", "--threshold", "1"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert out.startswith("no range above the threshold 1.00") and out.count("\n") == 1
    code, out, _ = run_cli(capsys, *args, "--json")
    assert code == 0 and json.loads(out)["relevance"]["ranges"] == []


@pytest.mark.parametrize(("args", "message"), [
    (["  "], "the query is empty"),
    (["a <end_of_utterance> car"], "control tokens"),
    (["a car", "--window", "0"], "--window must be a positive number"),
    (["a car", "--window", "-3"], "--window must be a positive number"),
    (["a car", "--threshold", "1.5"], "--threshold is a probability"),
    (["a car", "--recipe", "qa"], "not a 'find' one"),
])
def test_cli_bad_input_is_one_line_and_exit_2(shots, tiny_smolvlm, capsys, args, message) -> None:
    code, out, err = run_cli(capsys, "find", str(shots), *args, "--model", str(tiny_smolvlm),
                             "--quiet")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videovlm: error: ") and message in lines[0]


def test_run_takes_the_query_as_its_question_and_ask_refuses_find(shots, tiny_smolvlm,
                                                                   capsys) -> None:
    code, out, err = run_cli(capsys, "run", "find", str(shots), "-q", QUERY, "--model",
                             str(tiny_smolvlm), "--quantize", "none", "--quiet")
    assert code == 0, err
    found = json.loads(out)["relevance"]
    assert found["query"] == QUERY and found["windows"][-1]["end_s"] == probe(shots).duration_s
    code, out, err = run_cli(capsys, "ask", str(shots), "-q", QUERY, "--recipe", "find")
    assert code == 2 and out == "" and "videovlm find VIDEO QUERY" in err
    assert len(err.strip().splitlines()) == 1


def test_batch_runs_find_per_video_with_windows_of_videos_together(model, shots, tiny_smolvlm,
                                                                   tmp_path, capsys) -> None:
    """``batch --recipe find``: the CPU stage only probes, each video's windows are decoded in
    its model stage, and with ``--batch-size`` the videos' windows are answered together (one
    ask at a time per video, batched across videos): every score is the one it gets alone."""
    import shutil

    from tests.helpers import records

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(shots, folder / name)
    questions = tmp_path / "q.txt"
    questions.write_text(QUERY + "\n")
    alone = find(shots, QUERY, model=model).relevance.windows
    code, _, err = run_cli(capsys, "batch", str(folder), "-o", str(tmp_path / "out"), "--recipe",
                           "find", "--questions", str(questions), "--batch-size", "2",
                           "--model", str(tiny_smolvlm), "--quantize", "none", "--quiet")
    assert code == 0, err
    done = records(tmp_path / "out")
    assert len(done) == 2 and all(r["error"] is None for r in done)
    for r in done:
        windows = r["relevance"]["windows"]
        assert [(w["start_s"], w["end_s"]) for w in windows] == \
            [(w.start_s, w.end_s) for w in alone]
        assert [w["score"] for w in windows] == pytest.approx([w.score for w in alone], abs=1e-4)


def test_find_reads_the_windows_table_but_is_never_windowed_as_describe_is(shots) -> None:
    """find's window is the [windows] length_s (its --window), and a video past after_s still
    stages as one probe with no frames: find scores its own windows in the model stage."""
    rec = find_recipe(None, window_s=2.0)
    assert rec.windows["length_s"] == 2.0
    staged = stage_video(shots, rec.with_overrides(after_s=1.0), image_size=512)
    assert isinstance(staged, VideoInputs) and staged.frames == [] and staged.mode == "windows"
