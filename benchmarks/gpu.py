"""The GPU path: one `ask`'s latency, and batch throughput with ``--batch-size``, against plain
transformers one video at a time.

    benchmarks/gpu.sh                       # on a machine with a GPU: venv, checkpoints, this
    python benchmarks/gpu.py --smoke        # anywhere (CPU): tiny checkpoint, 2 videos, sizes 1, 2
    python benchmarks/gpu.py [--shapes 256m,2b] [--batch-sizes 1,8,32] [--videos 32]
                             [--frames 50] [--new-tokens 32] [--workers 8] [--out DIR]

The workload is the issue's: one question about ``--frames`` frames of a clip (the sample clips,
copied ``--videos`` times under other names), ``--new-tokens`` new tokens forced
(``min_new_tokens``: a random model's answers are compared by work, not by when it stops),
greedy, on random-weight checkpoints of the real architectures built by ``python -m
videovlm.testing`` (``256m``: SmolVLM2-256M, 512 px; ``2b``: SmolVLM-Instruct's 2.2B, 384 px),
with the device's defaults (bf16 and SDPA on CUDA). The frame cache is off: copies of one clip
would otherwise be encoded once, and the run would measure the cache.

Rows, per shape:

- ``ask``: ``videovlm.ask`` on one clip with the model loaded (probe, decode, prepare, vision,
  prefill, decode): the median of three, after a warm-up.
- ``batch N``: ``videovlm batch``'s local engine (``--workers`` decode threads) over the
  ``--videos`` clips with ``--batch-size N``: videos per second of wall time; ``wait s``, the
  time the model stage waited for the decode workers (near zero: they keep up); ``same``, how
  many answers equal batch size 1's (bf16 rounds differently in a batch: not all need match).
- ``transformers``: plain transformers one video at a time (the stock processor on the same
  prepared frames, ``generate`` on the whole prompt: vision and prefill in one forward), the
  same loaded weights, no overlap of decoding with generation.

Every row reports the peak GPU memory it allocated (``torch.cuda.max_memory_allocated``). The
2b checkpoint is built in the background while the 256m rows run. ``--budget-s`` stops starting
new rows once spent, so the script ends in its slot; results are written to ``DIR/gpu.json``
(default ``$OUT``, else ``benchmarks/results``) after every row, and a table to stdout and
``DIR/gpu.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from batch import SAMPLES, make_folder  # noqa: E402  (the sample clips, cycled under new names)

QUESTION = "What happens in this video, and where?"


def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/gpu.py", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="CPU check that it runs: tiny checkpoint, 2 videos, batch sizes 1 and 2")
    p.add_argument("--shapes", default="256m,2b")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--videos", type=int, default=32, help="clips per batch row")
    p.add_argument("--baseline-videos", type=int, default=8,
                   help="clips for the plain-transformers row")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--workers", type=int, default=8, help="decode workers of the batch rows")
    p.add_argument("--device", default=None, help="default: cuda if there is one")
    p.add_argument("--quantize", default=None, help="default: the device's (none on a GPU)")
    p.add_argument("--budget-s", type=float, default=360.0,
                   help="no new row starts after this many seconds")
    p.add_argument("--work", type=Path, default=None, help="checkpoints and clips [temp dir]")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for gpu.json and gpu.md [$OUT, else benchmarks/results]")
    args = p.parse_args(argv)
    if args.smoke:
        args.shapes, args.batch_sizes = "tiny", "1,2"
        args.videos = args.baseline_videos = 2
        args.frames, args.new_tokens, args.workers = 4, 4, 2
        args.device = args.device or "cpu"
        args.quantize = args.quantize or "none"  # int8 never batches videos: test the batching
    args.out = args.out or Path(os.environ.get("OUT") or REPO / "benchmarks" / "results")
    args.work = args.work or Path(tempfile.mkdtemp(prefix="videovlm-gpu-"))
    return args


def build(shape: str, folder: Path) -> subprocess.Popen[bytes] | None:
    """Start writing the ``shape`` checkpoint with ``python -m videovlm.testing`` (None: it is
    there already)."""
    if (folder / "config.json").is_file():
        return None
    family = ["--family", "smolvlm"] if shape in ("tiny", "256m") else []
    return subprocess.Popen([sys.executable, "-m", "videovlm.testing", "tiny-model",
                             str(folder), "--shape", shape, *family],
                            stdout=subprocess.DEVNULL, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


class Peak:
    """Peak GPU memory allocated inside the block, in GB (None on the CPU)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.gb: float | None = None

    def __enter__(self) -> Peak:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.gb = round(torch.cuda.max_memory_allocated() / 1e9, 3)


def shape_rows(shape: str, path: Path, args: argparse.Namespace, videos: Path,
               deadline: float, save: Any) -> None:
    """Every row of one shape, each handed to ``save(rows)`` as soon as it is measured, so a
    run cut short keeps what it has."""
    from videovlm import api
    from videovlm import batch as b
    from videovlm.model import Model
    from videovlm.pipelines import load_recipe
    from videovlm.run import ModelRun

    recipe = load_recipe("qa")
    recipe = dataclasses.replace(recipe, generation={
        **recipe.generation, "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens})
    rows: dict[str, Any] = {}
    t0 = time.perf_counter()
    model = Model.load(str(path), device=args.device, quantize=args.quantize, cache=False)
    rows["load"] = {"s": round(time.perf_counter() - t0, 2), **model.info(),
                    "attention": model.network.config._attn_implementation}
    jobs = [b.Job(p, p.name) for p in sorted(videos.iterdir())][:args.videos]

    for job in jobs[:len(SAMPLES)]:  # warm-up: kernels, allocator, each clip's first decode
        api.ask(job.path, QUESTION, model=model, n=args.frames, recipe=recipe)
    seconds = []
    with Peak(model.device) as peak:
        for _ in range(3):
            t0 = time.perf_counter()
            result = api.ask(jobs[0].path, QUESTION, model=model, n=args.frames, recipe=recipe)
            seconds.append(time.perf_counter() - t0)
    rows["ask"] = {"s": round(statistics.median(seconds), 3), "runs_s": [round(s, 3) for s in
                                                                          seconds],
                   "timing_s": result.timing_s, "prompt_tokens": result.prompt["tokens"],
                   "gpu_gb": peak.gb}
    save(rows)

    stages = b.VideoStages(recipe, image_size=model.image_size, n=args.frames,
                           questions=b.Questions(common=[b.Question(QUESTION)]))
    one = functools.partial(stages.model, model)
    answers_at_1: dict[str, str] | None = None
    for size in [int(x) for x in args.batch_sizes.split(",")]:
        if time.perf_counter() > deadline:
            rows[f"batch {size}"] = {"skipped": "budget spent"}
            continue
        size_used = b.batch_size_for(model, size)
        out = args.work / f"out-{shape}-{size}"
        with Peak(model.device) as peak:
            report = b.run_local(jobs, stages.cpu, one, out, workers=args.workers,
                                 resume=False, progress=False, batch_size=size_used,
                                 model_batch=b.batched(model, one, size_used))
        records = {r["input"]: r for r in b.ResultsLog(out / b.RESULTS_NAME).load().values()}
        answers = {k: (r["answers"] or [{}])[0].get("answer") for k, r in records.items()
                   if r.get("error") is None}
        answers_at_1 = answers_at_1 or answers
        rows[f"batch {size}"] = {
            "videos": len(jobs), "done": report.done, "failed": report.failed,
            "wall_s": round(report.wall_s, 3),
            "videos_per_s": round(report.done / report.wall_s, 3) if report.wall_s else None,
            "wait_s": round(report.wait_s, 3), "model_s": round(report.model_s, 3),
            "cpu_s": round(report.cpu_s, 3), "gpu_gb": peak.gb,
            "same_as_batch_1": sum(answers.get(k) == v for k, v in answers_at_1.items()),
        }
        save(rows)

    if time.perf_counter() > deadline:
        rows["transformers"] = {"skipped": "budget spent"}
        save(rows)
        return
    gen = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens,
           "do_sample": False}
    count = min(args.baseline_videos, len(jobs))
    t0 = time.perf_counter()
    with Peak(model.device) as peak:
        for job in jobs[:count]:
            inputs = api.load_video(job.path, recipe, n=args.frames, image_size=model.image_size)
            run = ModelRun(model, inputs, recipe)
            prompt, _ = run.prompt(inputs.whole(), run.fill("question", len(inputs.frames),
                                                            question=QUESTION))
            model.generate(model.encode_with_processor(prompt.text, prompt.images), **gen)
    wall = time.perf_counter() - t0
    rows["transformers"] = {"videos": count, "wall_s": round(wall, 3),
                            "videos_per_s": round(count / wall, 3), "gpu_gb": peak.gb}
    save(rows)


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| shape | row | videos/s | x transformers | wall s | wait s | same | GPU GB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for shape, rows in results["shapes"].items():
        base = (rows.get("transformers") or {}).get("videos_per_s")
        for name, row in rows.items():
            if name == "load":
                continue
            if "skipped" in row:
                lines.append(f"| {shape} | {name} | skipped: {row['skipped']} | | | | | |")
                continue
            vps = row.get("videos_per_s")
            ratio = f"{vps / base:.2f}" if vps and base else ""
            wall = row.get("wall_s", row.get("s"))
            lines.append(f"| {shape} | {name} | {vps or ''} | {ratio} | {wall} | "
                         f"{row.get('wait_s', '')} | {row.get('same_as_batch_1', '')} | "
                         f"{row.get('gpu_gb') if row.get('gpu_gb') is not None else 'n/a'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    start = time.perf_counter()
    deadline = start + args.budget_s
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = args.shapes.split(",")
    builds = {s: (args.work / f"ckpt-{s}") for s in shapes}
    started = {s: build(s, folder) for s, folder in builds.items()}  # all at once: 2b in the back
    videos = make_folder(args.work / "videos", max(args.videos, args.baseline_videos))
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.platform(),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "settings": {k: str(v) for k, v in vars(args).items()},
        "shapes": {},
    }

    def save() -> None:
        (args.out / "gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    def note(shape: str, rows: dict[str, Any], new: dict[str, Any]) -> None:
        for name, row in new.items():
            if rows.get(name) != row:
                print(f"[{time.perf_counter() - start:6.1f} s] {shape} {name}: "
                      f"{json.dumps(row, default=str)}", file=sys.stderr, flush=True)
        rows.update(new)
        save()

    for shape in shapes:
        proc = started[shape]
        if proc is not None and proc.wait() != 0:
            results["shapes"][shape] = {"load": {"error": "building the checkpoint failed"}}
            continue
        if time.perf_counter() > deadline:
            results["shapes"][shape] = {"ask": {"skipped": "budget spent"}}
            continue
        rows: dict[str, Any] = {}
        results["shapes"][shape] = rows
        try:
            shape_rows(shape, builds[shape], args, videos, deadline,
                       lambda new, shape=shape, rows=rows: note(shape, rows, new))
        except Exception as exc:  # a shape that fails is reported, the next one runs
            note(shape, rows, {"error": {"skipped": f"{type(exc).__name__}: {exc}"}})
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    results["total_s"] = round(time.perf_counter() - start, 1)
    save()
    lines = table(results)
    (args.out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"total {results['total_s']} s; {args.out / 'gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
