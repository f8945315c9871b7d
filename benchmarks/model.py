"""Model-stage benchmark: preprocessing, tokens per frame, and many questions with a cached prefix.

    python benchmarks/model.py [--frames 50] [--qa-shape 256m] [--qa-frames 16] [--questions 10]
                               [--out benchmarks/results/model.md]

1. Preprocessing: 50 decoded-size frames (1280x720) to model inputs, ours (``prepare`` +
   ``encode``) against the stock processor (``do_image_splitting=False``: it upscales each frame
   to 4x the model size and back), for both families' image sizes.
2. Tokens per frame for each family (the image block, and with its ``Frame from MM:SS:`` text;
   the tiny checkpoints' toy tokenizer makes the text part a few tokens longer than SmolLM2's).
3. N questions vs 1 on the ``--qa-shape`` checkpoint (public dimensions, random weights, so the
   compute is the real model's): ``Model.answer`` (video encoded once, its KV cache shared by
   the questions, decoded in batches) against the naive way (``Model.generate`` on the full
   prompt per question). Every answer is forced to the same length (``min_new_tokens`` =
   ``max_new_tokens``) so the comparison is of work, not of how soon a random model happens to
   stop. Times are the best of two runs (the machine is shared).

Checkpoints are built with :func:`videovlm.testing.make_checkpoint` in a temporary folder.
Results are printed and written as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from videovlm.decode import Frame
from videovlm.model import Model
from videovlm.pack import build_prompt
from videovlm.prepare import prepare
from videovlm.testing import make_checkpoint

QUESTIONS = [
    "What is the main object in the video?", "How many people appear?", "What colour is the car?",
    "Where does it take place?", "Is it day or night?", "What happens at the end?",
    "Is there any text on screen?", "What is the weather like?", "Does the camera move?",
    "What sound would you expect?",
]
INTRO = "You are provided the following series of {n} frames from a 0:01:40 [H:MM:SS] video.\n"


def frames(n: int, height: int = 720, width: int = 1280, seed: int = 0) -> list[Frame]:
    """Decoded-size frames with image-like content (smooth gradients plus detail)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(n):
        base = np.stack([(xx + 7 * i) % 256, (yy + 3 * i) % 256, (xx + yy) // 8 % 256], -1)
        noise = rng.integers(0, 32, (height, width, 3))
        out.append(Frame(i, i * 100.0 / n, (base + noise).clip(0, 255).astype(np.uint8)))
    return out


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def preprocessing(model: Model, clip: list[Frame]) -> dict[str, float]:
    def ours() -> None:
        images = prepare(clip, model.image_size)
        prompt = build_prompt(model, clip, images, "Describe.", intro=INTRO.format(n=len(clip)))
        assert model.encode(prompt.text, images)["pixel_values"].shape[1] == len(clip)

    text = build_prompt(model, clip, prepare(clip, model.image_size), "Describe.",
                        intro=INTRO.format(n=len(clip))).text
    ours_s = best_of(3, ours)
    stock_s = best_of(1, lambda: model.processor(
        text=[text], images=[[f.image for f in clip]], return_tensors="pt",
        do_image_splitting=False))
    images = prepare(clip, model.image_size)
    encode_s = best_of(3, lambda: model.encode(text, images))
    stock_encode_s = best_of(1, lambda: model.encode_with_processor(text, images))
    return {"ours": ours_s, "stock": stock_s, "encode": encode_s, "stock_encode": stock_encode_s}


def tokens_per_frame(model: Model, n: int) -> tuple[float, int]:
    clip = frames(n, 90, 160)
    images = prepare(clip, model.image_size)
    full = build_prompt(model, clip, images, "Describe.", intro=INTRO.format(n=n)).tokens
    one = build_prompt(model, clip[:1], images[:1], "Describe.", intro=INTRO.format(n=n)).tokens
    return (full - one) / (n - 1), full


def questions(model: Model, n_frames: int, n_questions: int, new_tokens: int,
              naive_questions: int) -> dict[str, float]:
    clip = frames(n_frames, 360, 640)
    images = prepare(clip, model.image_size)
    prefix = build_prompt(model, clip, images, QUESTIONS[0], intro=INTRO.format(n=n_frames),
                          max_new_tokens=new_tokens)
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    asked = (QUESTIONS * (n_questions // len(QUESTIONS) + 1))[:n_questions]

    def naive(qs: list[str]) -> None:
        for q in qs:
            prompt = build_prompt(model, clip, images, q, intro=INTRO.format(n=n_frames),
                                  max_new_tokens=new_tokens)
            model.generate(model.encode(prompt.text, prompt.images), **gen)

    def cached(qs: list[str], **generation: int) -> None:
        """The frames encoded once (vision tower and prefill), then every question from it."""
        encoded = model.encode_prefix(prefix.head, model.image_features(images))
        model.answer(encoded, [prefix.tail_for(q) for q in qs], **generation)

    cached(asked[:1], max_new_tokens=1)  # warm-up (allocator, kernels)
    naive_1 = best_of(2, lambda: naive(asked[:1]))
    k = min(naive_questions, n_questions)
    naive_k = naive_1 if k == 1 else best_of(1, lambda: naive(asked[:k]))
    return {
        "tokens": prefix.tokens,
        "cached_1": best_of(2, lambda: cached(asked[:1], **gen)),
        "cached_n": best_of(2, lambda: cached(asked, **gen)),
        "naive_1": naive_1,
        "naive_n": naive_k * n_questions / k,  # each naive question is the same work again
        "naive_measured": k,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--qa-shape", default="256m", choices=["tiny", "256m", "2b"])
    parser.add_argument("--qa-frames", type=int, default=16)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--naive-questions", type=int, default=None,
                        help="measure the naive way on this many questions and scale to "
                        "--questions (each is a full re-encode; default: all of them)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "model.md")
    args = parser.parse_args()

    lines = [
        "# Model-stage benchmark",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the start "
        f"(a shared machine: wall times are upper bounds); `python benchmarks/model.py` "
        f"(--frames {args.frames} --qa-shape {args.qa_shape} --qa-frames {args.qa_frames} "
        f"--questions {args.questions} --new-tokens {args.new_tokens} "
        f"--naive-questions {args.naive_questions or args.questions}).",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        lines += ["## Preprocessing: frames (1280x720) to model inputs", "",
                  "| family | size | frames | ours: prepare + prompt + inputs (s) | "
                  "stock processor (s) | ratio | inputs only: ours / processor (s) |",
                  "|---|---|---|---|---|---|---|"]
        clip = frames(args.frames)
        tpf_rows = []
        for family in ("idefics3", "smolvlm"):
            path = make_checkpoint(Path(tmp) / family, family, "tiny")
            model = Model.load(str(path), cache=False)
            pre = preprocessing(model, clip)
            row = (f"| {family} | {model.image_size} | {args.frames} | {pre['ours']:.3f} | "
                   f"{pre['stock']:.3f} | {pre['stock'] / pre['ours']:.1f}x | "
                   f"{pre['encode']:.3f} / {pre['stock_encode']:.3f} |")
            print(row, flush=True)
            lines.append(row)
            per, total = tokens_per_frame(model, args.frames)
            tpf_rows.append(f"| {family} | {model.tokens_per_image} | "
                            f"{model.tokens_per_image + 3} | {per:.1f} | {total} |")
        lines += ["", "## Tokens per frame", "",
                  "| family | image tokens | image block | with timestamp text | "
                  f"prompt with {args.frames} frames |", "|---|---|---|---|---|", *tpf_rows]
        print("\n".join(tpf_rows), flush=True)

        path = make_checkpoint(Path(tmp) / "qa", shape=args.qa_shape)
        model = Model.load(str(path), device=args.device, dtype=args.dtype, cache=False)
        qa = questions(model, args.qa_frames, args.questions, args.new_tokens,
                       args.naive_questions or args.questions)
        n = args.questions
        cached_ratio = qa["cached_n"] / qa["cached_1"]
        naive_ratio = qa["naive_n"] / qa["naive_1"]
        scaled = "" if qa["naive_measured"] == n else f" (measured {qa['naive_measured']}, scaled)"
        lines += [
            "", f"## {n} questions vs 1 ({args.qa_shape} shape, {model.device} {model.dtype}, "
            f"{args.qa_frames} frames = {qa['tokens']} prompt tokens, "
            f"{args.new_tokens} new tokens per answer)", "",
            f"| method | 1 question (s) | {n} questions (s) | ratio |", "|---|---|---|---|",
            f"| prefix KV cache (`Model.answer`) | {qa['cached_1']:.2f} | {qa['cached_n']:.2f} | "
            f"{cached_ratio:.2f}x |",
            f"| naive re-encode (`Model.generate` each) | {qa['naive_1']:.2f} | "
            f"{qa['naive_n']:.2f}{scaled} | {naive_ratio:.2f}x |",
            "", f"{n} questions: cached {qa['cached_n']:.2f} s vs naive {qa['naive_n']:.2f} s "
            f"({qa['naive_n'] / qa['cached_n']:.1f}x faster).",
        ]
        print("\n".join(lines[-6:]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp")
    tmp_out.write_text("\n".join(lines) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
