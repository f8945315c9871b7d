"""Long videos: windows with their own frame budget, streamed, resumable, and summarised in levels.

One generated minute (10 fps, shots cut at known frames) stands in for an hour: with 10-second
windows it has the shape of a long run (six windows, boundaries snapped to cuts, a cut inside a
window) at a test's cost. The tiny checkpoint's text is gibberish, so the tests check structure,
times, token counts and files, and equality of text between runs (greedy decoding).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import records, run_cli
from tests.media import Track, make_shots, make_video
from videovlm import tasks
from videovlm.api import describe, run_recipe, stage_video
from videovlm.model import Model
from videovlm.pack import text_tokens
from videovlm.pipelines import load_recipe
from videovlm.probe import probe
from videovlm.result import Segment
from videovlm.run import ModelRun
from videovlm.testing import make_checkpoint
from videovlm.video import VideoInputs, WindowedVideo
from videovlm.windows import Progress, progress_path

REPO = Path(__file__).resolve().parent.parent
FPS = 10
CUTS = [0, 150, 270, 420, 480]  # frames: 15 s, 27 s, 42 s, 48 s
# 10-second windows: the boundaries at 40 s and 50 s move to the cuts at 42 s and 48 s (within a
# quarter window), the ones at 10, 20 and 30 s have no cut within reach; 15 s is inside a window
EDGES = [0.0, 10.0, 20.0, 30.0, 42.0, 48.0, 60.0]

FAST = """
extends = "describe"
name = "fast-describe"
[sampling]
n = 8
[windows]
scene_frames = 4
[generation]
max_new_tokens = 4
"""


@pytest.fixture(scope="module")
def minute(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shots(tmp_path_factory.mktemp("long") / "minute.mp4", CUTS, 60 * FPS, fps=FPS)


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "fast.toml"
    path.write_text(FAST)
    return path


@pytest.fixture(scope="module")
def model(tiny_idefics3: Path) -> Model:
    return Model.load(str(tiny_idefics3), quantize="none")  # int8's tiny vision tower is slower


def _segments(result: dict) -> list[tuple[float, float, str, list[int]]]:
    return [(s["start_s"], s["end_s"], s["text"], s["frames"]) for s in result["segments"]]


@pytest.mark.slow
def test_windows_cover_the_video_once_each_with_its_own_budget(minute: Path, fast: Path,
                                                               model: Model) -> None:
    staged = stage_video(minute, load_recipe("describe").with_overrides(
        length_s=10.0, after_s=10.0, n=8), image_size=model.image_size)
    assert isinstance(staged, WindowedVideo)
    assert [round(a, 6) for a, _ in staged.spans] + [staged.spans[-1][1]] == EDGES
    result = describe(minute, model=model, recipe=str(fast), window=10).to_dict()
    spans = result["sampling"]["windows"]["spans"]
    assert [tuple(s) for s in spans] == [tuple(s) for s in staged.spans]
    segs = result["segments"]
    # the segments cover [0, duration] exactly once, in order, each inside one window
    assert segs[0]["start_s"] == 0.0 and segs[-1]["end_s"] == pytest.approx(60.0)
    assert all(a["end_s"] == b["start_s"] for a, b in itertools.pairwise(segs))
    assert all(any(w[0] <= s["start_s"] < s["end_s"] <= w[1] for w in spans) for s in segs)
    # density: every window has a segment, every segment at least scene_frames frames
    assert all(any(w[0] <= s["start_s"] < w[1] for s in segs) for w in spans)
    assert min(len(s["frames"]) for s in segs) >= 4
    per_window = [sum(w[0] <= f["time_s"] < w[1] for f in result["sampling"]["frames"])
                  for w in spans]
    assert per_window == [8] * len(spans)  # -n is each window's budget
    # scene mode inside a window: the cut at 15 s splits its window, the one at 27 s makes a
    # 3-second scene (under 4 of 8 frames' worth of a 10-s window) and is merged
    starts = [s["start_s"] for s in segs]
    assert 15.0 in starts and 27.0 not in starts
    assert result["summary"] and result["prompt"]["calls"] == len(segs)
    # the report frames: a few thumbnails per segment, not every decoded frame
    assert result["mode"] == "scenes"


@pytest.mark.slow
def test_a_short_clip_runs_whole_as_before(minute: Path, fast: Path, model: Model) -> None:
    assert isinstance(stage_video(minute, str(fast), image_size=model.image_size), VideoInputs)
    whole = describe(minute, model=model, recipe=str(fast)).to_dict()
    off = describe(minute, model=model, recipe=str(fast), window=0).to_dict()
    longer = describe(minute, model=model, recipe=str(fast), window=90).to_dict()
    assert "windows" not in whole["sampling"]
    assert _segments(whole) == _segments(off) == _segments(longer)
    assert len(whole["sampling"]["frames"]) == 8  # one budget for the whole minute


def test_the_default_windows_a_video_longer_than_after_s(minute: Path, fast: Path,
                                                         model: Model) -> None:
    """No option: the recipe's after_s decides (here 30 s, so the minute is windowed)."""
    rec = load_recipe(str(fast)).with_overrides(after_s=30.0, length_s=20.0)
    result = run_recipe(rec, minute, model=model).to_dict()
    assert len(result["sampling"]["windows"]["spans"]) == 3
    assert result["sampling"]["windows"]["length_s"] == 20.0


def test_timeline_windows_keep_their_segments_inside(minute: Path, model: Model,
                                                     tmp_path: Path) -> None:
    recipe = tmp_path / "t.toml"
    recipe.write_text('extends = "timeline"\n[sampling]\nn = 4\n[generation]\n'
                      'max_new_tokens = 6\n')
    result = describe(minute, model=model, recipe=str(recipe), window=20).to_dict()
    spans = result["sampling"]["windows"]["spans"]
    assert len(spans) == 3 and result["mode"] == "timeline"
    assert all(any(w[0] <= s["start_s"] <= s["end_s"] <= w[1] for w in spans)
               for s in result["segments"])


def test_the_summary_goes_in_levels_when_descriptions_do_not_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty long descriptions are more than a 2k context: groups that fit are summarised,
    then their summaries; no prompt is over the budget, and every description is read once."""
    model = Model.load(str(make_checkpoint(tmp_path / "ctx", "smolvlm", "tiny", context=2048)),
                       quantize="none")
    rec = load_recipe("describe").with_overrides(max_new_tokens=4)
    info = probe(REPO / "samples" / "bikes.mp4")
    run = ModelRun(model, VideoInputs(info.path, info, "scenes", [], [], [], {}), rec)
    words = " ".join(f"w{i}" for i in range(40))
    segments = [Segment(i * 10.0, i * 10.0 + 10, f"scene {i} {words}") for i in range(40)]
    asked: list[str] = []
    real = Model.generate_text

    def spy(self: Model, text: str, **generation: object) -> str:
        asked.append(text)
        return real(self, text, **generation)

    monkeypatch.setattr(Model, "generate_text", spy)
    room = model.context - 4
    assert text_tokens(model, run.fill("summary", 0, descriptions="\n".join(
        f"{s.text}" for s in segments))) > room
    summary = tasks.summarise(run, segments, 0)
    assert summary is not None and len(asked) > 2
    assert all(text_tokens(model, t) <= room for t in asked)
    firsts = [t for t in asked if "scene " in t]
    assert sorted(int(line.split("scene ")[1].split()[0]) for t in firsts
                  for line in t.splitlines() if "scene " in line) == list(range(40))
    assert "scene " not in asked[-1]  # the last level reads summaries, not descriptions


def test_stream_prints_every_segment_as_a_json_line(minute: Path, fast: Path,
                                                    tiny_idefics3: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = run_cli(["describe", str(minute), "--window", "10", "--stream", "-o", str(out),
                    "--recipe", str(fast), "--model", str(tiny_idefics3), "-f", "json,html",
                    "--quantize", "none", "--quiet"])
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    final = json.loads((out / "minute.json").read_text())
    assert [(x["start_s"], x["end_s"], x["text"], x["frames"]) for x in lines] == \
        _segments(final)
    assert all(x["video"] == str(minute) for x in lines)
    assert not progress_path(out, "minute").exists()  # removed once the files are written
    html = (out / "minute.html").read_text()
    assert html.count("<figure>") <= 4 * len(final["segments"])  # bounded thumbnails


def test_a_progress_file_of_other_settings_starts_over(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "v.progress.json"
    first = Progress(path, {"model": "a", "spans": [[0, 10]]})
    first.add({"segments": []})
    assert json.loads(path.read_text())["windows"] == [{"segments": []}]
    assert [p.name for p in tmp_path.iterdir()] == ["v.progress.json"]  # no temp file left
    assert Progress(path, {"model": "a", "spans": [[0, 10]]}).done == [{"segments": []}]
    with caplog.at_level("WARNING", logger="videovlm"):
        other = Progress(path, {"model": "b", "spans": [[0, 10]]})
    assert other.done == [] and other.restarted
    assert "other settings (model): starting over" in caplog.text
    other.remove()
    assert not path.exists()


def _describe_cmd(minute: Path, fast: Path, checkpoint: Path, out: Path, *extra: str
                  ) -> list[str]:
    return [sys.executable, "-m", "videovlm", "describe", str(minute), "--window", "10",
            "--recipe", str(fast), "--model", str(checkpoint), "-o", str(out), "-f", "json",
            "--quantize", "none", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _kill_after_first_line(cmd: list[str]) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            cwd=REPO)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_killed_mid_way_the_same_command_resumes_and_gives_the_same_result(
        minute: Path, fast: Path, tiny_idefics3: Path, tmp_path: Path) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    done = subprocess.run(_describe_cmd(minute, fast, tiny_idefics3, whole, "--quiet"),
                          capture_output=True, env=_env(), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    _kill_after_first_line(_describe_cmd(minute, fast, tiny_idefics3, resumed, "--stream"))
    progress = json.loads(progress_path(resumed, "minute").read_text())
    assert 1 <= len(progress["windows"]) < len(EDGES) - 1
    again = subprocess.run(_describe_cmd(minute, fast, tiny_idefics3, resumed, "--stream"),
                           capture_output=True, env=_env(), cwd=REPO, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert b"starting over" not in again.stderr
    a = json.loads((whole / "minute.json").read_text())
    b = json.loads((resumed / "minute.json").read_text())
    assert _segments(a) == _segments(b) and a["summary"] == b["summary"]
    assert a["sampling"] == b["sampling"]
    streamed = [json.loads(x) for x in again.stdout.decode().splitlines()]
    assert [(x["start_s"], x["text"]) for x in streamed] == \
        [(s["start_s"], s["text"]) for s in b["segments"]]  # finished windows streamed again
    assert not progress_path(resumed, "minute").exists()
    # a changed setting starts over, and says so in one line
    _kill_after_first_line(_describe_cmd(minute, fast, tiny_idefics3, resumed, "--stream"))
    changed = subprocess.run(_describe_cmd(minute, fast, tiny_idefics3, resumed, "-n", "6"),
                             capture_output=True, env=_env(), cwd=REPO, timeout=300)
    assert changed.returncode == 0
    said = [x for x in changed.stderr.decode().splitlines() if "starting over" in x]
    assert len(said) == 1 and "minute.progress.json" in said[0]


@pytest.mark.slow
def test_a_batch_killed_inside_a_long_video_resumes_at_its_window(
        minute: Path, fast: Path, tiny_idefics3: Path, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    os.link(minute, videos / "minute.mp4")
    cmd = [sys.executable, "-m", "videovlm", "batch", str(videos), "--window", "10",
           "--recipe", str(fast), "--model", str(tiny_idefics3), "-f", "json", "--quiet",
           "--quantize", "none"]
    whole = subprocess.run([*cmd, "-o", str(tmp_path / "whole")], capture_output=True,
                           env=_env(), cwd=REPO, timeout=300)
    assert whole.returncode == 0, whole.stderr.decode()
    out = tmp_path / "out"
    proc = subprocess.Popen([*cmd, "-o", str(out)], stderr=subprocess.PIPE, env=_env(),
                            cwd=REPO)
    progress = progress_path(out, "minute.mp4")  # beside out/minute.mp4.json
    while proc.poll() is None and not progress.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert progress.exists(), "the batch finished before it could be killed mid-video"
    kept = len(json.loads(progress.read_text())["windows"])
    again = subprocess.run([*cmd, "-o", str(out)], capture_output=True, env=_env(), cwd=REPO,
                           timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    (a,), (b,) = records(tmp_path / "whole"), records(out)
    assert kept >= 1 and _segments(a) == _segments(b) and a["summary"] == b["summary"]
    assert not progress.exists()


# (start_s, end_s, text) on the frames' clock of a 20-s clip whose first frame is at 7.5 s; the
# second cue spans the boundary of the first two 5-s windows
WINDOW_CUES = [(1.0, 2.0, "one"), (4.5, 5.5, "across"), (7.0, 7.5, "two"), (12.0, 13.0, "three"),
               (19.0, 19.8, "four")]


def test_windowed_segments_carry_the_cues_of_their_own_span(tmp_path: Path, fast: Path,
                                                             model: Model) -> None:
    """The dialogue is read once for the whole file; every window's segment then holds the cues
    said during its own span (on the frames' clock), also when they come back from the progress
    file, and the result's dialogue record is the whole video's."""
    clip = make_video(tmp_path / "talk.mp4", n_frames=200, fps=10, start_pts_s=7.5, gop=10,
                      subtitles=[Track("mov_text", WINDOW_CUES, "eng")])
    rec = load_recipe(str(fast)).with_overrides(length_s=5.0, after_s=5.0, snap_s=0.0)
    staged = stage_video(clip, rec, image_size=model.image_size)
    assert isinstance(staged, WindowedVideo) and len(staged.spans) == 4
    assert staged.dialogue is not None and len(staged.dialogue.cues) == len(WINDOW_CUES)
    progress = tmp_path / "talk.progress.json"
    first = run_recipe(rec, clip, model=model, progress_file=progress).to_dict()
    again = run_recipe(rec, clip, model=model, progress_file=progress).to_dict()  # from the file
    for result in (first, again):
        segs = result["segments"]
        assert len(segs) >= 4
        for seg in segs:
            said = [t for a, b, t in WINDOW_CUES if a < seg["end_s"] and b > seg["start_s"]]
            assert [c["text"] for c in seg["transcript"]] == said, seg
        shown = [c["text"] for seg in segs for c in seg["transcript"]]
        assert set(shown) == {t for _, _, t in WINDOW_CUES}
        assert shown.count("across") == 2  # in the last segment of window 1, the first of 2
        assert result["dialogue"]["cues"] == len(WINDOW_CUES)
        assert result["dialogue"]["in_prompt"] >= len(WINDOW_CUES)
    assert first["segments"] == again["segments"] and first["dialogue"] == again["dialogue"]
