"""Stopped by a signal, out of disk space, given a folder that cannot be written: each is one line
and an exit code, leaves every output whole, and the same command then resumes without redoing
what was finished.

Signals are real (sent to a real ``videovlm`` process on a tiny checkpoint, once its first
record or window is out, so it is caught mid-way). A full disk is a real small tmpfs where the
machine lets us mount one (root), and always an ``ENOSPC`` from the real write path: only the
``os.write`` system call fails, for files under the output folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import media
from tests.helpers import (
    FAST_RECIPE,
    QUESTIONS,
    make_eval_videos,
    recipe_file,
    records,
    run_cli,
    write_questions,
)
from videovlm.batch import RESULTS_NAME
from videovlm.evaluate import PREDICTIONS_NAME, REPORT_NAME
from videovlm.files import mount_point
from videovlm.windows import progress_path

REPO = Path(__file__).resolve().parent.parent
LONG = """
extends = "describe"
name = "fast-describe"
[sampling]
n = 3
[windows]
scene_frames = 3
[generation]
max_new_tokens = 3
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _videovlm(*args: str) -> list[str]:
    return [sys.executable, "-m", "videovlm", *args]


@pytest.fixture(scope="module")
def fast_recipe(tmp_path_factory) -> Path:
    return recipe_file(tmp_path_factory, "fast.toml", FAST_RECIPE)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Six short clips: a batch of them takes a few seconds after the model loads."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(6):
        media.make_video(root / f"v{i}.mp4", n_frames=10)
    return root


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` exists and is not empty (the first record is out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.stat().st_size:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared (exit {proc.poll()})")


# -- signals ------------------------------------------------------------------------------------

SIGNALS = [pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
           pytest.param(signal.SIGINT, 130, id="SIGINT")]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), SIGNALS)
def test_a_signal_finishes_the_video_in_hand_then_the_batch_resumes_without_redoing(
        sig, code, clips, fast_recipe, tiny_idefics3, tmp_path):
    out = tmp_path / "out"
    cmd = _videovlm("batch", str(clips), "-o", str(out), "--pipeline", str(fast_recipe),
                    "--model", str(tiny_idefics3), "-f", "json")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    _wait_for(out / RESULTS_NAME, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    said = err.strip().splitlines()
    assert "Traceback" not in err
    assert any("finishing the current video, then stopping" in x for x in said), err
    assert said[-1].startswith("videovlm: interrupted: ") and "run the same command again" \
        in said[-1]
    first = records(out)
    assert 1 <= len(first) < 6  # the video in hand was finished and recorded, no more
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{6 - len(first)} done, 0 failed, {len(first)} skipped" in again.stderr
    final = records(out)
    assert sorted(r["input"] for r in final) == [f"v{i}.mp4" for i in range(6)]
    assert final[:len(first)] == first  # nothing redone: the same records, untouched


@pytest.mark.slow
def test_a_second_sigterm_stops_at_once_and_leaves_the_log_whole(clips, tiny_idefics3,
                                                                  tmp_path):
    recipe = tmp_path / "slow.toml"  # seconds a video, so the second signal lands inside one
    recipe.write_text(FAST_RECIPE.replace("max_new_tokens = 3", "max_new_tokens = 24"))
    out = tmp_path / "out"
    cmd = _videovlm("batch", str(clips), "-o", str(out), "--pipeline", str(recipe),
                    "--model", str(tiny_idefics3), "-f", "json")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    _wait_for(out / RESULTS_NAME, proc)
    before = len(records(out))
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:  # the first is heard: the video in hand would be finished...
        said.append(line)
        if "SIGTERM: finishing the current video" in line:
            break
    proc.send_signal(signal.SIGTERM)  # ... but the second abandons it
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    err = "".join(said) + rest
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "run the same command again" in err
    first = records(out)  # whole lines only
    assert len(first) in (before, before + 1) and len(first) < 6
    assert not [p for p in out.rglob("*.tmp")]
    assert subprocess.run(cmd, capture_output=True, env=_env(), cwd=REPO,
                          timeout=300).returncode == 0
    final = records(out)
    assert sorted(r["input"] for r in final) == [f"v{i}.mp4" for i in range(6)]
    assert final[:len(first)] == first


@pytest.mark.slow
def test_sigterm_stops_a_long_describe_after_its_window_and_the_same_command_goes_on(
        tiny_idefics3, tmp_path):
    video = media.make_video(tmp_path / "long.mp4", n_frames=160, fps=4, gop=8)  # 40 s
    recipe = tmp_path / "long.toml"
    recipe.write_text(LONG)
    out = tmp_path / "out"
    cmd = _videovlm("describe", str(video), "--window", "5", "--recipe", str(recipe),
                    "--model", str(tiny_idefics3), "-o", str(out), "-f", "json",
                    "--quantize", "none", "--stream")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline()  # the first window's segment
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    progress = progress_path(out, "long")
    kept = json.loads(progress.read_text())["windows"]
    assert 1 <= len(kept) < 8
    assert err.strip().splitlines()[-1] == (
        f"videovlm: stopped: {len(kept)} of 8 windows of {video} are kept in {progress}; run "
        "the same command again to go on from there")
    assert not (out / "long.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} of 8 windows already done: going on from there" in again.stderr
    result = json.loads((out / "long.json").read_text())
    kept_segments = [(s["start_s"], s["text"]) for w in kept for s in w["segments"]]
    assert [(s["start_s"], s["text"]) for s in result["segments"]][:len(kept_segments)] == \
        kept_segments  # the kept windows' text, not made again
    assert result["sampling"]["windows"]["spans"][-1][1] == pytest.approx(40.0)
    assert not progress.exists()


@pytest.mark.slow
def test_sigterm_stops_an_eval_after_its_video_and_it_resumes(tiny_idefics3, tmp_path):
    (tmp_path / "videos").mkdir()
    videos = make_eval_videos(tmp_path / "videos")
    for i in range(4):  # more videos, so there is something left to stop before
        media.make_video(videos / f"more{i}.mp4", n_frames=8)
    extra = [{"video": f"more{i}.mp4", "question": "What is shown?",
              "choices": ["a", "b", "c", "d"], "answer": "A", "id": f"m{i}"} for i in range(4)]
    qfile = write_questions(tmp_path / "q.jsonl", [*QUESTIONS, *extra])
    out = tmp_path / "out"
    cmd = _videovlm("eval", str(qfile), "--videos", str(videos), "-o", str(out),
                    "--model", str(tiny_idefics3), "-n", "2", "--workers", "0")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    _wait_for(out / RESULTS_NAME, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "run the same command again to resume" in err
    first = records(out)
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                           timeout=300)
    assert again.returncode in (0, 1), again.stderr  # 1: the cut clip of QUESTIONS fails
    final = records(out)
    assert final[:len(first)] == first and len(final) == len({r["input"] for r in final})
    ids = [p["id"] for p in map(json.loads, (out / PREDICTIONS_NAME).read_text().splitlines())]
    assert sorted(ids) == sorted({*ids}) and {"m0", "m1", "m2", "m3"} <= set(ids)


def test_sigterm_where_nothing_is_to_finish_stops_at_once_with_143(tmp_path):
    """``frames`` decodes one file: SIGTERM stops it as Ctrl-C does, one line, 143 (Python's
    default would end it with no line at all). The process is held in a slow decode by
    a frame budget over a long clip; the signal is sent once it has started."""
    video = media.make_video(tmp_path / "v.mp4", n_frames=3000, fps=30, gop=3000)
    proc = subprocess.Popen(_videovlm("frames", str(video), "-n", "3000", "--save",
                                      str(tmp_path / "f")),
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "f").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the decode finished before the signal landed")
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "videovlm: aborted" and "Traceback" not in err
    assert not list((tmp_path / "f").glob(".*.tmp"))


# -- a full disk --------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *options: str) -> Iterator[Path]:
    """A real small file system at ``where`` (tmpfs), or a skip saying why not."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: cannot make a small file system")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]),
                           "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _whole(out: Path) -> list[dict]:
    """The records, each line whole, and each record's files complete (never a temp file)."""
    recs = records(out)
    for r in recs:
        for rel in r["outputs"]:
            text = (out / rel).read_text()
            assert json.loads(text)["video"] == r["video"] if rel.endswith(".json") else text
    assert not [p for p in out.rglob("*.tmp")]
    return recs


def _disk_full_line(err: str, mount: Path, out: Path) -> str:
    lines = err.strip().splitlines()
    last = lines[-1]
    assert last.startswith(f"videovlm: error: no space left on {mount} writing {out}"), lines
    assert last.endswith(": free space and run the same command again to resume")
    assert "Traceback" not in err
    return last


@pytest.mark.slow
def test_a_batch_on_a_real_full_disk_stops_with_one_line_and_resumes_once_there_is_space(
        clips, fast_recipe, tiny_idefics3, tmp_path):
    out_mount = tmp_path / "disk"
    with tmpfs(out_mount, "48k"):
        out = out_mount / "out"
        cmd = _videovlm("batch", str(clips), "-o", str(out), "--pipeline", str(fast_recipe),
                        "--model", str(tiny_idefics3), "-f", "json,srt", "--quiet")
        full = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                              timeout=300)
        assert full.returncode == 2, full.stderr
        _disk_full_line(full.stderr, out_mount, out)
        first = _whole(out)
        assert len(first) < 6 and all(r["error"] is None for r in first)  # no video blamed
        subprocess.run(["mount", "-o", "remount,size=4m", str(out_mount)], check=True)
        again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                               timeout=300)
        assert again.returncode == 0, again.stderr
        final = _whole(out)
        assert sorted(r["input"] for r in final) == [f"v{i}.mp4" for i in range(6)]
        assert final[:len(first)] == first


class FullDisk:
    """``os.write`` as a disk that fills up, for files under ``root``: the ``nth`` write to a
    file whose name ``matches`` puts half its bytes, and every write under ``root`` after it is
    refused with ENOSPC. The code above the system call is the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path,
                 matches: Callable[[str], bool], nth: int) -> None:
        self.root, self.matches, self.nth = str(root.resolve()) + os.sep, matches, nth
        self.seen, self.full = 0, False
        self._write = os.write
        monkeypatch.setattr(os, "write", self.write)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return self._write(fd, data)
        if not path.startswith(self.root):
            return self._write(fd, data)
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self.matches(os.path.basename(path)):
            self.seen += 1
            if self.seen == self.nth:
                self.full = True
                return self._write(fd, bytes(data[:len(data) // 2]))
        return self._write(fd, data)


WHERE = {  # what fills the disk: the third record's line, or the third video's file
    "results.jsonl": lambda name: name == RESULTS_NAME,
    "outputs": lambda name: name.startswith(".v") and ".mp4.json." in name,
}


@pytest.mark.slow
@pytest.mark.parametrize("where", ["results.jsonl", "outputs"])
def test_an_injected_full_disk_stops_the_batch_whole_then_it_resumes(
        where, clips, fast_recipe, tiny_idefics3, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["batch", str(clips), "-o", str(out), "--pipeline", str(fast_recipe), "--model",
            str(tiny_idefics3), "-f", "json", "--quiet", "--workers", "0"]
    with monkeypatch.context() as m:
        FullDisk(m, out, WHERE[where], 3)
        assert run_cli(args) == 2
    err = capsys.readouterr().err
    said = _disk_full_line(err, mount_point(out), out)
    assert [x for x in err.splitlines() if ": WARNING: " not in x] == [said]  # gibberish times
    first = _whole(out)
    assert len(first) == 2 and all(r["error"] is None for r in first)
    assert run_cli(args) == 0  # space again: the rest, and nothing redone
    assert "4 done, 0 failed, 2 skipped" in capsys.readouterr().err
    final = _whole(out)
    assert final[:2] == first and sorted(r["input"] for r in final) == \
        [f"v{i}.mp4" for i in range(6)]


@pytest.mark.slow
def test_a_full_disk_under_eval_and_describe_outputs_is_one_line_and_nothing_half_written(
        tiny_idefics3, tmp_path, monkeypatch, capsys):
    (tmp_path / "videos").mkdir()
    videos = make_eval_videos(tmp_path / "videos")
    qfile = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    out = tmp_path / "eval"
    args = ["eval", str(qfile), "--videos", str(videos), "-o", str(out), "--model",
            str(tiny_idefics3), "-n", "2", "--quiet", "--workers", "0"]
    with monkeypatch.context() as m:
        FullDisk(m, out, lambda name: name.startswith(f".{REPORT_NAME}."), 1)
        assert run_cli(args) == 2
    _disk_full_line(capsys.readouterr().err, mount_point(out), out / REPORT_NAME)
    assert not (out / REPORT_NAME).exists() and not list(out.glob("*.tmp"))
    first = records(out)
    assert run_cli(args) in (0, 1)  # 1: the cut clip of QUESTIONS
    capsys.readouterr()
    assert records(out) == first  # every video was answered before the disk filled: none again
    assert json.loads((out / REPORT_NAME).read_text())["questions"]

    described = tmp_path / "described"
    video = str(videos / "a" / "x.mp4")
    args = ["describe", video, "-o", str(described), "--model", str(tiny_idefics3), "-n", "2",
            "-f", "json,srt", "--quiet"]
    with monkeypatch.context() as m:
        FullDisk(m, described, lambda name: name.startswith(".x.srt."), 1)
        assert run_cli(args) == 2
    _disk_full_line(capsys.readouterr().err, mount_point(described), described / "x.srt")
    assert not (described / "x.srt").exists() and not list(described.glob(".*.tmp"))
    assert run_cli(args) == 0
    assert (described / "x.srt").read_text() and json.loads((described / "x.json").read_text())


def test_a_disk_too_full_for_the_batch_lock_file_is_the_full_disk_line(tmp_path, monkeypatch):
    # the first thing a batch creates in its folder; creating a file can fail with ENOSPC too
    # (no inode left), as the real open(2) would say it
    import builtins

    from videovlm.batch.log import LOCK_NAME, prepare_run
    from videovlm.errors import DiskFullError

    real_open = builtins.open

    def full(file, *args, **kwargs):
        if os.path.basename(os.fspath(file)) == LOCK_NAME:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full)
    with pytest.raises(DiskFullError) as caught:
        prepare_run([], tmp_path / "out")
    assert str(caught.value) == (f"no space left on {mount_point(tmp_path)} writing "
                                 f"{tmp_path / 'out' / LOCK_NAME}: free space and run the same "
                                 "command again to resume")


# -- folders that cannot be written -------------------------------------------------------------


@pytest.fixture(scope="module")
def read_only(tmp_path_factory) -> Iterator[Path]:
    """A folder nobody may write in: a read-only tmpfs as root (root ignores permissions), a
    folder without write permission otherwise."""
    where = tmp_path_factory.mktemp("ro") / "ro"
    if os.geteuid() != 0:
        where.mkdir()
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
        return
    with tmpfs(where, "1m", "ro"):
        yield where


@pytest.fixture(scope="module")
def a_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("file") / "notes.txt"
    path.write_text("not a folder\n")
    return path


def _command(name: str, out: Path, clip: Path, folder: Path, qfile: Path, missing: Path
             ) -> list[str]:
    """Each command that writes a folder of outputs, with a model that does not exist: had the
    folder not been checked first, the error would be the model's."""
    model = ["--model", str(missing)]
    return {
        "describe": ["describe", str(clip), "-o", str(out), *model],
        "run": ["run", "describe", str(clip), "-o", str(out), *model],
        "batch": ["batch", str(folder), "-o", str(out), *model],
        "eval": ["eval", str(qfile), "--videos", str(folder), "-o", str(out), *model],
        "find": ["find", str(clip), "a red square", "-o", str(out), *model],
        "transcribe": ["transcribe", str(clip), "-o", str(out), "--asr-model", str(missing)],
        "describe --sheet": ["describe", str(clip), "--sheet", str(out / "sheet.jpg"), *model],
        "frames --save": ["frames", str(clip), "--save", str(out)],
        "frames --sheet": ["frames", str(clip), "--sheet", str(out / "sheet.jpg")],
    }[name]


@pytest.mark.parametrize("command", ["describe", "run", "batch", "eval", "find", "transcribe",
                                     "describe --sheet", "frames --save", "frames --sheet"])
@pytest.mark.parametrize("case", ["read-only", "missing under read-only", "a file",
                                  "under a file"])
def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(
        command, case, read_only, a_file, clips, tmp_path, capsys):
    out = {"read-only": read_only, "missing under read-only": read_only / "new" / "out",
           "a file": a_file, "under a file": a_file / "out"}[case]
    qfile = write_questions(tmp_path / "q.jsonl", [{"video": "v0.mp4", "question": "?",
                                                     "choices": ["a", "b"], "answer": "A"}])
    args = _command(command, out, clips / "v0.mp4", clips, qfile, tmp_path / "no-model")
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"videovlm: error: {out} "), err
    assert ("is a file" if "file" in case else "is not writable") in err[0]
    assert not (read_only / "new").exists() and a_file.is_file()
