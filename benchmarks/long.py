"""Long-video benchmark: memory flat and cost linear when an hour is described window by window.

``python benchmarks/long.py [--model DIR]`` (outside CI; needs the ``ffmpeg`` program to make
the media). It generates, once, under ``/tmp/videovlm-long``:

- a 60-minute and a 5-minute 1280x720 H.264 file (10 fps, a keyframe every 5 s, ultrafast: a
  minute to encode) whose picture changes hue every 90 s, i.e. a cut every 90 s;
- a 2-minute 720p file at 25 fps with B-frames (x264 ``veryfast``), the shape of real footage,
  for the cost of scene detection per minute.

Then it runs the default ``videovlm describe`` (no options) on both long files, each in a fresh
process, and prints: peak RSS of the process (model included, ``ru_maxrss`` from ``wait4``) and
the ratio of the 60-minute run to the 5-minute one (target <= 1.1); segments, their density and
their frames; windows and seconds per window; and scene detection's seconds per minute of 720p
video, with every frame decoded and with non-reference frames skipped (what long files use).
The model defaults to the tiny random-weight checkpoint (``python -m videovlm.testing``): memory
and structure are the point, not the text. Results go to ``benchmarks/results/long.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path("/tmp/videovlm-long")
RESULTS_MD = ROOT / "benchmarks" / "results" / "long.md"
CUT_EVERY_S = 90


def _ffmpeg(out: Path, seconds: int, fps: int, preset: str, gop: int) -> Path:
    if out.exists():
        return out
    if shutil.which("ffmpeg") is None:
        sys.exit("benchmarks/long.py needs the ffmpeg program to make its media")
    MEDIA.mkdir(parents=True, exist_ok=True)
    source = (f"testsrc2=size=1280x720:rate={fps}:duration={seconds},"
              f"hue=h=120*mod(floor(t/{CUT_EVERY_S})\\,3)")
    tmp = out.with_suffix(".part.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-c:v",
                    "libx264", "-preset", preset, "-g", str(gop), "-pix_fmt", "yuv420p",
                    str(tmp)], check=True)
    tmp.replace(out)
    return out


def media() -> dict[str, Path]:
    return {
        "60 min": _ffmpeg(MEDIA / "long60.mp4", 3600, 10, "ultrafast", 50),
        "5 min": _ffmpeg(MEDIA / "long5.mp4", 300, 10, "ultrafast", 50),
        "2 min 25 fps": _ffmpeg(MEDIA / "b25.mp4", 120, 25, "veryfast", 250),
    }


def _child(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit code of ``cmd`` run as a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code:
        sys.exit(f"{' '.join(cmd)} failed ({code}):\n{err}")
    return wall, usage.ru_maxrss / 1024, code


def describe_run(video: Path, model: str, out: Path) -> dict:
    wall, rss, _ = _child([sys.executable, "-m", "videovlm", "describe", str(video),
                           "--model", model, "-o", str(out), "-f", "json", "--quiet"])
    result = json.loads((out / f"{video.stem}.json").read_text())
    segs = result["segments"]
    whole = [[0, result["video"]["duration_s"]]]
    spans = result["sampling"].get("windows", {}).get("spans", whole)
    t = result["timing_s"]
    per_window = (t["total"] - t.get("probe", 0) - t.get("scenes", 0)) / len(spans)
    minutes = result["video"]["duration_s"] / 60
    return {"wall_s": wall, "rss_mib": rss, "segments": len(segs), "windows": len(spans),
            "per_5min": len(segs) / (minutes / 5),
            "min_frames": min(len(s["frames"]) for s in segs),
            "frames": len(result["sampling"]["frames"]), "s_per_window": per_window,
            "scenes_s": t.get("scenes", 0.0), "minutes": minutes,
            "covers": segs[0]["start_s"] == 0 and
            abs(segs[-1]["end_s"] - result["video"]["duration_s"]) < 1e-6}


def scene_cost(video: Path) -> dict[str, float]:
    """Seconds of scene detection per minute of ``video``, all frames and NONREF-skipping."""
    code = (
        "import json, sys, time\n"
        "from videovlm.probe import probe\n"
        "from videovlm.scenes import detect_cuts\n"
        f"info = probe({str(video)!r})\n"
        "out = {}\n"
        "for skip in (False, True):\n"
        "    t = time.perf_counter(); cuts = detect_cuts(info, skip_nonref=skip)\n"
        "    out[str(skip)] = [time.perf_counter() - t, [info.timeline.time_s(c) for c in cuts]]\n"
        "out['minutes'] = info.duration_s / 60\n"
        "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    data = json.loads(res.stdout)
    return {"all": data["False"][0] / data["minutes"], "nonref": data["True"][0] / data["minutes"],
            "same_cuts": data["False"][1] == data["True"][1], "cuts": data["True"][1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="checkpoint folder [default: a tiny random-weight one]")
    args = parser.parse_args()
    files = media()
    with tempfile.TemporaryDirectory(prefix="vvlong-") as tmp:
        model = args.model
        if model is None:
            model = str(Path(tmp) / "tiny")
            subprocess.run([sys.executable, "-m", "videovlm.testing", "tiny-model", model],
                           check=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        runs = {name: describe_run(files[name], model, Path(tmp) / name.replace(" ", ""))
                for name in ("5 min", "60 min")}
    cost = scene_cost(files["2 min 25 fps"])
    ratio = runs["60 min"]["rss_mib"] / runs["5 min"]["rss_mib"]
    lines = [
        "# Long videos: the default `videovlm describe` on 5 and 60 minutes of 720p",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work, "
        f"Python {platform.python_version()}; model: "
        f"{'tiny random-weight checkpoint' if args.model is None else args.model}. "
        "Media: 1280x720 H.264, 10 fps, a cut every 90 s. `python benchmarks/long.py`.",
        "",
        "| file | windows | segments | per 5 min | fewest frames in a segment | frames | "
        "s per window | scene detection s | wall s | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['windows']} | {r['segments']} | {r['per_5min']:.1f} | "
                     f"{r['min_frames']} | {r['frames']} | {r['s_per_window']:.1f} | "
                     f"{r['scenes_s']:.1f} | {r['wall_s']:.0f} | {r['rss_mib']:.0f} |")
    lines += [
        "",
        f"Peak RSS, 60 min / 5 min: **{ratio:.2f}x** (target <= 1.1). "
        f"Segments cover the whole file: {all(r['covers'] for r in runs.values())}.",
        "",
        "Scene detection per minute of 720p, 25 fps, x264 `veryfast` (B-frames): "
        f"**{cost['all']:.2f} s** decoding every frame, **{cost['nonref']:.2f} s** skipping "
        f"non-reference frames (long files); same cuts: {cost['same_cuts']} "
        f"({', '.join(f'{c:.2f} s' for c in cost['cuts'])}).",
        f"On the 10-fps benchmark file (NONREF, no B-frames there): "
        f"{runs['60 min']['scenes_s'] / 60:.2f} s per minute.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS_MD.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_MD.write_text(text)


if __name__ == "__main__":
    main()
