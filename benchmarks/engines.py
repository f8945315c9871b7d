"""The model stage against the ways people run SmolVLM: one question about 50 frames.

    python benchmarks/engines.py [--shape 256m|2b] [--frames 50] [--new-tokens 32]
                                 [--rows videovlm-cold,videovlm-warm,transformers]
                                 [--out benchmarks/results/engines.md]

The workload (issue "the model stage at the machine's limit"): ``samples/bikes.mp4``, 50 frames
by the selection rule, prepared by videovlm to the model's single-image size, one question,
``--new-tokens`` new tokens forced (``min_new_tokens``: the comparison is of work, not of when a
random model stops), greedy, on a randomly initialised checkpoint of the real architecture
(``--shape 256m``: SmolVLM2-256M, 512 px; ``2b``: SmolVLM-Instruct's 2.2B, 384 px), fp32 on the
CPU. Every row runs in a fresh process; columns:

- **vision s**: the vision tower over the frames (or the frame cache, for the warm row);
- **prefill s**: the language model over the prompt up to the answer's first token;
- **decode tok/s**: new tokens after the first, per second;
- **total s**: model load + decode and prepare the frames + vision + prefill + all new tokens;
- **peak RSS**: the child's ``ru_maxrss`` (the whole process: Python, torch, the model);
- ratios to the ``videovlm-cold`` row.

Rows:

- ``videovlm-cold``: videovlm's model stage with its CPU defaults (``--quantize auto``: int8) and
  an empty frame cache (what a first ``ask`` does: frames encoded one at a time, the prompt's
  head encoded once, the answer continued from its KV cache).
- ``videovlm-warm``: the same command again (the frames' encodings read from the frame cache
  the cold row wrote): the "never twice" target is ``total <= 0.25x`` of the cold row's.
- ``videovlm-fp32``: the same, ``--quantize none`` (the weights as loaded).
- ``transformers``: plain transformers the usual way: the stock processor on the same prepared
  frames (``do_resize=False, do_image_splitting=False``), ``model.generate`` with SDPA attention
  on the whole prompt (vision and prefill in one forward; its vision share is timed with a hook
  on the vision tower).
- ``openvino-fp32`` / ``openvino-int8``: OpenVINO through ``optimum-intel`` (its
  ``OVModelForVisualCausalLM``; the checkpoint exported with ``optimum-cli export openvino``,
  ``--weight-format fp32`` or ``int8``), given the very ``input_ids`` and ``pixel_values`` videovlm
  made for the other rows. It runs in a venv of its own (``--openvino-venv``, made on first use
  with ``pip``: optimum-intel 2.2 exports only with transformers <= 4.57.6, so a copy of the
  checkpoint gets transformers-4 tokenizer names); ``total`` adds videovlm's frame preparation.
- ``drift``: int8 against fp32 on the same checkpoint and the first ``--drift-frames`` frames:
  cosine of each frame's image features (mean and worst), and the KL divergence of the answer's
  first-token distribution (fp32 || int8). Random weights: a bound on the arithmetic, not a
  measure of answer quality on the real weights.

llama.cpp (``xllamacpp``), the issue's other peer, is not a row yet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VIDEO = REPO / "samples" / "bikes.mp4"
QUESTION = "What happens in this video, and where?"
ROWS = ("videovlm-cold", "videovlm-warm", "videovlm-fp32", "transformers", "openvino-fp32",
        "openvino-int8", "drift")
PEERS = REPO / "benchmarks" / "peers"
OPENVINO_PACKAGES = ["torch==2.13.0", "transformers==4.57.6", "optimum-intel[openvino]==2.2.0",
                     "nncf", "num2words", "pillow"]

sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "benchmarks" / "peers"))
from batch import checkpoint  # noqa: E402  (the shape-faithful checkpoint, built once)
from timing import FirstToken  # noqa: E402  (shared with the peers' rows)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def workload(model_path: str, frames: int, new_tokens: int, quantize: str, cache: bool
             ) -> tuple[Any, Any, float, float]:
    """The model, the workload's prompt, and the seconds to load the model and to make the
    prompt (probe, decode, prepare, pack): the same for every row."""
    from videovlm.api import load_video
    from videovlm.model import Model
    from videovlm.pipelines import load_recipe
    from videovlm.run import ModelRun

    t0 = time.perf_counter()
    model = Model.load(model_path, device="cpu", dtype="float32", quantize=quantize, cache=cache)
    load_s = time.perf_counter() - t0
    recipe = load_recipe("qa")
    t0 = time.perf_counter()
    inputs = load_video(VIDEO, recipe, n=frames, image_size=model.image_size)
    run = ModelRun(model, inputs, recipe)
    prompt, _ = run.prompt(inputs.whole(), run.fill("question", len(inputs.frames),
                                                    question=QUESTION),
                           max_new_tokens=new_tokens)
    return model, prompt, load_s, time.perf_counter() - t0


def child(row: str, model_path: str, frames: int, new_tokens: int) -> dict[str, float]:
    """One row, in this (fresh) process; returns its measurements."""
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if row == "drift":
        return drift(model_path, frames)
    model, prompt, load_s, cpu_s = workload(
        model_path, frames, new_tokens, cache=row != "transformers",
        quantize="auto" if row in ("videovlm-cold", "videovlm-warm") else "none")
    from transformers import LogitsProcessorList

    first = FirstToken()
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
           "logits_processor": LogitsProcessorList([first])}
    out: dict[str, float] = {"tokens": prompt.tokens, "frames": len(prompt.images)}
    if row == "transformers":
        vision = [0.0]

        def start(_m, _a):
            vision.append(time.perf_counter())

        def stop(_m, _a, _o):
            vision[0] += time.perf_counter() - vision.pop()

        tower = model.network.model.vision_model
        handles = [tower.register_forward_pre_hook(start), tower.register_forward_hook(stop)]
        inputs_ = model.encode_with_processor(prompt.text, prompt.images)
        t0 = time.perf_counter()
        model.generate(inputs_, **gen)
        end = time.perf_counter()
        for h in handles:
            h.remove()
        assert first.at is not None
        out.update(vision=vision[0], prefill=first.at - t0 - vision[0],
                   decode_tps=(new_tokens - 1) / max(1e-9, end - first.at))
        answer_s = end - t0
    else:
        t0 = time.perf_counter()
        features = model.image_features(prompt.images)
        vision_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        prefix = model.encode_prefix(prompt.head, features)
        head_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.answer(prefix, [prompt.tail], **gen)
        end = time.perf_counter()
        assert first.at is not None
        out.update(vision=vision_s, prefill=head_s + first.at - t0,
                   decode_tps=(new_tokens - 1) / max(1e-9, end - first.at),
                   hits=model.frame_cache.stats.hits if model.frame_cache else 0)
        answer_s = vision_s + head_s + end - t0
    out.update(load=load_s, cpu=cpu_s, total=load_s + cpu_s + answer_s,
               process=time.perf_counter() - t_start, rss_mb=_peak_rss_mb())
    return out


def drift(model_path: str, frames: int) -> dict[str, float]:
    """int8 against fp32: image features' cosine, first-token KL."""
    import torch

    out: dict[str, float] = {}
    feats, logits = {}, {}
    for quant in ("none", "int8"):
        model, prompt, _, _ = workload(model_path, frames, 32, quant, cache=False)
        feats[quant] = model.image_features(prompt.images)
        prefix = model.encode_prefix(prompt.head, feats[quant])
        tail = model.tokenizer(prompt.tail, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            step = model.network(input_ids=tail["input_ids"], cache=prefix.cache,
                                 use_cache=True, logits_to_keep=1)
        logits[quant] = step.logits[0, -1].float()
        out["frames"], out["tokens"] = len(prompt.images), prompt.tokens
        del model
    cos = [float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))
           for a, b in zip(feats["none"], feats["int8"], strict=True)]
    p = torch.log_softmax(logits["none"], -1)
    q = torch.log_softmax(logits["int8"], -1)
    out.update(cos_mean=sum(cos) / len(cos), cos_min=min(cos),
               kl=float((p.exp() * (p - q)).sum()),
               same_first_token=float(int(p.argmax()) == int(q.argmax())))
    return out


def dump_inputs(model_path: str, frames: int, new_tokens: int, folder: Path
                ) -> dict[str, float]:
    """The workload's model inputs as .npy files, for peers that cannot import videovlm."""
    import numpy as np

    model, prompt, _, cpu_s = workload(model_path, frames, new_tokens, "none", cache=False)
    t0 = time.perf_counter()
    encoded = model.encode(prompt.text, prompt.images)
    cpu_s += time.perf_counter() - t0
    np.save(folder / "input_ids.npy", encoded["input_ids"].numpy())
    np.save(folder / "pixel_values.npy", encoded["pixel_values"].numpy())
    return {"cpu": cpu_s, "tokens": prompt.tokens, "frames": len(prompt.images)}


def openvino_python(venv: Path) -> Path:
    """The peer venv's Python, made on first use (never the project's own environment)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making the OpenVINO venv {venv} (once; a few GB)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *OPENVINO_PACKAGES],
                       check=True)
    return python


def openvino_export(python: Path, model_path: Path, weights: str) -> Path:
    """``model_path`` exported to OpenVINO (cached in the temp folder), from a copy with
    transformers-4 tokenizer names."""
    out = Path(tempfile.gettempdir()) / f"videovlm-bench-ov-{model_path.name}-{weights}"
    if (out / "openvino_language_model.xml").is_file():
        return out
    import shutil

    copy = Path(tempfile.mkdtemp(prefix="videovlm-bench-ov-src-"))
    shutil.copytree(model_path, copy, dirs_exist_ok=True)
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    if "extra_special_tokens" in config:
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config_path.write_text(json.dumps(config, indent=1))
    cli = python.parent / "optimum-cli"
    print(f"exporting to OpenVINO ({weights})...", file=sys.stderr)
    subprocess.run([str(cli), "export", "openvino", "--model", str(copy), "--task",
                    "image-text-to-text", "--weight-format", weights, str(out)],
                   check=True, capture_output=True)
    shutil.rmtree(copy, ignore_errors=True)
    return out


def run_openvino(row: str, model_path: Path, frames: int, new_tokens: int, venv: Path
                 ) -> dict[str, float]:
    python = openvino_python(venv)
    exported = openvino_export(python, model_path, row.split("-")[1])
    with tempfile.TemporaryDirectory(prefix="videovlm-bench-inputs-") as folder:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, __file__, "--child", "dump", "--model", str(model_path),
               "--frames", str(frames), "--new-tokens", str(new_tokens), "--inputs", folder]
        made = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True,
                                         check=True).stdout.strip().splitlines()[-1])
        done = subprocess.run([str(python), str(PEERS / "openvino_row.py"), str(exported),
                               folder, str(new_tokens)], capture_output=True, text=True,
                              check=False)
    if done.returncode:
        raise SystemExit(f"row {row} failed:\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {**made, **r, "total": r["load"] + made["cpu"] + r["answer"]}


def run_row(row: str, model_path: Path, frames: int, new_tokens: int, cache: Path
            ) -> dict[str, float]:
    env = {**os.environ, "VIDEOVLM_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--child", row, "--model", str(model_path), "--frames",
           str(frames), "--new-tokens", str(new_tokens)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"row {row} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, float]]) -> list[str]:
    base = results.get("videovlm-cold")
    results = {k: v for k, v in results.items() if k != "drift"}
    lines = ["| way | vision s | prefill s | decode tok/s | total s | peak RSS | total / "
             "videovlm-cold | RSS / videovlm-cold |", "|---|---|---|---|---|---|---|---|"]
    for row, r in results.items():
        ratio = f"{r['total'] / base['total']:.2f}x" if base else "-"
        rss = f"{r['rss_mb'] / base['rss_mb']:.2f}x" if base else "-"
        lines.append(f"| {row} | {r['vision']:.1f} | {r['prefill']:.1f} | "
                     f"{r['decode_tps']:.1f} | {r['total']:.1f} | {r['rss_mb'] / 1024:.2f} GB | "
                     f"{ratio} | {rss} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=["256m", "2b"], default="256m")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint folder")
    parser.add_argument("--drift-frames", type=int, default=8)
    parser.add_argument("--openvino-venv", type=Path,
                        default=REPO / "benchmarks" / ".venvs" / "openvino",
                        help="the OpenVINO peer's own venv (made on first use)")
    parser.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "dump":
        print(json.dumps(dump_inputs(str(args.model), args.frames, args.new_tokens,
                                     Path(args.inputs))))
        return
    if args.child:
        print(json.dumps(child(args.child, str(args.model), args.frames, args.new_tokens)))
        return
    model_path = checkpoint(args.model, args.shape)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}: use {', '.join(ROWS)}")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="videovlm-bench-cache-") as cache:
        for row in rows:  # warm runs after cold: the cache the cold row filled
            print(f"running {row}...", file=sys.stderr)
            frames = args.drift_frames if row == "drift" else args.frames
            if row.startswith("openvino"):
                results[row] = run_openvino(row, model_path, frames, args.new_tokens,
                                            args.openvino_venv)
            else:
                results[row] = run_row(row, model_path, frames, args.new_tokens, Path(cache))
            print(json.dumps({row: results[row]}), file=sys.stderr)
    any_row = next(r for k, r in results.items() if k != "drift")
    shape = f"{args.model}" if args.model else f"{args.shape}-shaped random checkpoint"
    head = (f"{shape}, {any_row['frames']} frames of {VIDEO.name}, "
            f"{any_row['tokens']} prompt tokens, {args.new_tokens} new tokens, fp32 CPU, "
            f"{os.cpu_count()} threads, {platform.processor() or platform.machine()}")
    lines = [head, "", *table(results)]
    if "videovlm-cold" in results and "videovlm-warm" in results:
        ratio = results["videovlm-warm"]["total"] / results["videovlm-cold"]["total"]
        lines += ["", f"second command over frames already encoded: {ratio:.2f}x of the cold "
                      "one's total (target <= 0.25x)"]
    if "drift" in results:
        d = results["drift"]
        lines += ["", f"int8 against fp32 ({int(d['frames'])} frames): image features' cosine "
                      f"{d['cos_mean']:.4f} mean, {d['cos_min']:.4f} worst; first-token KL "
                      f"{d['kl']:.4f} nats; same first token: "
                      f"{'yes' if d['same_first_token'] else 'no'}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
