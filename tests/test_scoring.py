"""Scoring an evaluation (:mod:`videovlm.scoring`): the t quantile and the clustered interval
against published figures and a recount, every question's state from real run records, and end
to end with the tiny checkpoint on clips of known content (which colour, which scene first): the
report's figures recounted here from predictions.jsonl, missing videos, --strict, eval-compare.

The tiny checkpoint's weights are random, so its letters are chance: the tests check that every
figure is what the predictions say, never that the model is right."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests import media
from tests.helpers import lines, records, run_cli, run_cli_output, write_questions
from videovlm.evaluate import (
    PREDICTIONS_NAME,
    REPORT_MD_NAME,
    REPORT_NAME,
    EvalItem,
    evaluate,
    load_eval_questions,
)
from videovlm.questions import QuestionsFileError
from videovlm.scoring import (
    BREAKDOWN_FIELDS,
    clustered_mean,
    figures,
    predictions,
    t_quantile,
)
from videovlm.text import extract_choice

# Student t, two-sided 95% (0.975 quantile), from published tables
T95 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 10: 2.2281, 30: 2.0423,
       100: 1.9840}


@pytest.mark.parametrize(("df", "t"), sorted(T95.items()))
def test_t_quantile_matches_the_tables(df: int, t: float) -> None:
    assert t_quantile(0.95, df) == pytest.approx(t, abs=1e-4)


def cr1(values: list[float], clusters: list[str]) -> tuple[float, float, float]:
    """The clustered interval written out here, with numpy and the tables' t: mean, low, high."""
    y, g = np.asarray(values, dtype=float), np.asarray(clusters)
    names = sorted(set(clusters))
    resid = np.array([(y[g == c] - y.mean()).sum() for c in names])
    k = len(names)
    se = math.sqrt(k / (k - 1) * float((resid ** 2).sum())) / len(y)
    return y.mean(), y.mean() - T95[k - 1] * se, y.mean() + T95[k - 1] * se


def test_clustered_interval_is_cr1_and_wider_than_independent_when_videos_agree() -> None:
    # each video's questions all right or all wrong: clustering must widen the interval
    values = [1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    clusters = ["a"] * 3 + ["b"] * 3 + ["c"] * 4 + ["d"] * 2
    est = clustered_mean(values, clusters)
    mean, low, high = cr1(values, clusters)
    assert (est.value, est.low, est.high) == pytest.approx((mean, max(0, low), min(1, high)))
    naive = 1.96 * math.sqrt(mean * (1 - mean) / len(values))
    assert est.high - est.low > 2 * naive
    assert clustered_mean([1, 0], ["a", "a"]).low is None  # one video: no interval
    assert clustered_mean([], []).value is None


def record(answers: list[tuple[str, str | None, str | None, str]]) -> dict:
    """A video's record as the batch writes it: (reply, choice, choice_source, logits letter)."""
    return {"error": None, "answers": [
        {"answer": raw, "choice": choice, "choice_source": source, "choice_logits": logit}
        for raw, choice, source, logit in answers]}


def test_each_question_gets_its_state_and_the_figures_count_them() -> None:
    opts = ("red", "green", "blue", "yellow")
    items = [EvalItem("1", "v1", "?", opts, "B", {"category": "colour"}),
             EvalItem("2", "v1", "?", opts, "C", {"category": "order"}),
             EvalItem("3", "v2", "?", opts, "A", {"category": "colour"}),
             EvalItem("4", "gone", "?", opts, "A", {"category": "colour"}),
             EvalItem("5", "later", "?", opts, "A", {})]
    records = {
        "v1": record([("B", "B", "text", "C"), ("zzz", "C", "logits", "C")]),
        "v2": record([("The answer is A", "A", "text", "A")]),
        "gone": {"error": {"type": "InputError", "message": "gone: no such file"}},
    }
    preds = predictions(items, records)
    assert [p["state"] for p in preds] == ["parsed", "unparseable", "parsed", "missing",
                                           "pending"]
    # the unparseable reply's logits letter is right: it counts for accuracy_logits only
    assert [(p["parsed"], p["logits"], p["correct"], p["correct_logits"]) for p in preds[:3]] == [
        ("B", "C", True, False), (None, "C", False, True), ("A", "A", True, True)]
    assert preds[3]["error"] == "InputError: gone: no such file" and preds[3]["correct"] is None
    f = figures(preds)
    assert (f["questions"], f["answered"], f["unparseable"], f["missing"], f["pending"]) == (
        5, 3, 1, 1, 1)
    assert f["accuracy"] == pytest.approx(2 / 3) and f["accuracy_logits"] == pytest.approx(2 / 3)
    assert f["accuracy_all"] == pytest.approx(2 / 4)  # the missing question counted wrong


# -- end to end ---------------------------------------------------------------------------------

COLOURS = ["red", "green", "blue", "yellow"]  # media.SHOT_COLOURS' first four


def colour_clip(path: Path, colour: int, then: int | None = None) -> Path:
    """A clip filled with ``COLOURS[colour]``, or that colour's scene and then ``then``'s.
    make_shots colours its k-th shot with colour k: shots that start before frame 0 (cut -1)
    shift the first visible one."""
    start = [-1] * colour + [0]
    if then is None:
        return media.make_shots(path, start, n_frames=8)
    assert then == colour + 1, "make_shots colours scenes in order"
    return media.make_shots(path, [*start, 6], n_frames=12)


def rotated(j: int) -> list[str]:
    """The colours as the j-th question's options: rotated, so gold letters vary (a model
    that always says D is right on some)."""
    shift = (3 * j + 1) % 4
    return COLOURS[shift:] + COLOURS[:shift]


def known_set(root: Path) -> tuple[Path, Path]:
    """Videos of known content and questions about them: which colour fills each one-colour
    clip, and which scene comes first/last in the two-scene ones; a category and a duration
    bucket on each; one video named that is not on disk. Gold answers are the options' text."""
    videos = root / "videos"
    videos.mkdir()
    qs = []
    for k in range(3):
        colour_clip(videos / f"{COLOURS[k]}.mp4", k)
        qs.append({"id": f"c{k}", "video": f"{COLOURS[k]}.mp4",
                   "question": "Which colour fills the picture?", "choices": rotated(len(qs)),
                   "answer": COLOURS[k], "category": "colour", "duration": "short"})
    for k in range(2):
        name = f"{COLOURS[k]}-then-{COLOURS[k + 1]}.mp4"
        colour_clip(videos / name, k, k + 1)
        for which, gold in (("first", k), ("last", k + 1)):
            qs.append({"id": f"o{k}{which}", "video": name,
                       "question": f"Which colour comes {which}?", "choices": rotated(len(qs)),
                       "answer": COLOURS[gold], "category": "order", "duration": "medium"})
    qs.append({"id": "m1", "video": "lost.mp4", "question": "Which colour?", "choices": COLOURS,
               "answer": "A", "category": "colour", "duration": "short"})
    return write_questions(root / "q.jsonl", qs), videos


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> tuple[Path, Path]:
    return known_set(tmp_path_factory.mktemp("known"))


@pytest.fixture(scope="module")
def model(tiny_idefics3):
    from videovlm.model import Model

    return Model.load(str(tiny_idefics3))


@pytest.fixture(scope="module")
def runs(known, model, tiny_smolvlm, tmp_path_factory) -> list[Path]:
    """The known set run twice: the Idefics3 checkpoint on 2 frames under videomme, the SmolVLM2
    one on 1 frame under cinepile (their random weights pick other letters: flips to count)."""
    from videovlm.model import Model

    qfile, videos = known
    items = load_eval_questions(qfile, videos)
    root = tmp_path_factory.mktemp("runs")
    out = []
    for m, n, protocol in ((model, 2, "videomme"), (Model.load(str(tiny_smolvlm)), 1,
                                                      "cinepile")):
        report = evaluate(items, videos, root / f"{protocol}{n}", m, protocol=protocol,
                          n=n, workers=1, progress=False)
        assert report.exit_code == 0  # the lost video is counted, not fatal
        out.append(root / f"{protocol}{n}")
    return out


def recount(preds: list[dict]) -> dict:
    """The report's figures, computed here from the predictions alone."""
    answered = [p for p in preds if p["state"] in ("parsed", "unparseable")]
    scored = [p for p in preds if p["state"] != "pending"]

    def acc(subset: list[dict], key: str) -> tuple[float, list[float] | None]:
        values = [float(bool(p[key])) for p in subset]
        videos = [p["video"] for p in subset]
        if len(set(videos)) < 2:
            return sum(values) / len(values), None
        mean, low, high = cr1(values, videos)
        return mean, [max(0.0, low), min(1.0, high)]

    out = {"questions": len(preds), "answered": len(answered),
           "unparseable": sum(p["state"] == "unparseable" for p in preds),
           "missing": sum(p["state"] == "missing" for p in preds),
           "correct": sum(bool(p["correct"]) for p in answered)}
    for name, subset, key in (("accuracy", answered, "correct"),
                              ("accuracy_logits", answered, "correct_logits"),
                              ("accuracy_all", scored, "correct")):
        out[name], out[f"{name}_interval"] = acc(subset, key)
    return out


def check_figures(got: dict, want: dict) -> None:
    for key, value in want.items():
        if key.endswith("_interval") and value is not None:  # the tables' t has 4 decimals
            assert got[key] == pytest.approx(value, abs=1e-4), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-5), key


@pytest.mark.slow
def test_report_figures_are_the_predictions_recounted(known, model, runs):
    qfile, videos = known
    out = runs[0]
    preds = lines(out / PREDICTIONS_NAME)
    assert [p["id"] for p in preds] == [i.id for i in load_eval_questions(qfile, videos)]
    for p in preds:
        assert p["fields"]["category"] in ("colour", "order")
        if p["state"] == "missing":
            assert p["video"] == "lost.mp4" and "no such file" in p["error"]
            continue
        # the stored letter is the answer rule read from the stored reply
        assert p["parsed"] == extract_choice(p["raw"], p["choices"])
        assert p["state"] == ("parsed" if p["parsed"] else "unparseable")
        assert p["logits"] in ("A", "B", "C", "D")
        assert p["correct"] == (p["parsed"] == p["answer"])
        assert p["correct_logits"] == (p["logits"] == p["answer"])
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved["report_file"] == str(out / REPORT_NAME)
    check_figures(saved, recount(preds))
    assert saved["missing"] == 1 and saved["missing_videos"] == [
        {"video": "lost.mp4", "questions": 1, "error": preds[-1]["error"]}]
    assert set(saved["breakdowns"]) == {"category", "duration"} <= set(BREAKDOWN_FIELDS)
    for key, groups in saved["breakdowns"].items():
        assert sum(g["questions"] for g in groups.values()) == len(preds)
        for value, got in groups.items():
            check_figures(got, recount([p for p in preds if p["fields"][key] == value]))
    assert saved["model"]["id"] == model.id and saved["model"]["dtype"] == model.dtype
    assert saved["model"]["revision"].startswith("config-sha256:")  # a local folder
    assert (saved["protocol"], saved["frames"]) == ("videomme", 2)
    assert saved["interval"]["level"] == 0.95 and "clustered by video" in saved["interval"][
        "method"]
    md = (out / REPORT_MD_NAME).read_text()
    assert "## By category" in md and "## Missing videos" in md and "`lost.mp4`" in md
    assert f"| all | {len(preds)} | {saved['answered']} |" in md


def test_strict_refuses_a_missing_video_and_no_video_at_all_is_refused(known, tmp_path):
    qfile, videos = known
    with pytest.raises(QuestionsFileError, match=r"'lost\.mp4' not found"):
        load_eval_questions(qfile, videos, strict=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(QuestionsFileError, match="none of its 6 videos"):
        load_eval_questions(qfile, empty)


def test_cli_missing_video_counted_strict_fails_before_the_model(known, tiny_idefics3,
                                                                 tmp_path, capsys):
    _, videos = known
    qfile = write_questions(tmp_path / "q.jsonl", [
        {"id": "1", "video": "red.mp4", "question": "Which colour?", "choices": COLOURS,
         "answer": "A"},
        {"id": "2", "video": "lost.mp4", "question": "Which colour?", "choices": COLOURS,
         "answer": "A"}])
    base = ["eval", str(qfile), "--videos", str(videos), "-n", "2", "--quiet"]
    rc, _, err = run_cli_output(capsys, *base, "-o", str(tmp_path / "s"), "--strict",
                                "--model", str(tmp_path / "no-model"))
    assert rc == 2 and "video 'lost.mp4' not found" in err and not (tmp_path / "s").exists()

    out = tmp_path / "run"
    rc, _, err = run_cli_output(capsys, *base, "-o", str(out), "--model", str(tiny_idefics3),
                                "--workers", "0")
    assert rc == 0
    report = json.loads((out / REPORT_NAME).read_text())
    first, last = err.strip().splitlines()[0], err.strip().splitlines()[-1]
    assert first == (f"videovlm: eval: 1 video not found in {videos} (1 question): counted "
                     "as missing (--strict refuses them)")
    # one video answered: no interval to give (it needs two)
    assert report["accuracy_interval"] is None
    assert last == (f"videovlm: eval: accuracy {report['accuracy']:.4f} ({report['correct']}/1)"
                    + (", 1 unparseable" if report["unparseable"] else "")
                    + f", 1 missing on 1 video(s) (all questions {report['accuracy_all']:.4f}) "
                    f"on videomme -> {out / REPORT_MD_NAME}")


def _red_and_cut(tmp_path: Path, asked: list[str]) -> tuple[Path, Path]:
    """A folder with a red clip and a cut one (a header, no frames) and a questions file with
    one question per name in ``asked``."""
    videos = tmp_path / "v"
    videos.mkdir()
    colour_clip(videos / "red.mp4", 0)
    media.truncate(videos / "red.mp4", videos / "cut.mp4", 0.3)
    qfile = write_questions(tmp_path / "q.jsonl", [
        {"id": str(i), "video": v, "question": "Which colour?", "choices": COLOURS,
         "answer": "A"} for i, v in enumerate(asked)])
    return videos, qfile


def test_cli_eval_retry_failed_answers_a_video_fixed_since(tiny_idefics3, tmp_path, capsys):
    videos, qfile = _red_and_cut(tmp_path, ["red.mp4", "cut.mp4"])
    out = tmp_path / "run"
    args = ["eval", str(qfile), "--videos", str(videos), "-o", str(out), "-n", "2", "--quiet",
            "--model", str(tiny_idefics3), "--workers", "0"]
    assert run_cli_output(capsys, *args)[0] == 0
    assert json.loads((out / REPORT_NAME).read_text())["missing"] == 1
    colour_clip(videos / "cut.mp4", 0)  # the file is whole now
    assert run_cli_output(capsys, *args)[0] == 0  # a plain rerun keeps the failure
    assert json.loads((out / REPORT_NAME).read_text())["missing"] == 1
    assert run_cli_output(capsys, *args, "--retry-failed")[0] == 0
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["missing"] == 0 and report["questions"] == 2
    assert [r["input"] for r in records(out)] == ["red.mp4", "cut.mp4"]


def test_a_video_that_fails_to_decode_is_missing_and_strict_makes_it_exit_1(model, tmp_path):
    videos, qfile = _red_and_cut(tmp_path, ["red.mp4", "cut.mp4", "cut.mp4"])
    items = load_eval_questions(qfile, videos, strict=True)  # on disk: strict lets it in
    loose = evaluate(items, videos, tmp_path / "a", model, n=2, workers=0, progress=False)
    assert loose.exit_code == 0
    assert (loose.summary["missing"], loose.summary["answered"]) == (2, 1)
    assert loose.summary["missing_videos"][0]["video"] == "cut.mp4"
    strict = evaluate(items, videos, tmp_path / "a", model, n=2, workers=0, progress=False,
                      strict=True)
    # resumed: nothing redone, and the recorded failure now fails the run
    assert strict.exit_code == 1 and strict.batch.failed_before == 1
    assert strict.summary["missing"] == 2


@pytest.mark.slow
def test_eval_compare_two_frame_counts_and_protocols(runs, capsys):
    rc, stdout, _ = run_cli_output(capsys, "eval-compare", str(runs[0]), str(runs[1]),
                                   "--json")
    assert rc == 0
    cmp = json.loads(stdout)
    a = {(p["id"], p["video"]): p for p in lines(runs[0] / PREDICTIONS_NAME)}
    b = {(p["id"], p["video"]): p for p in lines(runs[1] / PREDICTIONS_NAME)}
    both = [k for k in a if a[k]["state"] in ("parsed", "unparseable")
            and b[k]["state"] in ("parsed", "unparseable")]
    assert cmp["common"] == len(both) == 7 and cmp["not_answered_in_both"] == 1  # lost.mp4
    for name, key in (("accuracy", "correct"), ("accuracy_logits", "correct_logits")):
        c = cmp[name]
        diffs = [float(b[k][key]) - float(a[k][key]) for k in both]
        assert c["a"] == pytest.approx(sum(a[k][key] for k in both) / 7, abs=1e-6)
        assert c["difference"] == pytest.approx(sum(diffs) / 7, abs=1e-6)
        if any(diffs):
            _, low, high = cr1(diffs, [k[1] for k in both])
            assert c["interval"] == pytest.approx([max(-1, low), min(1, high)], abs=1e-4)
        flipped = c["flipped"]
        if key == "correct_logits":
            assert flipped["right_to_wrong"] or flipped["wrong_to_right"]  # something to check
        assert [f["id"] for f in flipped["right_to_wrong"]] == [
            k[0] for k in both if a[k][key] and not b[k][key]]
        assert [f["id"] for f in flipped["wrong_to_right"]] == [
            k[0] for k in both if b[k][key] and not a[k][key]]

    rc, stdout, _ = run_cli_output(capsys, "eval-compare", str(runs[0]), str(runs[1]))
    assert rc == 0 and "common questions: 7 on 5 videos (1 not answered in both: left out)" \
        in stdout
    assert f"accuracy: A {100 * cmp['accuracy']['a']:.1f}%" in stdout
    flips = cmp["accuracy_logits"]["flipped"]["wrong_to_right"]
    assert f"wrong in A, right in B, by the logits letter ({len(flips)}):" in stdout
    assert all(f"  {f['id']}  {f['video']}  gold {f['answer']}" in stdout for f in flips)


def test_eval_compare_refuses_what_it_cannot_compare(known, model, tmp_path, capsys):
    qfile, videos = known
    rc, _, err = run_cli_output(capsys, "eval-compare", str(tmp_path), str(tmp_path))
    assert rc == 2 and err.count("\n") == 1 and "is not a videovlm eval output folder" in err
    items = load_eval_questions(qfile, videos)
    evaluate(items[:1], videos, tmp_path / "one", model, n=2, workers=0, progress=False)
    evaluate(items[1:2], videos, tmp_path / "two", model, n=2, workers=0, progress=False)
    rc, _, err = run_cli_output(capsys, "eval-compare", str(tmp_path / "one"),
                                str(tmp_path / "two"))
    assert rc == 2 and err.count("\n") == 1 and "no question answered in both" in err
    assert run_cli(["eval-compare", str(tmp_path / "one"), str(tmp_path / "one")]) == 0
