"""Speech-recognition cost: seconds of CPU work per minute of audio, per Whisper shape.

    python benchmarks/asr.py [--shapes tiny,base,small] [--tokens 100] [--runs 2]
                             [--out benchmarks/results/asr.md]

Checkpoints are :func:`videovlm.testing.make_whisper_checkpoint`'s (``base``/``small``: the
public models' layer sizes with random weights, so the compute is the real models'). A random
model writes text of arbitrary length, so each 30 s window is forced to ``--tokens`` new tokens
(``min_new_tokens`` = ``max_new_tokens``; 100 is ordinary speech, ~150 words a minute, about
1.3 tokens a word); a minute of audio is two windows plus reading its track
(:func:`videovlm.speech.open_audio`: decode + resample) and their log-mel features. Each shape
runs unquantized (fp32) and with the CPU default, int8 Linear layers (videovlm.model's
``_quantize_int8``), side by side; times are the best of ``--runs`` (the machine is shared).

``--peer-python PY``: also the same checkpoints on faster-whisper (CTranslate2, float32 and
int8), converted with the peer venv's ``ct2-transformers-converter`` and timed by
``peers/faster_whisper_row.py`` on the same window and token count. The peer venv:
``python -m venv fw && fw/bin/pip install faster-whisper``, plus a ``.pth`` file in its
site-packages naming videovlm's venv's site-packages (the converter imports transformers and
torch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from videovlm.speech import SAMPLE_RATE, SpeechModel, open_audio
from videovlm.testing import _asr_dims, make_whisper_checkpoint

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "samples" / "speech.mp4"


def minute_of_speech(path: Path) -> Path:
    """A 60 s clip (one 16x16 frame a second) whose sound is samples/speech.mp4's, six times
    over, as AAC at 22.05 kHz (so reading it resamples, as a real file's would)."""
    audio = open_audio(SPEECH)
    voice = np.concatenate(list(audio.chunks))[: 10 * SAMPLE_RATE]
    track = np.tile(voice, 6)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=1)
        video.width = video.height = 16
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), i * 4, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1)
            out.mux(video.encode(frame.reformat(format="yuv420p")))
        out.mux(video.encode(None))
        size = sound.codec_context.frame_size
        for start in range(0, len(track), size):
            chunk = np.zeros(size, np.float32)
            part = track[start:start + size]
            chunk[: len(part)] = part
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, start, Fraction(
                1, SAMPLE_RATE)
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return path


def best_of(runs: int, fn) -> float:
    return timed(runs, fn)[0]


def timed(runs: int, fn) -> tuple[float, float]:
    """The best wall time and the best CPU time (this process, all threads) of ``runs`` calls:
    on a shared machine the CPU seconds are the steadier measure of the work."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def read_track(path: Path) -> np.ndarray:
    return np.concatenate(list(open_audio(path).chunks))


def measure(folder: Path, quantize: str, samples: np.ndarray, tokens: int,
            runs: int) -> dict[str, float]:
    model = SpeechModel.load(str(folder), quantize=quantize)
    window = samples[: model.window_samples]
    forced = {"min_new_tokens": tokens, "max_new_tokens": tokens}
    features_s = best_of(runs, lambda: model.feature_extractor(
        window, sampling_rate=SAMPLE_RATE, return_tensors="pt"))
    window_s, window_cpu_s = timed(runs, lambda: model._window(window, "en", forced))
    params = sum(p.numel() for p in model.network.parameters())
    return {"window_s": window_s, "window_cpu_s": window_cpu_s, "features_s": features_s,
            "params": params}


def faster_whisper(peer: Path, folder: Path, clip: Path, tokens: int, runs: int
                   ) -> dict[str, dict[str, float]]:
    """The peer's rows (float32 and int8) for the checkpoint in ``folder``."""
    ct2 = folder.with_name(folder.name + "-ct2")
    subprocess.run([str(peer.parent / "ct2-transformers-converter"), "--model", str(folder),
                    "--output_dir", str(ct2), "--force"], check=True, capture_output=True)
    for name in ("tokenizer.json", "preprocessor_config.json"):  # faster-whisper reads them
        shutil.copy(folder / name, ct2 / name)
    rows = {}
    for compute in ("float32", "int8"):
        out = subprocess.run([str(peer), str(REPO / "benchmarks" / "peers" /
                                             "faster_whisper_row.py"), str(ct2), str(clip),
                              compute, str(tokens), str(runs)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"faster-whisper row failed:\n{out.stderr[-2000:]}")
        rows[compute] = json.loads(out.stdout.strip().splitlines()[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="tiny,base,small")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--peer-python", type=Path, default=None,
                        help="a faster-whisper venv's python: add its rows")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "asr.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = minute_of_speech(Path(tmp) / "minute.mp4")
        read_s = best_of(args.runs, lambda: read_track(clip))
        samples = read_track(clip)
        for shape in args.shapes.split(","):
            folder = make_whisper_checkpoint(Path(tmp) / shape, shape)
            tokens = min(args.tokens, _asr_dims(shape).positions - 8)
            for quantize in ("none", "int8"):
                got = measure(folder, quantize, samples, tokens, args.runs)
                per_minute = read_s + 2 * (got["window_s"])
                rows.append((shape, "videovlm (transformers)", quantize, got, tokens,
                             per_minute))
                print(f"{shape:6s} {quantize:5s} window {got['window_s']:.2f} s ({tokens} tokens), "
                      f"{per_minute:.2f} s per minute of audio", flush=True)
            if args.peer_python:
                for compute, got in faster_whisper(args.peer_python, folder, clip, tokens,
                                                   args.runs).items():
                    per_minute = read_s + 2 * got["window_s"]
                    rows.append((shape, "faster-whisper", compute, got, got["tokens"],
                                 per_minute))
                    print(f"{shape:6s} faster-whisper {compute:7s} window "
                          f"{got['window_s']:.2f} s ({got['tokens']} tokens), "
                          f"{per_minute:.2f} s per minute of audio", flush=True)
    fp32 = {shape: per_minute for shape, _, q, _, _, per_minute in rows if q == "none"}
    params = {shape: got["params"] for shape, _, q, got, _, _ in rows if q == "none"}
    lines = [
        "# Speech-recognition benchmark",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, load average {load:.1f} at the start: **shared with three other engineers' "
        "work at the time, so every figure is an upper bound**; `python benchmarks/asr.py` "
        f"(--shapes {args.shapes} --tokens {args.tokens} --runs {args.runs}).",
        "",
        f"Reading a minute of audio (PyAV decode of AAC 16 kHz + resample to 16 kHz mono "
        f"float32): {read_s:.3f} s.",
        "",
        "| shape | params | runner | weights | tokens per 30 s window | log-mel features (s) | "
        "one window: wall / CPU (s) | **s per minute of audio** (wall) | CPU s per minute | "
        "vs videovlm fp32 (wall) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, runner, quantize, got, tokens, per_minute in rows:
        lines.append(
            f"| {shape} | {params[shape] / 1e6:.1f} M | {runner} | {quantize} | {tokens} | "
            f"{got['features_s']:.3f} | {got['window_s']:.2f} / {got['window_cpu_s']:.2f} | "
            f"**{per_minute:.1f}** | {2 * got['window_cpu_s']:.1f} | "
            f"{fp32[shape] / per_minute:.2f}x |")
    lines += [
        "",
        "One window = log-mel features + encoder + the forced tokens with timestamps, English "
        "given (`SpeechModel._window`; transformers runs the encoder a second time for the "
        "no-speech probability); a minute = two windows + reading the track. CPU s: the "
        "process's CPU time, both threads, the steadier figure on a shared machine (wall "
        "times wait for the other jobs).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
