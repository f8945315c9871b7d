"""The whole fuzz corpus through ``videovlm frames`` on every installed backend, with figures.

```
.venv/bin/python benchmarks/fuzz.py                      # every clip, every backend (hours)
.venv/bin/python benchmarks/fuzz.py --clips h264.mkv,bikes.mp4 --backends av,opencv
.venv/bin/python benchmarks/fuzz.py --isolation          # what the decode process costs
```

The corpus (tests/fuzz.py, seed 0 unless ``--seed``): per clip 20 truncations, 50 payload
flips, 20 damaged header structures; the clips are the barcode clips of ``tests.fuzz.CLIPS``
and ``samples/*.mp4``. Each run is judged by ``tests.fuzz.check``; the table counts outcomes per
backend and lists every failure. ``--out FILE`` also writes the table as Markdown.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import fuzz  # noqa: E402
from videovlm.decode import available_backends  # noqa: E402
from videovlm.isolation import IN_PROCESS_ENV  # noqa: E402

KINDS = ["frames", "frames (damaged)", "refused", "FAIL"]


def run_corpus(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="videovlm-fuzz-"))
    names = args.clips.split(",") if args.clips else None
    clips = fuzz.make_clips(work / "clips", names)
    files = fuzz.corpus(clips, work / "corpus", seed=args.seed)
    backends = args.backends.split(",") if args.backends else available_backends()
    originals = {name: fuzz.original_frames(path) for name, (path, barcode) in clips.items()
                 if not barcode}
    runs = [(item, b) for item in files for b in backends]
    print(f"{len(clips)} clips, {len(files)} files, {len(runs)} runs, {args.jobs} at a time",
          file=sys.stderr)
    start = time.monotonic()
    done: list[tuple[fuzz.Damaged, str, fuzz.Outcome]] = []

    def one(run):
        item, backend = run
        return item, backend, fuzz.check(item, backend, originals.get(item.clip))

    def table() -> str:
        head = (f"{len(clips)} clips ({', '.join(clips)}), {len(files)} files, {len(done)} of "
                f"{len(runs)} runs in {time.monotonic() - start:.0f} s ({args.jobs} at a time), "
                f"seed {args.seed}")
        return head + "\n\n" + report(done, backends, list(clips))

    with ThreadPoolExecutor(args.jobs) as pool:
        for k, (item, backend, out) in enumerate(pool.map(one, runs), 1):
            done.append((item, backend, out))
            if out.kind == "FAIL":
                print(f"- `{backend}` `{item.path.name}`: {out.why}", file=sys.stderr)
            if k % 100 == 0:
                print(f"{k}/{len(runs)} in {time.monotonic() - start:.0f} s", file=sys.stderr)
                if args.out:  # a run stopped early still leaves its figures
                    args.out.write_text(table() + "\n")
    return table()


def _kind(out: fuzz.Outcome) -> str:
    return out.kind if out.kind != "frames" or not out.damaged else "frames (damaged)"


def report(done: list, backends: list[str], clips: list[str]) -> str:
    """Outcome counts per backend and per clip, the run times, and every failure."""
    by_backend = {b: collections.Counter() for b in backends}
    by_clip = {c: collections.Counter() for c in clips}
    seconds: dict[str, list[float]] = {b: [] for b in backends}
    for item, backend, out in done:
        by_backend[backend][_kind(out)] += 1
        by_clip[item.clip][_kind(out)] += 1
        seconds[backend].append(out.seconds)
    lines = ["| backend | runs | " + " | ".join(KINDS) + " | median s | max s |",
             "|---" * (len(KINDS) + 4) + "|"]
    for b in backends:
        if seconds[b]:
            lines.append(f"| {b} | {sum(by_backend[b].values())} | "
                         + " | ".join(str(by_backend[b][k]) for k in KINDS)
                         + f" | {statistics.median(seconds[b]):.1f} | {max(seconds[b]):.1f} |")
    lines += ["", "| clip | runs | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 2) + "|"]
    for c in clips:
        if by_clip[c]:
            lines.append(f"| {c} | {sum(by_clip[c].values())} | "
                         + " | ".join(str(by_clip[c][k]) for k in KINDS) + " |")
    lines += ["", "frames: exit 0, every frame's barcode (or, for samples, the whole file's "
              "frame) matches; (damaged): some frame's picture was damaged, none wrong; "
              "refused: exit 2, one line.", ""]
    failures = [f"- `{b}` `{item.path.name}`: {out.why}" for item, b, out in done
                if out.kind == "FAIL"]
    lines += ["Failures:" if failures else "No failures.", *failures]
    return "\n".join(lines)


def isolation_cost(args: argparse.Namespace) -> str:
    """``frames`` and repeated decodes in one process, with and without the decode process."""
    clip = ROOT / "samples" / "bikes.mp4"
    lines = ["| what | in process s | decode process s | ratio |", "|---|---|---|---|"]
    code = ("import time, sys; from videovlm import probe, plan, decode; info = probe(sys.argv[1]);"
            " refs = plan(info, 50); decode(info, refs); t = time.perf_counter();"
            " [decode(info, refs) for _ in range(10)]; print((time.perf_counter() - t) / 10)")
    cli = [sys.executable, "-m", "videovlm", "frames", str(clip), "-n", "50"]
    for label, cmd, parse in (("`videovlm frames bikes.mp4 -n 50` (whole process)", cli, None),
                              ("a decode of 50 frames, child warm", [sys.executable, "-c", code,
                                                                     str(clip)], float)):
        got = []
        for in_process in ("1", "0"):
            env = {**os.environ, "PYTHONPATH": str(ROOT), IN_PROCESS_ENV: in_process}
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                times.append(parse(out.stdout) if parse else time.perf_counter() - t)
            got.append(statistics.median(times))
        lines.append(f"| {label} | {got[0]:.3f} | {got[1]:.3f} | {got[1] / got[0]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", help="comma-separated clip names (default: all)")
    parser.add_argument("--backends", help="comma-separated (default: every installed one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--isolation", action="store_true",
                        help="measure the decode process's cost instead")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        help="also write the table here (Markdown), every 100 runs too")
    args = parser.parse_args()
    text = isolation_cost(args) if args.isolation else run_corpus(args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
