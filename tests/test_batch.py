"""The batch engine: which files are inputs, where outputs go, the crash-safe log, resume,
overlap of decoding with generation, and survival of SIGKILL at random moments.

The engine is exercised with real files and real stages: the CPU stage decodes every frame with
PyAV and the "model" stage summarises the pixels, so the tests run in seconds; `videovlm batch`,
with the real model stage on a tiny checkpoint, is tested in tests/cli/test_batch.py.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests import media
from tests.helpers import records
from videovlm.batch import (
    RESULTS_NAME,
    Job,
    Question,
    ResultsLog,
    ensure_inside,
    find_videos,
    load_questions,
    output_location,
    run_local,
    sniff_video,
)
from videovlm.errors import InputError, VideoVLMError
from videovlm.result import Result

REPO = Path(__file__).resolve().parents[1]


def decode_all(job: Job) -> dict:
    """A real CPU stage: decode every frame, keep its mean brightness."""
    with av.open(str(job.path)) as container:
        means = [float(f.to_ndarray(format="rgb24").mean()) for f in container.decode(video=0)]
    if not means:
        raise InputError(f"{job.path} has no video frames")
    return {"means": means}


def summarise(job: Job, payload: dict) -> Result:
    """A real (if simple) second stage: a Result computed from the decoded pixels."""
    means = payload["means"]
    return Result(video={"path": str(job.path), "frame_count": len(means)},
                  summary=f"mean brightness {np.mean(means):.2f}")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A folder with look-alike names, a non-video, a broken video and hidden files."""
    root = tmp_path_factory.mktemp("videos")
    for sub in ("a", "b"):
        (root / sub).mkdir()
        media.make_video(root / sub / "x.mp4", n_frames=12)
    media.make_video(root / "clip.mkv", n_frames=8)
    media.make_video(root / "noext_source.webm", n_frames=8, codec="vp9")
    os.replace(root / "noext_source.webm", root / "noext")
    media.make_video(root / "video.txt.mp4", n_frames=8)
    os.replace(root / "video.txt.mp4", root / "video.txt")  # a video named .txt
    media.make_text(root / "fake.mp4")  # text named .mp4
    media.make_text(root / "notes.txt")
    media.truncate(root / "a" / "x.mp4", root / "broken.mp4", 0.3)
    (root / ".hidden").mkdir()
    media.make_video(root / ".hidden" / "h.mp4", n_frames=8)
    (root / "deep" / "er").mkdir(parents=True)
    media.make_video(root / "deep" / "er" / "d.avi", n_frames=8)
    return root


# -- finding inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm", ".avi", ".ts"])
def test_sniff_recognises_real_containers(tmp_path, suffix):
    codec = "vp9" if suffix == ".webm" else "h264"
    assert sniff_video(media.make_video(tmp_path / f"v{suffix}", n_frames=4, codec=codec))


def test_sniff_rejects_non_videos(tmp_path):
    assert not sniff_video(media.make_text(tmp_path / "t.mp4"))
    assert not sniff_video(media.make_random(tmp_path / "r.mp4"))
    assert not sniff_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert not sniff_video(tmp_path / "empty.mp4")


def test_find_by_content_and_extension(tree):
    found = find_videos(tree)
    assert [j.input for j in found.jobs] == [
        "a/x.mp4", "b/x.mp4", "broken.mp4", "clip.mkv", "deep/er/d.avi", "noext"]
    assert found.not_video == ["fake.mp4"]
    assert all(j.path == tree / j.input for j in found.jobs)


def test_include_picks_a_video_named_txt_and_exclude_wins(tree):
    found = find_videos(tree, include=["*.txt"])
    assert [j.input for j in found.jobs] == ["video.txt"]
    assert found.not_video == ["notes.txt"]
    found = find_videos(tree, exclude=["a/*", "*.mkv"])
    assert "a/x.mp4" not in [j.input for j in found.jobs]
    assert "clip.mkv" not in [j.input for j in found.jobs]


def test_no_recursive_and_skip(tree):
    assert [j.input for j in find_videos(tree, recursive=False).jobs] == [
        "broken.mp4", "clip.mkv", "noext"]
    assert "a/x.mp4" not in [j.input for j in find_videos(tree, skip=[tree / "a"]).jobs]


def test_symlinked_folders_are_not_walked_symlinked_files_are_read(tree, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "outside").symlink_to(tree / "a", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "link.mp4").symlink_to(tree / "b" / "x.mp4")
    found = find_videos(root)
    assert [j.input for j in found.jobs] == ["link.mp4"]


def test_find_refuses_a_file(tree):
    with pytest.raises(InputError, match="not a folder"):
        find_videos(tree / "clip.mkv")


# -- output names -----------------------------------------------------------------------------

def test_output_names_never_collide_and_stay_inside(tmp_path):
    out = tmp_path / "out"
    assert output_location(out, "a/x.mp4") == (out / "a", "x.mp4")
    assert output_location(out, "b/x.mp4") == (out / "b", "x.mp4")
    for evil in ("../../etc/passwd", "/abs/x.mp4", "a/../../x.mp4", "..", "C:/x.mp4",
                 "..\\..\\x.mp4"):
        folder, stem = output_location(out, evil)
        target = (folder / stem).resolve()
        assert target.is_relative_to(out.resolve()), evil
        assert stem not in ("", ".", "..")


def test_output_names_escape_rather_than_merge(tmp_path):
    out = tmp_path / "out"
    names = ["cam:1.mp4", "cam_1.mp4", "cam%3A1.mp4", "results", "batch", "summary", "..."]
    places = [output_location(out, n) for n in names]
    assert len(set(places)) == len(names)  # a name is never another's after escaping
    for folder, stem in places:
        # no video's <stem>.json/.jsonl may land on the run's own results.jsonl or batch.json
        assert (folder, stem) != (out, "results") and (folder, stem) != (out, "batch")
    assert output_location(out, "a/results") == (out / "a", "results")  # only the top level


def test_ensure_inside_refuses_a_symlink_out(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "a").symlink_to(elsewhere)
    with pytest.raises(InputError, match="outside"):
        ensure_inside(out, out / "a")
    assert ensure_inside(out, out / "b" / "c").is_dir()


# -- questions files --------------------------------------------------------------------------

def test_questions_file_forms(tmp_path):
    inputs = ["a/x.mp4", "b/x.mp4", "c/only.mp4"]
    text = tmp_path / "q.txt"
    text.write_text("# for every video\nWhat happens?\n\nWho is there?\n")
    assert load_questions(text, tmp_path, inputs).common == [
        Question("What happens?"), Question("Who is there?")]
    array = tmp_path / "q.json"
    array.write_text('["One?", {"question": "Two?", "choices": ["x", "y"]}]')
    assert load_questions(array, tmp_path, inputs).common == [
        Question("One?"), Question("Two?", ("x", "y"))]
    lines = tmp_path / "q.jsonl"
    lines.write_text(f'{{"video": "only.mp4", "question": "Q1"}}\n'
                     f'{{"video": "{tmp_path / "a/x.mp4"}", "question": "Q2"}}\n'
                     '{"question": "Q3"}\n')
    q = load_questions(lines, tmp_path, inputs)
    assert q.named == {"c/only.mp4": [Question("Q1")], "a/x.mp4": [Question("Q2")]}
    assert q.for_input("a/x.mp4") == [Question("Q3"), Question("Q2")]


@pytest.mark.parametrize(("content", "message"), [
    ('{"video": "x.mp4", "question": "Q"}\n', "matches 2 videos"),
    ('{"video": "nope.mp4", "question": "Q"}\n', "not found"),
    ('{"video": "a/x.mp4", "question": "Q", "choices": ["one"]}\n', "2 to 26 strings"),
    ('{"video": "a/x.mp4", "questoin": "Q"}\n', "expected"),
    ('{"question": "Q", "colour": 1}\n', "unknown key"),
    ('{"question": "Q"\n', "not a JSON object"),
    ("\n# nothing\n", "no questions"),
])
def test_questions_file_mistakes_are_one_line(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(VideoVLMError, match=message) as info:
        load_questions(path, tmp_path, ["a/x.mp4", "b/x.mp4"])
    assert "\n" not in str(info.value)


# -- the log ----------------------------------------------------------------------------------

def test_log_repairs_a_torn_last_line(tmp_path):
    log = ResultsLog(tmp_path / RESULTS_NAME)
    log.append({"input": "a.mp4", "error": None})
    log.append({"input": "b.mp4", "error": None})
    with open(log.path, "ab") as fh:
        fh.write(b'{"input": "c.mp4", "err')  # killed mid-write
    assert set(log.load()) == {"a.mp4", "b.mp4"}
    assert log.repaired == 1
    assert log.path.read_bytes().endswith(b'"error": null}\n')
    log.append({"input": "c.mp4", "error": None})
    assert [r["input"] for r in records(tmp_path)] == ["a.mp4", "b.mp4", "c.mp4"]


def test_log_drops_duplicates_and_garbage(tmp_path):
    path = tmp_path / RESULTS_NAME
    path.write_text('{"input": "a"}\nnot json\n{"input": "a", "second": 1}\n{"no": "key"}\n\n')
    log = ResultsLog(path)
    assert log.load() == {"a": {"input": "a"}}
    assert path.read_text() == '{"input": "a"}\n'


# -- the engine -------------------------------------------------------------------------------

def test_one_record_per_input_and_failures_recorded(tree, tmp_path):
    out = tmp_path / "out"
    jobs = find_videos(tree).jobs
    report = run_local(jobs, decode_all, summarise, out, formats=["json"], progress=False)
    recs = {r["input"]: r for r in records(out)}
    assert set(recs) == {j.input for j in jobs}
    assert recs["broken.mp4"]["error"]["type"]
    assert "\n" not in recs["broken.mp4"]["error"]["message"]
    good = [r for r in recs.values() if r["error"] is None]
    assert recs["a/x.mp4"]["video"]["frame_count"] == 12
    assert (report.done, report.failed, report.skipped) == (len(good), 1, 0)
    assert report.exit_code == 1
    # per-video files named from the relative path: the two x.mp4 do not collide
    assert recs["a/x.mp4"]["outputs"] == ["a/x.mp4.json"]
    assert json.loads((out / "b/x.mp4.json").read_text())["video"]["path"] == str(tree / "b/x.mp4")
    assert not (out / "broken.mp4.json").exists()
    assert not list(out.rglob("*.tmp"))


def test_resume_skips_recorded_inputs(tree, tmp_path):
    out = tmp_path / "out"
    jobs = find_videos(tree).jobs
    run_local(jobs[:2], decode_all, summarise, out, progress=False)
    seen: list[str] = []

    def counting(job: Job) -> dict:
        seen.append(job.input)
        return decode_all(job)

    report = run_local(jobs, counting, summarise, out, progress=False)
    assert sorted(seen) == sorted(j.input for j in jobs[2:])
    assert report.skipped == 2
    assert sorted(r["input"] for r in records(out)) == sorted(j.input for j in jobs)
    seen.clear()
    report = run_local(jobs, counting, summarise, out, resume=False, progress=False)
    assert sorted(seen) == sorted(j.input for j in jobs)
    assert len(records(out)) == len(jobs)


def test_resume_refuses_other_settings(tree, tmp_path):
    out = tmp_path / "out"
    jobs = find_videos(tree).jobs[:1]
    run_local(jobs, decode_all, summarise, out, settings={"model": "a"}, progress=False)
    with pytest.raises(VideoVLMError, match="other settings \\(model\\)"):
        run_local(jobs, decode_all, summarise, out, settings={"model": "b"}, progress=False)
    run_local(jobs, decode_all, summarise, out, settings={"model": "b"}, resume=False,
              progress=False)


def test_temp_files_of_a_killed_run_are_removed(tree, tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    stale = [out / "a" / ".x.mp4.json.0123abcd.tmp", out / ".results.jsonl.k2j3.tmp"]
    for path in stale:
        path.write_text("half")
    (out / "keep.tmp").write_text("not ours")
    run_local(find_videos(tree).jobs[:1], decode_all, summarise, out, progress=False)
    assert not any(p.exists() for p in stale)
    assert (out / "keep.tmp").exists()


def test_second_batch_on_the_same_folder_is_refused(tree, tmp_path):
    out = tmp_path / "out"
    jobs = find_videos(tree).jobs[:2]

    def nested(job: Job, payload: dict) -> Result:
        with pytest.raises(VideoVLMError, match="another batch"):
            run_local(jobs, decode_all, summarise, out, progress=False)
        return summarise(job, payload)

    assert run_local(jobs, decode_all, nested, out, progress=False).exit_code == 0


def test_decoding_overlaps_generation_with_a_bounded_window(tree, tmp_path):
    jobs = [j for j in find_videos(tree).jobs if j.input != "broken.mp4"] * 1
    jobs = [Job(j.path, f"{k}/{j.input}") for k in range(3) for j in jobs]
    spans: dict[str, list[float]] = {}
    started: list[str] = []
    ahead_max = 0
    finished = 0
    lock = threading.Lock()

    def cpu(job: Job) -> dict:
        with lock:
            started.append(job.input)
        t = time.perf_counter()
        payload = decode_all(job)
        spans[job.input] = [t, time.perf_counter()]
        return payload

    def model(job: Job, payload: dict) -> Result:
        nonlocal ahead_max, finished
        t = time.perf_counter()
        time.sleep(0.05)  # a model's step; decoders must keep working meanwhile
        with lock:
            ahead_max = max(ahead_max, len(started) - finished)
        spans[job.input] += [t, time.perf_counter()]
        finished += 1
        return summarise(job, payload)

    report = run_local(jobs, cpu, model, tmp_path / "out", workers=2, prefetch=1,
                       progress=False)
    assert report.done == len(jobs)
    order = [j.input for j in jobs]
    overlapped = sum(spans[nxt][0] < spans[cur][3] for cur, nxt in itertools.pairwise(order))
    assert overlapped >= len(order) // 2  # the next video decodes while this one generates
    assert ahead_max <= 2 + 1 + 1  # workers + prefetch + the one being generated


def test_decode_processes_give_the_same_records(tree, tmp_path):
    jobs = find_videos(tree).jobs
    run_local(jobs, decode_all, summarise, tmp_path / "threads", progress=False)
    report = run_local(jobs, decode_all, summarise, tmp_path / "procs", workers=2,
                       processes=True, progress=False)
    assert report.done + report.failed == len(jobs)

    def strip(recs: list[dict]) -> dict:
        return {r["input"]: (r["summary"], r["error"] and r["error"]["type"]) for r in recs}

    assert strip(records(tmp_path / "procs")) == strip(records(tmp_path / "threads"))


def test_sequential_mode_runs_in_order(tree, tmp_path):
    jobs = find_videos(tree).jobs
    report = run_local(jobs, decode_all, summarise, tmp_path / "out", workers=0, progress=False)
    assert [r["input"] for r in records(tmp_path / "out")] == [j.input for j in jobs]
    assert report.cpu_s > 0 and report.model_s > 0


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_take_the_next_inputs_and_record_each_in_order(tree, tmp_path, workers):
    """``batch_size`` inputs at a time go to ``model_batch``, in order; an input whose CPU
    stage failed is recorded and left out of its batch, an input the batch failed is recorded,
    the others get the records of one at a time; a rerun resumes."""
    jobs = find_videos(tree).jobs
    run_local(jobs, decode_all, summarise, tmp_path / "one", progress=False)
    groups: list[list[str]] = []

    def together(items: list[tuple[Job, dict]]) -> list[Result | BaseException]:
        groups.append([job.input for job, _ in items])
        return [ValueError("refused") if job.input == "clip.mkv" else summarise(job, payload)
                for job, payload in items]

    out = tmp_path / "out"
    report = run_local(jobs, decode_all, summarise, out, workers=workers, batch_size=3,
                       model_batch=together, progress=False)
    assert report.failed == 2 and report.done == len(jobs) - 2
    recs = records(out)
    assert [r["input"] for r in recs] == [j.input for j in jobs]
    decoded = [j.input for j in jobs if j.input != "broken.mp4"]
    assert [x for g in groups for x in g] == decoded and all(len(g) <= 3 for g in groups)
    errors = {r["input"]: r["error"]["type"] for r in recs if r["error"]}
    assert errors == {"broken.mp4": "InvalidDataError", "clip.mkv": "ValueError"}

    def strip(recs: list[dict]) -> dict:
        return {r["input"]: r["summary"] for r in recs if r["input"] not in errors}

    assert strip(recs) == strip(records(tmp_path / "one"))
    again = run_local(jobs, decode_all, summarise, out, workers=workers, batch_size=3,
                      model_batch=together, progress=False)
    assert again.skipped == len(jobs) and again.done == 0


def test_prefetch_follows_the_batch_size(tree, tmp_path):
    """While one batch generates, the workers decode the whole next one (the default prefetch
    is the batch size when that is larger), and ``wait_s`` says how long the model stage
    waited for them."""
    jobs = [Job(j.path, f"{k}/{j.input}") for k in range(3) for j in find_videos(tree).jobs
            if j.input != "broken.mp4"][:12]
    decoded: list[str] = []
    ready_during_first: list[int] = []

    def cpu(job: Job) -> dict:
        payload = decode_all(job)
        decoded.append(job.input)
        return payload

    def together(items: list[tuple[Job, dict]]) -> list[Result | BaseException]:
        if not ready_during_first:
            deadline = time.monotonic() + 30
            while len(decoded) < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # any more it would decode
            ready_during_first.append(len(decoded))
        return [summarise(job, payload) for job, payload in items]

    report = run_local(jobs, cpu, summarise, tmp_path / "out", workers=1, batch_size=4,
                       model_batch=together, progress=False)
    assert report.done == len(jobs)
    # this batch's 4 and the next batch's 4 (and at most the one worker's next): bounded
    assert 8 <= ready_during_first[0] <= 4 + 1 + 4
    assert 0 < report.wait_s < report.wall_s


# -- crash safety -----------------------------------------------------------------------------

_SCRIPT = """
import sys
sys.path[:0] = [{repo!r}]
import time
from tests.test_batch import decode_all, summarise
from videovlm.batch import find_videos, run_local


def slow_summarise(*args):
    # at least 0.2 s a video (37 videos: >= 7 s of work), so at least three of the kills below
    # (each after <= 1.2 s) land mid-run however fast the machine is
    time.sleep(0.2)
    return summarise(*args)


report = run_local(find_videos(sys.argv[1]).jobs, decode_all, slow_summarise, sys.argv[2],
                   formats=["json"], workers=2, progress=False)
sys.exit(report.exit_code)
"""


def _many_videos(root: Path, n: int, copies: int) -> list[str]:
    """``copies`` folders of ``n`` clips each, plus a broken clip and an ignored non-video."""
    first = root / "c0"
    first.mkdir(parents=True)
    for i in range(n):
        media.make_video(first / f"v{i:02d}.mp4", n_frames=150, size=(320, 240))
    for c in range(1, copies):
        shutil.copytree(first, root / f"c{c}")
    (root / "zz_bad").write_text("x" * 100)  # extensionless, not a video: ignored
    media.truncate(first / "v00.mp4", root / "v_broken.mp4", 0.2)
    return sorted([f"c{c}/v{i:02d}.mp4" for c in range(copies) for i in range(n)]
                  + ["v_broken.mp4"])


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    expected = _many_videos(tmp_path / "videos", 12, 3)
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(repo=str(REPO)))
    cmd = [sys.executable, str(script), str(tmp_path / "videos"), str(out)]
    rng = random.Random(5)
    kills = 0
    while kills < 5:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 1.2))
        if proc.poll() is not None:
            break  # finished before this kill: the rest is checked below
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if (out / RESULTS_NAME).exists():  # every line is complete, but for a torn last one
            lines = (out / RESULTS_NAME).read_bytes().split(b"\n")
            inputs = [json.loads(line)["input"] for line in lines[:-1]]
            assert len(inputs) == len(set(inputs))
    assert kills >= 3
    final = subprocess.run(cmd, stderr=subprocess.PIPE, timeout=120)
    assert final.returncode == 1, final.stderr.decode()  # v_broken failed, and is recorded
    recs = records(out)
    inputs = [r["input"] for r in recs]
    assert sorted(inputs) == expected
    assert len(inputs) == len(set(inputs))
    for r in recs:
        if r["error"] is None:
            assert json.loads((out / (r["input"] + ".json")).read_text())["summary"] == r["summary"]
    assert not list(out.rglob("*.tmp"))
    again = subprocess.run(cmd, stderr=subprocess.PIPE, timeout=120)  # all done: nothing redone
    assert again.returncode == 1 and records(out) == recs


def crashing_stage(job: Job) -> dict:
    """``decode_all`` that counts its runs in $CALLS and kills its process with SIGSEGV on
    files named crash*: a real signal death of a decode worker, as a native crash is."""
    calls = Path(os.environ["VIDEOVLM_TEST_CALLS"])
    if job.path.name.startswith("crash"):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), signal.SIGSEGV)
    payload = decode_all(job)
    (calls / f"{job.input.replace('/', '_')}.{os.getpid()}.{time.monotonic_ns()}").touch()
    return payload


def test_a_decode_process_killed_by_a_signal_fails_its_file_only(tmp_path, monkeypatch):
    root = tmp_path / "videos"
    root.mkdir()
    for k in range(6):
        media.make_video(root / f"v{k}.mp4", n_frames=8)
    media.make_video(root / "crash.mp4", n_frames=8)
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.setenv("VIDEOVLM_TEST_CALLS", str(calls))
    jobs = find_videos(root).jobs
    report = run_local(jobs, crashing_stage, summarise, tmp_path / "out", workers=2,
                       processes=True, progress=False)
    recs = {r["input"]: r for r in records(tmp_path / "out")}
    assert sorted(recs) == sorted(j.input for j in jobs)  # one record each, none lost
    assert recs["crash.mp4"]["error"]["type"] == "DecoderCrash"
    assert "Segmentation fault" in recs["crash.mp4"]["error"]["message"]
    assert all(r["error"] is None for k, r in recs.items() if k != "crash.mp4")
    assert (report.done, report.failed, report.exit_code) == (6, 1, 1)
    # a job that finished before the crash is not decoded again; only those in flight then are
    runs = [p.name.split(".mp4")[0] for p in calls.iterdir()]
    assert sorted(set(runs)) == [f"v{k}" for k in range(6)]
    assert len(runs) <= 6 + 1  # a job whose result was on its way when the pool broke
