"""``videovlm find``'s cost per minute of video, one window at a time and batched.

    python benchmarks/find.py [--seconds 60] [--window 10] [-n 6] [--per-call 8]
                              [--rows int8,fp32,fp32-batched] [--out benchmarks/results/find.md]
    python benchmarks/find.py --memory [--out benchmarks/results/find_memory.md]

The workload: ``benchmarks/sampling.py``'s 720p30 H.264 clip (made on first use into
``benchmarks/media/``, git-ignored), ``--seconds`` long; ``find`` with the built-in recipe
(``--window`` s windows, ``-n`` frames each, one query) on a randomly initialised SmolVLM2-256M
shaped checkpoint (``python -m videovlm.testing``, built once into the temp folder as
``benchmarks/batch.py`` does), on the CPU, the frame cache off (every row encodes its frames).
All rows run in this one process, one after the other, after a warm-up call; each row is:

- ``int8``: the CPU default (``--quantize auto``: int8 Linear layers), whose rows cannot batch
  (its activations are scaled per call), so windows are answered one at a time;
- ``fp32``: ``--quantize none``, ``windows_per_call = 1``;
- ``fp32-batched``: ``--quantize none``, ``windows_per_call = --per-call``.

Columns: the result's own ``timing_s`` (decode + prepare of the windows' frames, the vision
tower, the language model's prefill and answers), the wall seconds of the call, those per
minute of video, and the ratio to the ``fp32`` row. Scores of the batched row are checked equal
to the one-at-a-time row's (max difference printed).

``--memory``: peak RSS of ``find`` on a 1-minute and a 10-minute clip (``tests/media.py``'s
coloured shots, 160x120, a cut every 20 s), each in a fresh process (``ru_maxrss``, the model
included), on the tiny checkpoint (the model's own memory is the same for both; what could grow
is what a run keeps per window: decoded frames, prepared images, prompts, caches). Flat means
the 10-minute run's peak is about the 1-minute run's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.media: the coloured shots of the test suite
sys.path.insert(0, str(REPO / "benchmarks"))

from batch import checkpoint  # noqa: E402
from sampling import make_clip  # noqa: E402

from tests.media import make_shots  # noqa: E402

QUERY = "a person riding a bicycle"
ROWS = ("int8", "fp32", "fp32-batched")


def memory_child(model: str, clip: str) -> None:
    """One find run in this fresh process; prints its windows and peak RSS (MB) as JSON."""
    import json
    import resource

    from videovlm.api import find
    from videovlm.model import Model

    result = find(clip, QUERY, model=Model.load(model, cache=False))
    print(json.dumps({"windows": len(result.relevance.windows),
                      "duration_s": result.video["duration_s"],
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory(out: Path) -> int:
    """Peak RSS of find on a 1- and a 10-minute clip, each in its own process."""
    import json
    import subprocess

    model = checkpoint(None, "tiny")
    media = REPO / "benchmarks" / "media"
    media.mkdir(parents=True, exist_ok=True)
    rows = {}
    for minutes in (1, 10):
        clip = media / f"find_shots_{minutes}min.mp4"
        if not clip.is_file():
            print(f"making {clip} (once)...", file=sys.stderr)
            make_shots(clip, list(range(0, minutes * 1500, 500)), minutes * 1500)
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(model), str(clip)],
                              capture_output=True, text=True, check=True)
        rows[minutes] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(rows[minutes], file=sys.stderr)
    ratio = rows[10]["peak_mb"] / rows[1]["peak_mb"]
    lines = ["# find: peak memory against the video's length", "",
             f"`python benchmarks/find.py --memory` on "
             f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
             f"{os.cpu_count()} cores (shared), Python {platform.python_version()}; the tiny "
             "checkpoint, find's defaults (10 s windows, 6 frames, 8 windows per call), "
             "160x120 clips of coloured shots, each run in a fresh process.", "",
             "| clip | windows | peak RSS |", "| --- | ---: | ---: |"]
    lines += [f"| {m} min | {r['windows']} | {r['peak_mb']:.0f} MB |" for m, r in rows.items()]
    lines += ["", f"10-minute peak / 1-minute peak: **{ratio:.2f}x** (flat: about 1)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out.write_text(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("-n", type=int, default=6, help="frames per window")
    parser.add_argument("--per-call", type=int, default=8, help="windows per batched call")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint folder")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--memory", action="store_true",
                        help="peak RSS on a 1- and a 10-minute clip instead")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    results_dir = REPO / "benchmarks" / "results"
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    if args.memory:
        return memory(args.out or results_dir / "find_memory.md")
    args.out = args.out or results_dir / "find.md"
    rows = [r for r in args.rows.split(",") if r]
    if unknown := [r for r in rows if r not in ROWS]:
        raise SystemExit(f"unknown rows {unknown}: use {', '.join(ROWS)}")

    import torch

    from videovlm.api import find, find_recipe
    from videovlm.model import Model

    clip = REPO / "benchmarks" / "media" / f"find_720p30_{args.seconds}s.mp4"
    if not clip.is_file():
        print(f"making {clip} (once)...", file=sys.stderr)
        clip.parent.mkdir(parents=True, exist_ok=True)
        make_clip(clip, args.seconds)
    path = checkpoint(args.model, "256m")
    models = {q: Model.load(str(path), device="cpu", dtype="float32", quantize=q, cache=False)
              for q in ("int8", "none") if any(r.startswith("int8" if q == "int8" else "fp32")
                                              for r in rows)}
    per_call = {"int8": 1, "fp32": 1, "fp32-batched": args.per_call}
    results, scores = {}, {}
    for row in rows:
        model = models["int8" if row == "int8" else "none"]
        recipe = find_recipe(None, window_s=args.window, per_call=per_call[row])
        find(clip, QUERY, model=model, n=args.n, recipe=recipe.with_overrides(
            window_s=max(args.window, args.seconds)))  # warm-up: one window
        print(f"running {row}...", file=sys.stderr)
        start = time.perf_counter()
        result = find(clip, QUERY, model=model, n=args.n, recipe=recipe)
        wall = time.perf_counter() - start
        t = result.timing_s
        results[row] = {"wall": wall, "decode": t.get("decode", 0.0) + t.get("prepare", 0.0),
                        "vision": t.get("vision", 0.0), "generate": t.get("generate", 0.0),
                        "windows": len(result.relevance.windows)}
        scores[row] = [w.score for w in result.relevance.windows]
        print(results[row], file=sys.stderr)

    minutes = result.video["duration_s"] / 60
    base = results.get("fp32", next(iter(results.values())))["wall"]
    lines = [
        "# find: cost per minute of video",
        "",
        f"`python benchmarks/find.py` on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} "
        f"UTC, {platform.machine()}, {os.cpu_count()} cores (shared with other jobs: the "
        f"figures move by tens of percent between runs), Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads.",
        "",
        f"A {result.video['duration_s']:.0f} s 720p30 H.264 clip, {results[rows[0]]['windows']}"
        f" windows of {args.window:g} s, {args.n} frames each; SmolVLM2-256M shape, random "
        "weights (512 px, 64 tokens per image), CPU, frame cache off.",
        "",
        "| row | windows per call | decode+prepare s | vision s | language model s | wall s "
        "| s per minute of video | wall / fp32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row, r in results.items():
        lines.append(f"| {row} | {per_call[row]} | {r['decode']:.1f} | {r['vision']:.1f} | "
                     f"{r['generate']:.1f} | {r['wall']:.1f} | {r['wall'] / minutes:.1f} | "
                     f"{r['wall'] / base:.2f}x |")
    if "fp32" in scores and "fp32-batched" in scores:
        diff = max(abs(a - b) for a, b in zip(scores["fp32"], scores["fp32-batched"],
                                               strict=True))
        lines += ["", f"Batched scores against one window at a time: max difference {diff:.2e}."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
