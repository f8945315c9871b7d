"""Dialogue: subtitles found, timed on the frames' clock, shown after the right frames within
the budget, and carried into the results and reports.

Every clip is made here with PyAV (tests/media.py): its first frame is at 7.5 s on the
container's clock, so an offset applied twice or not at all moves every cue by 7.5 s. Cue
times are the test's own numbers; which frame a cue must follow is worked out here from the
selection rule's slices (equal parts of the duration), independently of videovlm's code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests import media
from tests.helpers import run_cli
from tests.media import Track
from videovlm.api import run_model
from videovlm.dialogue import (
    Cue,
    DialogueSettings,
    assign_cues,
    clean_text,
    find_dialogue,
    frame_slices,
    read_subtitle_file,
)
from videovlm.errors import InputError, RecipeError
from videovlm.model import Model
from videovlm.pipelines import load_recipe
from videovlm.probe import probe
from videovlm.run import ModelRun
from videovlm.video import load_video
from videovlm.writers import WRITERS

START = 7.5  # the first frame's time on the container's clock
FPS, FRAMES = 10, 30  # 3.0 s
N = 6  # frames asked for: slices of 0.5 s, one distinct frame each
SLICE = FRAMES / FPS / N

# (start_s, end_s, text) on the frames' clock; none overlap (MP4 timed text cannot)
CUES = [(0.1, 0.4, "alpha one"), (0.6, 1.3, "bravo two three"), (1.35, 1.45, "charlie"),
        (2.6, 2.9, "delta four"), (3.5, 4.0, "after the end")]
FRENCH = [(0.2, 0.9, r"{\i1}bonjour{\i0} à tous\Nla suite"), (1.6, 2.2, "au revoir")]


def subtitle_text(cues, vtt: bool = False) -> str:
    """A SubRip file of ``cues`` (numbered, ``00:00:01,500``), or WebVTT (``00:00:01.500``)."""
    def t(s: float) -> str:
        ms = round(s * 1000)
        return (f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}"
                f"{'.' if vtt else ','}{ms % 1000:03d}")

    body = "".join(("" if vtt else f"{i}\n") + f"{t(a)} --> {t(b)}\n{text}\n\n"
                   for i, (a, b, text) in enumerate(cues, 1))
    return ("WEBVTT\n\n" if vtt else "") + body


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MP4 with a mov_text stream; MKV with SubRip (English) and ASS (French, default)
    streams; an MP4 without streams whose subtitles are sidecars (plain SRT, French VTT)."""
    d = tmp_path_factory.mktemp("dialogue")
    kw = {"n_frames": FRAMES, "fps": FPS, "start_pts_s": START, "gop": 10}
    mp4 = media.make_video(d / "timed.mp4", **kw, subtitles=[Track("mov_text", CUES, "eng")])
    mkv = media.make_video(d / "two.mkv", **kw, subtitles=[
        Track("subrip", [(a, b, f"<i>{t}</i>") for a, b, t in CUES], "eng"),
        Track("ass", FRENCH, "fre", default=True)])
    (d / "side").mkdir()
    side = media.make_video(d / "side" / "clip.mp4", **kw)
    (d / "side" / "clip.srt").write_text(subtitle_text(CUES), encoding="utf-8")
    french = [(a, b, "<v Ann>" + t) for a, b, t in FRENCH[1:]]
    (d / "side" / "clip.fr.vtt").write_text(subtitle_text(french, vtt=True), encoding="utf-8")
    garbled = d / "garbled.srt"
    garbled.write_text("this is not\nSubRip at all\n", encoding="utf-8")
    return {"mp4": mp4, "mkv": mkv, "side": side, "garbled": garbled, "dir": d}


def dialogue_of(path: Path, **settings) -> object:
    return find_dialogue(path, probe(path), DialogueSettings(**settings))


def texts(cues) -> list[str]:
    return [c.text for c in cues]


# -- finding and timing ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mp4", "mkv", "side"])
def test_cues_are_on_the_frames_clock(clips, name):
    """The 7.5 s offset is applied to streams (and not to a sidecar, timed from playback's
    start): every cue comes back at the time it was written, markup stripped."""
    lang = {"mkv": "en"}.get(name)
    d = dialogue_of(clips[name], subtitle_lang=lang)
    assert probe(clips[name]).start_s == pytest.approx(START)
    assert [t for c in d.cues for t in (c.start_s, c.end_s)] == pytest.approx(
        [t for a, b, _ in CUES for t in (a, b)], abs=1e-6)
    assert texts(d.cues) == [t for _, _, t in CUES]
    assert d.source["kind"] == ("sidecar" if name == "side" else "stream")


def test_language_picks_among_streams_and_sidecars(clips):
    mkv = dialogue_of(clips["mkv"])  # no language asked: the default-flagged stream
    assert mkv.source["language"] == "fr" and mkv.source["format"] == "ssa"
    assert texts(mkv.cues) == ["bonjour à tous la suite", "au revoir"]
    assert mkv.source["found"] == ["stream 2 (fr)", "stream 1 (en)"]
    for tag in ("en", "eng", "en-GB"):
        assert dialogue_of(clips["mkv"], subtitle_lang=tag).source["stream"] == 1
    side = dialogue_of(clips["side"])  # the plain sidecar first
    assert Path(side.source["path"]).name == "clip.srt" and side.source["language"] is None
    fr = dialogue_of(clips["side"], subtitle_lang="fra")
    assert Path(fr.source["path"]).name == "clip.fr.vtt"
    assert texts(fr.cues) == ["au revoir"]  # the <v Ann> voice tag stripped
    with pytest.raises(InputError) as exc:
        dialogue_of(clips["mkv"], subtitle_lang="de")
    assert str(exc.value).count("\n") == 0
    assert "no subtitles in de; found" in str(exc.value)
    assert "found stream 2 (fr), stream 1 (en):" in str(exc.value)


def test_none_and_a_named_file(clips):
    assert dialogue_of(clips["mkv"], subtitles="none") is None
    assert dialogue_of(clips["dir"] / "timed.mp4", subtitles="none") is None
    named = dialogue_of(clips["mkv"], subtitles=str(clips["side"].with_suffix(".srt")))
    assert named.source["kind"] == "file" and texts(named.cues) == [t for _, _, t in CUES]
    plain = media.make_video(clips["dir"] / "plain.mp4", n_frames=10)
    assert dialogue_of(plain) is None  # nothing found: no dialogue, no error


@pytest.mark.parametrize(("file", "says"), [
    ("missing.srt", "no such file"), ("garbled.srt", "not valid SubRip"),
    ("notes.txt", "unknown format .txt"), ("empty.vtt", "not valid WebVTT"),
])
def test_bad_subtitle_files_are_one_line(clips, file, says):
    path = clips["dir"] / file
    if file in ("notes.txt", "empty.vtt"):
        path.write_text("", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        read_subtitle_file(path)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_clean_text_strips_markup_and_control_tokens():
    assert clean_text("<i>Hi</i> <font color='red'>there</font>") == "Hi there"
    assert clean_text(r"{\an8}{\i1}top{\i0}\Nnext\hword") == "top next word"
    assert clean_text("Tom &amp; Jerry <image><end_of_utterance>") == "Tom & Jerry"
    assert clean_text("  \n ") == ""


def test_a_language_tag_is_checked_when_the_recipe_loads():
    assert load_recipe("qa").with_overrides(subtitle_lang="eng").dialogue["subtitle_lang"] == "en"
    with pytest.raises(RecipeError, match="not a language tag"):
        load_recipe("qa").with_overrides(subtitle_lang="english please")


# -- which cue goes after which frame ----------------------------------------------------------


def test_slices_follow_the_selection_rule():
    times = [0.2, 0.7, 1.2, 1.7, 2.2, 2.7]
    def flat(slices):
        return [t for pair in slices for t in pair]

    assert flat(frame_slices(times, 0.0, 3.0, 6)) == pytest.approx(
        flat((i * 0.5, (i + 1) * 0.5) for i in range(6)))
    # a frozen frame on screen through four slices stands for all four
    assert flat(frame_slices([0.0, 1.9], 0.0, 3.0, 6)) == pytest.approx([0.0, 2.0, 2.0, 3.0])
    cues = [Cue(0.4, 0.6, "spans two"), Cue(2.4, 2.5, "b"), Cue(3.2, 3.4, "outside")]
    got = assign_cues(cues, frame_slices(times, 0.0, 3.0, 6))
    assert [texts(c) for c in got] == [["spans two"], [], [], [], ["b"], []]


def expected_after_frames() -> list[list[str]]:
    """Per frame, the cues that must follow it: each cue after the first 0.5 s slice it
    overlaps (the frames are 0.5 s apart, one per slice), none past the end."""
    out: list[list[str]] = [[] for _ in range(N)]
    for a, b, text in CUES:
        first = math.floor(a / SLICE)
        if first < N and b > 0:
            out[first].append(text)
    return out


def dialogue_after_frames(prompt_text: str, label: str = "Dialogue: ") -> list[list[str]]:
    """The dialogue lines the prompt puts after each image, read from its text."""
    out = []
    for part in prompt_text.split("<image>")[1:]:
        part = part.split("\nFrame from")[0].split("\n\n")[0]
        out.append(part[len("\n" + label):].split("\n") if part.startswith("\n" + label) else [])
    return out


@pytest.fixture(scope="module")
def model(tiny_idefics3) -> Model:
    return Model.load(str(tiny_idefics3))


def timeline(**overrides):
    return load_recipe("timeline").with_overrides(n=N, max_new_tokens=4, **overrides)


@pytest.mark.parametrize("name", ["mp4", "mkv", "side"])
def test_dialogue_follows_the_frames_it_is_said_during(clips, model, name):
    rec = timeline(subtitle_lang="en" if name == "mkv" else None)
    inputs = load_video(clips[name], rec, image_size=model.image_size)
    run = ModelRun(model, inputs, rec)
    prompt, frames = run.prompt(inputs.whole(), "Describe.")
    assert [f.time_s for f in frames] == pytest.approx([0.2 + i * SLICE for i in range(N)])
    assert dialogue_after_frames(prompt.text) == [[t for t in cues]
                                                  for cues in expected_after_frames()]
    # the count is exact (the stock processor's) and within the budget
    stock = model.encode_with_processor(prompt.text, prompt.images)["input_ids"].shape[1]
    assert prompt.tokens == stock <= prompt.budget
    # the prefix holds every frame's dialogue but the last frame's, which opens the tail
    assert "Dialogue: delta four" in prompt.tail and "Dialogue: bravo" in prompt.head
    assert prompt.head + prompt.tail_for("Describe.") == prompt.text


def test_results_carry_the_transcript_and_its_source(clips, model, tmp_path):
    rec = timeline()
    inputs = load_video(clips["mp4"], rec, image_size=model.image_size)
    result = run_model(model, inputs, rec)
    d = result.to_dict()
    assert d["dialogue"]["kind"] == "stream" and d["dialogue"]["language"] == "en"
    assert d["dialogue"]["cues"] == len(CUES) and d["dialogue"]["in_prompt"] == len(CUES) - 1
    for seg in d["segments"]:
        said = [c["text"] for c in seg["transcript"]]
        assert said == [t for a, b, t in CUES if a < seg["end_s"] and b > seg["start_s"]]
        assert all(c.keys() == {"start_s", "end_s", "text"} for c in seg["transcript"])
    files = {}
    for fmt in ("md", "html", "srt"):
        files.update(WRITERS[fmt].render(result, "timed"))
    md, html = files["timed.md"].decode(), files["timed.html"].decode()
    assert "> **Dialogue**" in md and "`00:00.6` bravo two three" in md
    assert '<div class="transcript"' in html and "bravo two three" in html
    assert "bravo" not in files["timed.srt"].decode()  # SRT/VTT stay the descriptions


def test_scene_mode_gives_each_scene_its_own_dialogue(tmp_path, model):
    """Three shots of 1 s; a sidecar whose middle cue crosses the first cut: each scene's
    prompt holds only the cues that overlap it, and so does its segment's transcript."""
    clip = media.make_shots(tmp_path / "shots.mp4", cuts=[0, 25, 50], n_frames=75,
                            start_pts_s=START)
    cues = [(0.2, 0.5, "first scene"), (0.9, 1.2, "across the cut"), (2.3, 2.6, "last scene")]
    (tmp_path / "shots.srt").write_text(subtitle_text(cues), encoding="utf-8")
    rec = load_recipe("describe").with_overrides(n=6, max_new_tokens=4)
    inputs = load_video(clip, rec, image_size=model.image_size)
    assert len(inputs.groups) == 3
    run = ModelRun(model, inputs, rec)
    for group in inputs.groups:
        prompt, _ = run.prompt(group, "Describe.")
        shown = [t for lines in dialogue_after_frames(prompt.text) for t in lines]
        assert shown == [t for a, b, t in cues if a < group.end_s and b > group.start_s]
    result = run_model(model, inputs, rec)
    assert [texts(s.transcript) for s in result.segments] == [
        ["first scene", "across the cut"], ["across the cut"], ["last scene"]]


# -- the budget --------------------------------------------------------------------------------

LONG = [(a, b, " ".join(f"{t.split()[0]}{k}" for k in range(12))) for a, b, t in CUES[:4]]
"""Dialogue that costs about half of what the frames cost: fewer frames can make room."""


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("long")
    return media.make_video(d / "talk.mkv", n_frames=FRAMES, fps=FPS, start_pts_s=START,
                            subtitles=[Track("subrip", LONG, "eng")])


def tokens_with_and_without(model, clip) -> tuple[int, int]:
    counts = []
    for subs in ("auto", "none"):
        rec = timeline(subtitles=subs)
        inputs = load_video(clip, rec, image_size=model.image_size)
        counts.append(ModelRun(model, inputs, rec).prompt(inputs.whole(), "Describe.")[0].tokens)
    return counts[0], counts[1]


def test_over_budget_fewer_frames_keeps_all_the_dialogue(model, long_clip, caplog):
    full, frames_only = tokens_with_and_without(model, long_clip)
    room = model.context - (full + frames_only) // 2  # the frames fit, their dialogue does not
    rec = timeline(over_budget="fewer_frames")
    inputs = load_video(long_clip, rec, image_size=model.image_size)
    run = ModelRun(model, inputs, rec)
    prompt, frames = run.prompt(inputs.whole(), "Describe.", max_new_tokens=room)
    assert 1 <= len(frames) < N and prompt.tokens <= prompt.budget == model.context - room
    assert prompt.tokens == model.count_tokens(prompt.text)
    shown = [t for lines in dialogue_after_frames(prompt.text) for t in lines]
    assert shown == [t for _, _, t in LONG]  # every cue, whole, once, in order
    assert "re-planned with" in caplog.text and "fewer_frames" in caplog.text


def test_over_budget_trim_keeps_the_frames(model, long_clip, caplog):
    full, frames_only = tokens_with_and_without(model, long_clip)
    room = model.context - (full + frames_only) // 2
    rec = timeline(over_budget="trim")
    inputs = load_video(long_clip, rec, image_size=model.image_size)
    run = ModelRun(model, inputs, rec)
    prompt, frames = run.prompt(inputs.whole(), "Describe.", max_new_tokens=room)
    assert len(frames) == N and prompt.tokens <= prompt.budget
    assert prompt.tokens == model.count_tokens(prompt.text)
    shown = [line for lines in dialogue_after_frames(prompt.text) for line in lines]
    assert len(shown) == 4 and all(line.endswith(" …") for line in shown)  # each cut, none lost
    words = len(shown[0].split()) - 1
    assert all(len(line.split()) - 1 == words for line in shown)  # the same cut for every frame
    # the largest cut that fits: one more word per frame would not have fitted
    longer = prompt.text
    for line, (_, _, text) in zip(shown, LONG, strict=True):
        longer = longer.replace(line, " ".join(text.split()[:words + 1]) + " …")
    assert model.count_tokens(longer) > prompt.budget
    assert f"trimmed it to {words} words per frame" in caplog.text
    assert 'over_budget = "trim"' in caplog.text
    result = run.result()
    assert result.dialogue["trimmed"] is True and result.warnings

    # not even the frames alone fit: fewer frames, without the dialogue, said so
    caplog.clear()
    run = ModelRun(model, inputs, rec)
    prompt, frames = run.prompt(inputs.whole(), "Describe.",
                                max_new_tokens=model.context - frames_only + 40)
    assert len(frames) < N and "Dialogue:" not in prompt.text
    assert "without their dialogue" in caplog.text


# -- the command line --------------------------------------------------------------------------


def test_cli_describe_with_subtitles_and_without(clips, tiny_idefics3, capsys, tmp_path):
    recipe = tmp_path / "fast.toml"
    recipe.write_text('extends = "timeline"\n[sampling]\nn = 6\n[generation]\n'
                      'max_new_tokens = 3\n', encoding="utf-8")
    base = ["describe", str(clips["mkv"]), "--model", str(tiny_idefics3), "--recipe",
            str(recipe), "--quiet"]
    assert run_cli([*base, "--subtitle-lang", "en"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dialogue"]["language"] == "en"
    assert all("transcript" in s for s in out["segments"])
    assert run_cli([*base, "--subtitles", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dialogue"] is None and all("transcript" not in s for s in out["segments"])
    assert run_cli([*base, "--subtitles", str(clips["side"].with_suffix(".srt"))]) == 0
    assert json.loads(capsys.readouterr().out)["dialogue"]["kind"] == "file"


@pytest.mark.parametrize(("args", "says"), [
    (["--subtitles", "missing.srt"], "missing.srt: no such file"),
    (["--subtitles", "GARBLED"], "not valid SubRip"),
    (["--subtitle-lang", "de"], "no subtitles in de"),
    (["--subtitle-lang", "x y"], "not a language tag"),
])
def test_cli_subtitle_mistakes_are_one_line_exit_2(clips, tiny_idefics3, capsys, args, says):
    args = [str(clips["garbled"]) if a == "GARBLED" else a for a in args]
    code = run_cli(["ask", str(clips["mkv"]), "-q", "Who speaks?", "--model",
                    str(tiny_idefics3), "-n", "2", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_cli_batch_refuses_one_file_for_a_folder(clips, capsys, tmp_path):
    code = run_cli(["batch", str(clips["side"].parent), "-o", str(tmp_path / "out"),
                    "--subtitles", str(clips["side"].with_suffix(".srt"))])
    err = capsys.readouterr().err
    assert code == 2 and "belongs to one video" in err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder of two videos: one with a sidecar, one with a subtitle stream."""
    d = tmp_path_factory.mktemp("folder")
    media.make_video(d / "side.mp4", n_frames=FRAMES, fps=FPS, start_pts_s=START)
    (d / "side.srt").write_text(subtitle_text(CUES), encoding="utf-8")
    media.make_video(d / "inside.mkv", n_frames=FRAMES, fps=FPS, start_pts_s=START,
                     subtitles=[Track("subrip", CUES, "eng")])
    return d


def test_cli_batch_and_eval_take_each_videos_subtitles(folder, tiny_idefics3, tmp_path, capsys):
    from tests.helpers import records, write_questions

    model = ["--model", str(tiny_idefics3), "-n", str(N), "--quiet"]
    recipe = tmp_path / "fast.toml"
    recipe.write_text('extends = "timeline"\n[generation]\nmax_new_tokens = 2\n',
                      encoding="utf-8")
    assert run_cli(["batch", str(folder), "-o", str(tmp_path / "b"), "--recipe", str(recipe),
                    *model]) == 0
    by_video = {Path(r["video"]["path"]).name: r for r in records(tmp_path / "b")}
    assert by_video["side.mp4"]["dialogue"]["kind"] == "sidecar"
    assert by_video["inside.mkv"]["dialogue"]["kind"] == "stream"
    for r in by_video.values():
        assert [c["text"] for s in r["segments"] for c in s["transcript"]] == [
            t for _, _, t in CUES[:4]]

    questions = write_questions(tmp_path / "q.jsonl", [
        {"video": v, "question": "Who speaks first?", "choices": ["Ann", "Bob"], "answer": "A"}
        for v in ("side.mp4", "inside.mkv")])
    tokens = {}
    for subs in ("auto", "none"):
        out = tmp_path / f"eval-{subs}"
        assert run_cli(["eval", str(questions), "--videos", str(folder), "-o", str(out),
                        "--subtitles", subs, *model]) == 0
        recs = records(out)
        assert all((r["dialogue"] is None) == (subs == "none") for r in recs)
        tokens[subs] = [r["prompt"]["tokens"] for r in recs]
    assert all(a > b for a, b in zip(tokens["auto"], tokens["none"], strict=True))
    capsys.readouterr()


# -- serve -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_finds_a_served_videos_subtitles_and_a_request_may_turn_them_off(
        clips, tiny_smolvlm):
    import httpx

    from tests.helpers import ServeProcess
    from videovlm.api import run_recipe

    video = clips["side"]
    proc = ServeProcess(["--model", str(tiny_smolvlm), "--media-root", str(video.parent)])
    try:
        def chat(ext: dict) -> httpx.Response:
            return httpx.post(f"{proc.url}/v1/chat/completions", timeout=120, json={
                "messages": [{"role": "user", "content": [
                    {"type": "video_url", "video_url": {"url": video.as_uri()}},
                    {"type": "text", "text": "Who speaks?"}]}],
                "max_tokens": 3, "videovlm": {"n": N, **ext}})

        said = chat({})
        assert said.status_code == 200, said.text
        extra = said.json()["videovlm"]
        assert extra["dialogue"]["kind"] == "sidecar" and extra["dialogue"]["path"] == "clip.srt"
        ref = run_recipe("qa", video, model=Model.load(str(tiny_smolvlm)),
                         questions=["Who speaks?"], n=N)
        assert said.json()["usage"]["prompt_tokens"] == ref.prompt["tokens"]
        silent = chat({"subtitles": "none"})
        assert silent.status_code == 200 and silent.json()["videovlm"]["dialogue"] is None
        assert silent.json()["usage"]["prompt_tokens"] < ref.prompt["tokens"]
        refused = chat({"subtitles": str(video.with_suffix(".srt"))})
        assert refused.status_code == 400 and "auto" in refused.json()["error"]["message"]
    finally:
        assert proc.stop() == 0, proc.stderr
