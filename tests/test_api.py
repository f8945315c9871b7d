"""The Python API on real (tiny, random-weight) checkpoints: describe, ask, the two stages, budget.

Random weights write gibberish, so these tests check structure and contracts (times inside the
video, token counts equal to what the network received, frames by the selection rule, one answer
per question, letters always valid), not the words.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import EncodedFrames
from videovlm.api import VideoInputs, ask, describe, load_video, option_texts, run_model
from videovlm.decode import decode
from videovlm.errors import RecipeError, VideoVLMError
from videovlm.pack import OverBudget, build_prompt, timestamp_text
from videovlm.pipelines import load_recipe
from videovlm.plan import plan
from videovlm.prepare import prepare
from videovlm.probe import probe

ROOT = Path(__file__).resolve().parent.parent
BIKES = str(ROOT / "samples" / "bikes.mp4")


def fast_recipe(tmp: Path, base: str, max_new_tokens: int = 6) -> Path:
    """A built-in recipe with short answers: random weights never stop on their own."""
    path = tmp / f"fast_{base}.toml"
    path.write_text(f'extends = "{base}"\n[generation]\nmax_new_tokens = {max_new_tokens}\n')
    return path


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("recipes")
    return {name: fast_recipe(tmp, name) for name in ("describe", "timeline", "qa", "mcq")}


@pytest.fixture(scope="module")
def idefics3(tiny_idefics3):
    from videovlm.model import Model

    return Model.load(str(tiny_idefics3), cache=False)  # each test counts its own encodings


@pytest.fixture(scope="module")
def smolvlm(tiny_smolvlm):
    from videovlm.model import Model

    return Model.load(str(tiny_smolvlm), cache=False)


class PrefillLengths:
    """Records the length of every prompt with frames the network is actually run on (a
    forward hook): its first prefill pass, plus the passes that continue it from its cache (the
    rest of a long head, the question and the turn's end), up to the first decoding step."""

    def __init__(self, model) -> None:
        self.lengths: list[int] = []
        self._continues = False
        self.handle = model.network.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None:
            return
        images = kwargs.get("pixel_values") is not None or kwargs.get("mm_encoder_outputs")
        cache = kwargs.get("cache")
        fresh = cache is None or cache.get_seq_length() == 0
        if images and fresh:  # a prompt with frames begins
            self.lengths.append(int(ids.shape[1]))
            self._continues = True
        elif self._continues and ids.shape[1] > 1:  # more of it (a chunk, the question)
            self.lengths[-1] += int(ids.shape[1])
        else:  # a decoding step: the prompt is complete
            self._continues = False

    def __enter__(self) -> PrefillLengths:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def _check_common(d: dict, info, model) -> None:
    for key in ("schema_version", "videovlm_version", "created_at", "video", "sampling", "model",
                "prompt", "generation", "segments", "summary", "answers", "timing_s", "error"):
        assert key in d
    assert d["video"]["duration_s"] == pytest.approx(info.duration_s)
    s = d["sampling"]
    assert {"backend", "requested", "seek", "frames", "image_size", "fit"} <= set(s)
    assert s["backend"] != "auto" and s["image_size"] == model.image_size
    times = [f["time_s"] for f in s["frames"]]
    assert times == sorted(times) and all(0 <= t < info.duration_s for t in times)
    assert 1 <= len(s["frames"]) <= s["requested"]
    assert d["model"]["id"] == model.id
    assert 0 < d["prompt"]["tokens"] <= d["prompt"]["budget"]
    assert d["prompt"]["budget"] == model.context - d["generation"]["max_new_tokens"]
    assert {"probe", "decode", "prepare", "generate", "total"} <= set(d["timing_s"])
    parts = sum(v for k, v in d["timing_s"].items() if k != "total")
    assert d["timing_s"]["total"] == pytest.approx(parts, abs=1e-3)
    assert d["error"] is None


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_timeline_describe_fields_and_token_count(family, recipes, request) -> None:
    model = request.getfixturevalue(family)
    info = probe(BIKES)
    with PrefillLengths(model) as seen, EncodedFrames(model) as vision:
        r = describe(BIKES, model=model, mode="timeline", recipe=str(recipes["timeline"]))
    d = r.to_dict()
    _check_common(d, info, model)
    assert d["mode"] == "timeline"
    # the summary is written from the timeline's text: the frames are encoded once, not twice
    assert isinstance(d["summary"], str) and d["summary"] == r.summary
    assert vision.frames == len(d["sampling"]["frames"])  # each frame encoded once
    # the frames are the selection rule's for the requested count
    assert [f["index"] for f in d["sampling"]["frames"]] == [x.index for x in plan(info, 50)]
    # the count in the JSON is what the network was really given
    assert seen.lengths == [d["prompt"]["tokens"]]
    assert d["segments"] and all(
        0 <= s["start_s"] < s["end_s"] <= info.duration_s for s in d["segments"])
    if not d["segments_parsed"]:
        assert len(d["segments"]) == 1 and r.warnings
    assert len(r.frames) == len(d["sampling"]["frames"])


def test_timeline_recipe_without_a_summary_still_runs(idefics3, tmp_path) -> None:
    shipped = load_recipe("timeline").prompts
    path = tmp_path / "no_summary.toml"
    path.write_text(f'task = "timeline"\n[generation]\nmax_new_tokens = 6\n[prompts]\n'
                    f'intro = {json.dumps(shipped["intro"])}\n'
                    f'task = {json.dumps(shipped["task"])}\n')
    assert "summary" not in load_recipe(str(path)).prompts
    r = describe(BIKES, model=idefics3, mode="timeline", n=8, recipe=str(path))
    d = r.to_dict()
    assert d["mode"] == "timeline" and d["segments"]
    assert d["summary"] is None


def test_scene_mode_segments_are_the_scenes(idefics3, recipes) -> None:
    from videovlm.scenes import detect_scenes

    info = probe(BIKES)
    rec = load_recipe(str(recipes["describe"]))
    with PrefillLengths(idefics3) as seen:
        r = describe(BIKES, model=idefics3, recipe=rec, n=15)
    d = r.to_dict()
    _check_common(d, info, idefics3)
    scenes = detect_scenes(info, **rec.scenes, max_scenes=15)
    assert len(scenes) > 1
    assert [(s["start_s"], s["end_s"]) for s in d["segments"]] == scenes
    assert d["segments"][0]["start_s"] == 0.0
    assert d["segments"][-1]["end_s"] == pytest.approx(info.duration_s)
    times = {f["index"]: f["time_s"] for f in d["sampling"]["frames"]}
    for seg in d["segments"]:
        assert seg["frames"], "every scene gets at least one frame"
        assert all(seg["start_s"] <= times[i] < seg["end_s"] for i in seg["frames"])
    assert sum(len(s["frames"]) for s in d["segments"]) == len(d["sampling"]["frames"]) <= 15
    # one prompt per scene, each counted exactly, then the text-only summary
    assert d["prompt"]["calls"] == len(scenes) == len(seen.lengths)
    assert max(seen.lengths) == d["prompt"]["tokens"]
    assert sum(seen.lengths) == d["prompt"]["total_tokens"]
    assert isinstance(d["summary"], str)
    assert "scenes" in d["timing_s"]


def test_cpu_stage_is_picklable_and_model_stage_reuses_it(idefics3, recipes) -> None:
    rec = load_recipe(str(recipes["timeline"]))
    inputs = load_video(BIKES, rec, n=8, image_size=idefics3.image_size)
    assert isinstance(inputs, VideoInputs)
    again = pickle.loads(pickle.dumps(inputs))
    assert [f.index for f in again.frames] == [f.index for f in inputs.frames]
    assert again.images[0].shape == (idefics3.image_size, idefics3.image_size, 3)
    r = run_model(idefics3, again, rec)
    assert len(r.sampling["frames"]) == 8
    assert r.timing_s["decode"] == pytest.approx(inputs.timing_s["decode"], abs=1e-3)


def test_wrong_image_size_is_refused(smolvlm, recipes) -> None:
    rec = load_recipe(str(recipes["timeline"]))
    inputs = load_video(BIKES, rec, n=2, image_size=384)
    with pytest.raises(VideoVLMError, match="image_size"):
        run_model(smolvlm, inputs, rec)


def test_over_budget_replans_with_the_selection_rule_and_warns(tmp_path, recipes, caplog) -> None:
    from videovlm.model import Model
    from videovlm.testing import make_checkpoint

    small = Model.load(str(make_checkpoint(tmp_path / "ctx", "smolvlm", "tiny", context=2048)))
    info = probe(BIKES)
    with caplog.at_level("WARNING", logger="videovlm"), PrefillLengths(small) as seen:
        r = describe(BIKES, model=small, mode="timeline", n=200, recipe=str(recipes["timeline"]))
    d = r.to_dict()
    k = len(d["sampling"]["frames"])
    assert 1 < k < 200
    assert d["sampling"]["requested"] == 200
    assert [f["index"] for f in d["sampling"]["frames"]] == [x.index for x in plan(info, k)]
    assert seen.lengths == [d["prompt"]["tokens"]]
    assert d["prompt"]["tokens"] <= d["prompt"]["budget"] == 2048 - 6
    assert any("re-planned with" in w and f"{k} frames" in w for w in r.warnings)
    assert any("re-planned" in rec.message for rec in caplog.records)
    # one more frame would not have fitted: the count is the largest that fits
    rec = load_recipe(str(recipes["timeline"]))
    frames = decode(info, plan(info, k + 1))
    stamp = timestamp_text(info.duration_s)
    with pytest.raises(OverBudget):
        build_prompt(small, frames, prepare(frames, small.image_size),
                     rec.prompt("task", n_frames=k + 1, duration=stamp),
                     intro=rec.prompt("intro", n_frames=k + 1, duration=stamp),
                     max_new_tokens=6)


def test_ask_answers_every_question_reusing_one_prefix(idefics3, recipes) -> None:
    qs = ["What is happening?", "How many people are there?", "What colour is the sky?"]
    with PrefillLengths(idefics3) as seen:
        r = ask(BIKES, qs, model=idefics3, n=8, recipe=str(recipes["qa"]))
    assert [a.question for a in r.answers] == qs
    assert all(isinstance(a.answer, str) and a.choice is None for a in r.answers)
    assert len(seen.lengths) == 1, "the frames are encoded once for all questions"
    assert r.mode == "ask" and not r.segments


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_multiple_choice_always_gives_a_valid_letter(family, recipes, request) -> None:
    model = request.getfixturevalue(family)
    choices = ["A. a red car", "B. people riding bicycles", "C. a cat sleeping", "D. snow"]
    r = ask(BIKES, ["What is shown?", "What moves?"], choices=choices, model=model, n=8,
            recipe=str(recipes["mcq"]))
    assert len(r.answers) == 2
    for a in r.answers:
        assert a.choices == ["a red car", "people riding bicycles", "a cat sleeping", "snow"]
        assert a.choice in ("A", "B", "C", "D")


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_multiple_choice_encodes_the_video_once(family, recipes, request) -> None:
    """Three questions, answers that name no letter: the letters come from the same encoding.

    Random weights ramble without a letter, so every choice here is the letter-logits one
    (``choice_source == "logits"``); before, that fallback ran the questions again and encoded
    the frames a second time. All three questions fit one batch of the cached prefix: one vision
    pass.
    """
    model = request.getfixturevalue(family)
    qs = ["What is shown?", "What moves?", "Where is this?"]
    with EncodedFrames(model) as vision, PrefillLengths(model) as seen:
        r = ask(BIKES, qs, choices=["a red car", "bicycles", "a cat"], model=model, n=8,
                recipe=str(recipes["mcq"]))
    assert vision.frames == len(r.sampling["frames"]) == 8
    assert len(seen.lengths) == 1
    assert any(a.choice_source == "logits" for a in r.answers), \
        "the no-letter path must be the one exercised"
    assert [a.question for a in r.answers] == qs
    assert all(a.choice in ("A", "B", "C") for a in r.answers)


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_mixed_questions_share_one_encoding_and_record_each_answers_settings(
        family, recipes, request, tmp_path) -> None:
    """Open and multiple-choice questions on one video, each kind under its own recipe (qa
    and mcq, as a questions file mixes them): the vision tower runs once, every answer is in
    one record, and each answer says which recipe and generation settings made it."""
    model = request.getfixturevalue(family)
    qa = load_recipe(str(recipes["qa"]))
    mcq = load_recipe(str(fast_recipe(tmp_path, "mcq", max_new_tokens=3)))
    inputs = load_video(BIKES, qa, n=6, image_size=model.image_size)
    with EncodedFrames(model) as vision, PrefillLengths(model) as seen:
        r = run_model(model, inputs, qa, choice_recipe=mcq,
                      questions=["What moves?", "Where is this?", "Who rides?"],
                      question_choices=[None, ["a street", "a beach"], ["A. kids", "B. nobody",
                                                                         "C. a dog"]])
    assert vision.frames == len(r.sampling["frames"]) and len(seen.lengths) == 1
    d = r.to_dict()
    assert [a["question"] for a in d["answers"]] == ["What moves?", "Where is this?",
                                                      "Who rides?"]
    open_, two, three = d["answers"]
    assert open_["choice"] is None and "choice_source" not in open_
    assert open_["recipe"] == qa.name and open_["generation"]["max_new_tokens"] == 6
    assert two["recipe"] == three["recipe"] == mcq.name
    assert two["generation"]["max_new_tokens"] == 3 and two["choice"] in ("A", "B")
    assert three["choices"] == ["kids", "nobody", "a dog"] and three["choice"] in "ABC"
    assert {two["choice_source"], three["choice_source"]} <= {"text", "logits"}
    # the prefix has room for the longest answer of either recipe
    assert d["prompt"]["budget"] == model.context - 6
    # one recipe for all questions: no per-answer settings, as before
    same = run_model(model, inputs, mcq, questions=["Where?"], choices=["a", "b"])
    assert "recipe" not in same.to_dict()["answers"][0]
    # only multiple-choice questions, asked under the choice recipe: the answers say so
    only = run_model(model, inputs, qa, choice_recipe=mcq, questions=["Where?"],
                     choices=["a", "b"]).to_dict()["answers"][0]
    assert only["recipe"] == mcq.name and only["generation"]["max_new_tokens"] == 3


def test_option_labels_are_ours() -> None:
    assert option_texts(["A. red", "B) blue", "(C) green"]) == ["red", "blue", "green"]
    assert option_texts(["red", "blue"]) == ["red", "blue"]
    # a label that is not the option's position is text, not a label
    assert option_texts(["B. red", "A. blue"]) == ["B. red", "A. blue"]


def test_user_mistakes_are_one_line_errors(idefics3, recipes, tmp_path) -> None:
    with pytest.raises(VideoVLMError, match="at least one non-empty question"):
        ask(BIKES, [""], model=idefics3)
    with pytest.raises(VideoVLMError, match="at least two"):
        ask(BIKES, ["q?"], choices=["only one"], model=idefics3)
    with pytest.raises(VideoVLMError, match="unknown mode"):
        describe(BIKES, model=idefics3, mode="chapters")
    with pytest.raises(RecipeError):
        describe(BIKES, model=idefics3, n=0)
    with pytest.raises(VideoVLMError):
        describe(str(tmp_path / "missing.mp4"), model=idefics3, recipe=str(recipes["timeline"]))
    # the model's control tokens in a question would be read as markup (an extra image slot)
    with pytest.raises(VideoVLMError, match="control tokens"):
        ask(BIKES, ["what is <image> here?"], model=idefics3, n=2)
    with pytest.raises(VideoVLMError, match="at most 26"):
        option_texts([f"option {i}" for i in range(27)])


def test_import_videovlm_stays_light() -> None:
    code = ("import sys, videovlm; assert 'torch' not in sys.modules; "
            "m = videovlm.Model; d = videovlm.describe; a = videovlm.ask; "
            "assert 'torch' not in sys.modules; print(m.__name__, d.__name__, a.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["Model", "describe", "ask"]
