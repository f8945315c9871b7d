"""Hostile files through the real CLI: library noise, the fuzz corpus, native crashes.

Every run here is ``videovlm`` in a fresh process, as a user runs it, judged by
:func:`tests.fuzz.judge_exit` / :func:`tests.fuzz.check`: exit 0 with right frames (from their
barcodes) or exit 2 with one line, stderr holding only videovlm's lines, within 30 s, never a
traceback or a death by a signal. The whole corpus: ``python benchmarks/fuzz.py``.
"""

from __future__ import annotations

import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import fuzz, media
from videovlm.decode import available_backends
from videovlm.isolation import CRASH_TEST_ENV, IN_PROCESS_ENV

BACKENDS = available_backends()
FRAMES = [sys.executable, "-m", "videovlm", "frames"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """Unsupported and damaged files: AV1 (OpenCV's and decord's FFmpeg lack a decoder for it),
    cut-off files, garbage with a video's name."""
    d = tmp_path_factory.mktemp("hostile")
    av1 = media.make_video(d / "av1.mkv", codec="av1", n_frames=30, gop=10)
    mp4 = media.make_video(d / "full.mp4", n_frames=60, gop=10, bframes=2)
    mkv = media.make_video(d / "full.mkv", n_frames=60, gop=10)
    return {
        "av1": av1,
        "av1_cut": media.truncate(av1, d / "av1 cut.mkv", 0.6),
        "mp4_cut": media.truncate(mp4, d / "cut.mp4", 0.5),  # its moov was at the end
        "mkv_cut": media.truncate(mkv, d / "cut.mkv", 0.55),
        "garbage": media.make_random(d / "garbage.mp4", seed=3),
    }


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_stderr_holds_only_videovlms_lines_on_every_backend(hostile, backend):
    for name, path in hostile.items():
        code, _, stderr, seconds = fuzz.run([*FRAMES, str(path), "-n", "5", "--backend", backend])
        verdict = fuzz.judge_exit(code, stderr, seconds)
        assert verdict is None or verdict.kind == "refused", (name, verdict, stderr)
        assert all(line.startswith("videovlm: ") for line in stderr.splitlines()), (name, stderr)


@pytest.mark.skipif("opencv" not in BACKENDS, reason="opencv is not installed")
def test_without_the_decode_process_opencv_prints_ffmpegs_lines(hostile):
    # what the test above guards against, shown: OpenCV's FFmpeg writes to fd 2 itself
    code, _, stderr, _ = fuzz.run([*FRAMES, str(hostile["av1"]), "-n", "3", "--backend",
                                   "opencv"], env={IN_PROCESS_ENV: "1"})
    assert code == 2
    assert any(line.startswith("[av1 @ ") for line in stderr.splitlines()), stderr


@pytest.mark.parametrize("backend", [b for b in ("av", "opencv") if b in BACKENDS])
def test_a_decoder_that_dies_of_sigsegv_is_one_line_exit_2(hostile, tmp_path, backend):
    clip = media.make_video(tmp_path / "crash me.mp4", n_frames=20)
    code, stdout, stderr, seconds = fuzz.run(
        [*FRAMES, str(clip), "-n", "4", "--backend", backend], env={CRASH_TEST_ENV: "decode:crash"})
    verdict = fuzz.judge_exit(code, stderr, seconds)
    assert verdict is not None and verdict.kind == "refused", (verdict, stderr)
    assert f"the {backend} decoder crashed" in stderr and "SIGSEGV" in stderr
    assert stdout == ""


def test_ffmpeg_dying_of_sigsegv_while_probing_is_one_line_exit_2(tmp_path):
    # the probe reads every file first (PyAV's demuxer, and its decoder on the first frames):
    # it runs in the decode process too, so a crash there is no death of the command either
    clip = media.make_video(tmp_path / "crash me.mp4", n_frames=20)
    code, stdout, stderr, seconds = fuzz.run(
        [*FRAMES, str(clip), "-n", "4"], env={CRASH_TEST_ENV: "probe:crash"})
    verdict = fuzz.judge_exit(code, stderr, seconds)
    assert verdict is not None and verdict.kind == "refused", (verdict, stderr)
    assert "FFmpeg crashed reading" in stderr and "SIGSEGV" in stderr
    assert stdout == ""


def test_ffmpeg_dying_of_sigsegv_in_scene_detection_is_one_line_exit_2(tmp_path, tiny_idefics3):
    # scene detection (describe's first step) decodes every frame with PyAV: in the decode
    # process as well
    from videovlm.errors import DecoderCrash
    from videovlm.probe import probe
    from videovlm.scenes import detect_cuts

    clip = media.make_video(tmp_path / "crash me.mp4", n_frames=20)
    info = probe(clip)
    code, _, stderr, seconds = fuzz.run(
        [sys.executable, "-m", "videovlm", "describe", str(clip), "--model", str(tiny_idefics3),
         "-n", "4", "--quiet"], limit=120, env={CRASH_TEST_ENV: "scenes:crash"})
    verdict = fuzz.judge_exit(code, stderr, seconds)
    assert verdict is not None and verdict.kind == "refused", (verdict, stderr)
    assert "FFmpeg crashed detecting scenes in" in stderr and "SIGSEGV" in stderr
    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(1) as thread:
        mp.setenv(CRASH_TEST_ENV, "scenes:crash")  # read by a child this new thread starts
        with pytest.raises(DecoderCrash, match="SIGSEGV"):
            thread.submit(detect_cuts, info).result()
        mp.delenv(CRASH_TEST_ENV)
        assert thread.submit(detect_cuts, info).result() == []  # a fresh child takes it


@pytest.mark.slow
@pytest.mark.parametrize("where", ["decode", "probe"])
def test_a_batch_goes_on_after_a_decoder_crash(tmp_path, tiny_idefics3, where):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "crash.mp4", "c.mp4"):
        media.make_video(videos / name, n_frames=10)
    recipe = tmp_path / "fast.toml"
    recipe.write_text('extends = "timeline"\nname = "fast"\n[sampling]\nn = 3\n'
                      '[generation]\nmax_new_tokens = 3\n')
    out = tmp_path / "out"
    code, _, stderr, _ = fuzz.run(
        [sys.executable, "-m", "videovlm", "batch", str(videos), "-o", str(out), "--pipeline",
         str(recipe), "--model", str(tiny_idefics3), "--quiet"],
        limit=300, env={CRASH_TEST_ENV: f"{where}:crash"})
    assert code == 1, stderr
    recs = {r["input"]: r for r in map(json.loads, (out / "results.jsonl").read_text().split(
        "\n")[:-1])}
    assert recs["crash.mp4"]["error"]["type"] == "DecoderCrash"
    assert recs["a.mp4"]["error"] is None and recs["c.mp4"]["error"] is None
    assert "Traceback" not in stderr


def _sample(corpus: list[fuzz.Damaged], seed: int, per_kind: int) -> list[fuzz.Damaged]:
    """A seeded sample of the corpus: ``per_kind`` files of each kind."""
    return [item for kind in ("truncated", "flipped", "header")
            for item in random.Random(f"{seed}{kind}").sample(
                [x for x in corpus if x.kind == kind], per_kind)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[fuzz.Damaged]:
    """The corpus of one clip per container (and a sample clip), made once for this module."""
    root = tmp_path_factory.mktemp("fuzz")
    names = ["h264_bframes.mp4", "h264_faststart.mp4", "h264.mkv", "vp9.webm", "mpeg4.avi",
             "h264.ts", "bikes.mp4"]
    return fuzz.corpus(fuzz.make_clips(root / "clips", names), root / "corpus", seed=0)


@pytest.mark.slow
def test_a_seeded_sample_of_the_fuzz_corpus_on_every_backend(corpus):
    originals = {}
    # one run at a time: torchcodec's start (torch's import) alone takes seconds, and two at a
    # time on a busy 2-core machine pushed some past the 30 s limit
    runs = [(item, backend) for item in _sample(corpus, 0, 3) for backend in BACKENDS]

    def one(run: tuple[fuzz.Damaged, str]) -> tuple[fuzz.Damaged, str, fuzz.Outcome]:
        item, backend = run
        if not item.barcode and item.clip not in originals:
            originals[item.clip] = fuzz.original_frames(fuzz.SAMPLES / item.clip)
        return item, backend, fuzz.check(item, backend, originals.get(item.clip))

    outcomes = [one(run) for run in runs]
    failures = [f"{b} {i.path.name}: {o.why}" for i, b, o in outcomes if o.kind == "FAIL"]
    assert not failures, "\n".join(failures)
    assert {o.kind for _, _, o in outcomes} <= {"frames", "refused"}


@pytest.mark.slow
def test_a_model_command_on_damaged_files(corpus, tiny_idefics3):
    for item in _sample(corpus, 1, 1):
        code, stdout, stderr, seconds = fuzz.run(
            [sys.executable, "-m", "videovlm", "describe", str(item.path), "--model",
             str(tiny_idefics3), "-n", "4", "--quiet"], limit=120)
        verdict = fuzz.judge_exit(code, stderr, seconds)
        assert verdict is None or verdict.kind == "refused", (item.path.name, verdict, stderr)
        if verdict is None:
            assert json.loads(stdout)["error"] is None


def test_the_decode_process_imports_this_checkout(tmp_path):
    # the child is a fresh interpreter: its PYTHONPATH starts at the folder above the videovlm
    # package the parent runs, so a checkout that is not installed decodes with its own code
    import os

    import videovlm
    from videovlm import isolation

    child = isolation._Child()
    child.spawn()
    try:
        environ = Path(f"/proc/{child.proc.pid}/environ").read_bytes().split(b"\0")
        path = next(e for e in environ if e.startswith(b"PYTHONPATH=")).decode()[11:]
        assert path.split(os.pathsep)[0] == str(Path(videovlm.__file__).resolve().parent.parent)
    finally:
        child._kill()
