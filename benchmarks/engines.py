"""The model stage against the ways people run SmolVLM: one question about 50 frames.

    python benchmarks/engines.py [--shape 256m|2b] [--frames 50] [--new-tokens 32]
                                 [--rows videovlm-cold,videovlm-warm,transformers]
                                 [--openvino-venv DIR] [--llamacpp-venv DIR]
                                 [--out benchmarks/results/engines.md]

The workload (issue "the model stage at the machine's limit"): ``samples/bikes.mp4``, 50 frames
by the selection rule, prepared by videovlm to the model's single-image size, one question,
``--new-tokens`` new tokens forced (``min_new_tokens``: the comparison is of work, not of when a
random model stops), greedy, on a randomly initialised checkpoint of the real architecture
(``--shape 256m``: SmolVLM2-256M, 512 px; ``2b``: SmolVLM-Instruct's 2.2B, 384 px), fp32 on the
CPU. Every row runs in a fresh process; columns:

- **prompt tokens**: the prompt's length as the row's engine counts it;
- **vision s**: the vision tower over the frames (or the frame cache, for the warm row);
- **prefill s**: the language model over the prompt up to the answer's first token;
- **to first token s**: vision + prefill (all that llama.cpp reports: ``-`` in the two before);
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
- ``llamacpp-q8_0`` / ``llamacpp-f16``: llama.cpp through ``xllamacpp`` (its prebuilt CPU wheel;
  in-process server, one multimodal chat request, streamed), on the checkpoint converted by
  ``convert_hf_to_gguf.py`` (from the ``llama-cpp-python`` source distribution) to a text-model
  GGUF and, with ``--mmproj``, a vision-projector GGUF, both ``--outtype q8_0`` or ``f16``. It
  gets videovlm's frames as PNG files and videovlm's prompt text cut at its image placeholders
  (a pass-through chat template keeps the text exactly videovlm's); llama.cpp's SmolVLM path
  preprocesses each frame itself and encodes an overview plus a tile for every frame (about
  twice the prompt tokens and the vision work of the other rows), with the converter told the
  single-image size as its ``longest_edge`` (and the random tokenizer's pre-tokenizer named, as
  ``peers/llamacpp_convert.py`` says why). Greedy, ``ignore_eos``, the model's own context,
  no prompt cache. A venv of its own (``--llamacpp-venv``, made on first use, with the converter
  extracted into it); ``total`` adds videovlm's frame preparation and the PNG writing.
- ``drift``: int8 against fp32 on the same checkpoint and the first ``--drift-frames`` frames:
  cosine of each frame's image features (mean and worst), and the KL divergence of the answer's
  first-token distribution (fp32 || int8). Random weights: a bound on the arithmetic, not a
  measure of answer quality on the real weights.
- ``vision-peak``: the vision tower's GFLOP per frame (counted by ``torch.utils.flop_counter``)
  and this machine's fp32 ``mm`` and dynamic int8 Linear throughput at the tower's MLP shape,
  measured in the same run; the report then says at what share of its peak each timed row ran
  the tower.
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
        "openvino-int8", "llamacpp-q8_0", "llamacpp-f16", "drift", "vision-peak")
NOT_TIMED = ("drift", "vision-peak")  # rows of figures, not of the workload's times
PEERS = REPO / "benchmarks" / "peers"
VENVS = REPO / "benchmarks" / ".venvs"
OPENVINO_PACKAGES = ["torch==2.13.0", "transformers==4.57.6", "optimum-intel[openvino]==2.2.0",
                     "nncf", "num2words", "pillow"]
# xllamacpp's prebuilt CPU wheel, and what convert_hf_to_gguf.py needs (its requirements file;
# torch as the project's, transformers as it pins, which is also why the checkpoint goes to it
# as the transformers-4 copy the OpenVINO export reads).
LLAMACPP_PACKAGES = ["xllamacpp==2026.10.11549", "torch==2.13.0", "transformers==4.57.6",
                     "numpy>=2.2.6", "sentencepiece>=0.1.98,<0.3.0", "protobuf>=4.21.0,<5.0.0",
                     "pyyaml", "tqdm", "requests"]
# The converter ships in this source distribution (vendor/llama.cpp), never installed.
LLAMACPP_CONVERTER = "llama-cpp-python==0.3.36"

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
    if row == "vision-peak":
        return vision_peak(model_path)
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


def vision_peak(model_path: str) -> dict[str, float]:
    """The vision tower's work per frame and this machine's matrix-product peaks, measured now:
    FLOPs of one frame through the tower (``torch.utils.flop_counter``, on a randomly
    initialised tower of the checkpoint's vision config: the count depends on shapes only), and
    the fp32 ``mm`` and dynamic int8 Linear throughput at the tower's own MLP shape (patches x
    width -> intermediate), median of 5 (int8 uses AVX-VNNI where the CPU has it, as here)."""
    import torch
    from torch.ao.quantization import quantize_dynamic
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    vision = config.vision_config
    if config.model_type == "idefics3":
        from transformers.models.idefics3.modeling_idefics3 import (
            Idefics3VisionTransformer as Tower,
        )
    else:
        from transformers.models.smolvlm.modeling_smolvlm import (
            SmolVLMVisionTransformer as Tower,
        )
    tower = Tower(vision).eval()  # random weights: FLOPs depend on the shapes alone
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        tower(pixel_values=torch.zeros(1, 3, vision.image_size, vision.image_size))
    del tower
    patches = (vision.image_size // vision.patch_size) ** 2
    x = torch.randn(patches, vision.hidden_size)
    linear = torch.nn.Linear(vision.hidden_size, vision.intermediate_size)
    int8 = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)
    ops = 2 * patches * vision.hidden_size * vision.intermediate_size

    def best(call) -> float:
        call()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                call()
            times.append((time.perf_counter() - t0) / 10)
        return ops / sorted(times)[len(times) // 2] / 1e9

    with torch.inference_mode():
        fp32 = best(lambda: torch.mm(x, linear.weight.T))
        q8 = best(lambda: int8(x))
    return {"vision_gflop": counter.get_total_flops() / 1e9, "fp32_gflops": fp32,
            "int8_gops": q8}


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


def dump_inputs(kind: str, model_path: str, frames: int, new_tokens: int, folder: Path
                ) -> dict[str, float]:
    """The workload's inputs in ``folder``, for peers that cannot import videovlm: ``dump``,
    the model's ``input_ids.npy`` and ``pixel_values.npy``; ``dump-frames``, the frames as
    PNG files and ``prompt.json``, the chat text cut at its image placeholders. ``cpu`` adds
    the time to write them (what handing the peer its input costs) to the frames' preparation."""
    model, prompt, _, cpu_s = workload(model_path, frames, new_tokens, "none", cache=False)
    t0 = time.perf_counter()
    if kind == "dump":
        import numpy as np

        encoded = model.encode(prompt.text, prompt.images)
        np.save(folder / "input_ids.npy", encoded["input_ids"].numpy())
        np.save(folder / "pixel_values.npy", encoded["pixel_values"].numpy())
    else:
        from PIL import Image

        from videovlm.model import IMAGE_TOKEN

        parts = prompt.text.split(IMAGE_TOKEN)
        assert len(parts) == len(prompt.images) + 1, "an image placeholder in the prompt's text"
        (folder / "prompt.json").write_text(json.dumps({"parts": parts}))
        for i, image in enumerate(prompt.images):
            Image.fromarray(image).save(folder / f"{i:03d}.png", compress_level=1)
    cpu_s += time.perf_counter() - t0
    return {"cpu": cpu_s, "tokens": prompt.tokens, "frames": len(prompt.images)}


def peer_python(venv: Path, packages: list[str], what: str) -> Path:
    """A peer venv's Python, made on first use (never the project's own environment)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making the {what} venv {venv} (once; a few GB)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def transformers4_copy(model_path: Path, prefix: str) -> Path:
    """A temporary copy of ``model_path`` with transformers-4 tokenizer names, for peers that
    read checkpoints with transformers 4.57 (the caller removes it)."""
    import shutil

    copy = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.copytree(model_path, copy, dirs_exist_ok=True)
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    if "extra_special_tokens" in config:
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config_path.write_text(json.dumps(config, indent=1))
    return copy


def openvino_export(python: Path, model_path: Path, weights: str) -> Path:
    """``model_path`` exported to OpenVINO (cached in the temp folder), from a copy with
    transformers-4 tokenizer names."""
    out = Path(tempfile.gettempdir()) / f"videovlm-bench-ov-{model_path.name}-{weights}"
    if (out / "openvino_language_model.xml").is_file():
        return out
    import shutil

    copy = transformers4_copy(model_path, "videovlm-bench-ov-src-")
    cli = python.parent / "optimum-cli"
    print(f"exporting to OpenVINO ({weights})...", file=sys.stderr)
    subprocess.run([str(cli), "export", "openvino", "--model", str(copy), "--task",
                    "image-text-to-text", "--weight-format", weights, str(out)],
                   check=True, capture_output=True)
    shutil.rmtree(copy, ignore_errors=True)
    return out


def run_json(row: str, cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """A child's last stdout line, parsed (every row's child prints its figures as JSON)."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"row {row} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_peer(row: str, kind: str, model_path: Path, frames: int, new_tokens: int,
             peer: list[str]) -> dict[str, Any]:
    """A peer's row: videovlm writes the workload's inputs (``kind``) into a folder, then
    ``peer`` (its venv's Python and script, the folder and ``new_tokens`` appended) runs on
    them; ``total`` = the peer's load + videovlm's preparation + the peer's answer."""
    with tempfile.TemporaryDirectory(prefix="videovlm-bench-inputs-") as folder:
        made = run_json(row, [sys.executable, __file__, "--child", kind, "--model",
                              str(model_path), "--frames", str(frames), "--new-tokens",
                              str(new_tokens), "--inputs", folder],
                        env={**os.environ, "PYTHONPATH": str(REPO)})
        r = run_json(row, [*peer, folder, str(new_tokens)])
    return {**made, **r, "total": r["load"] + made["cpu"] + r["answer"]}


def run_openvino(row: str, model_path: Path, frames: int, new_tokens: int, venv: Path
                 ) -> dict[str, Any]:
    python = peer_python(venv, OPENVINO_PACKAGES, "OpenVINO")
    exported = openvino_export(python, model_path, row.split("-")[1])
    return run_peer(row, "dump", model_path, frames, new_tokens,
                    [str(python), str(PEERS / "openvino_row.py"), str(exported)])


def llamacpp_tools(venv: Path) -> tuple[Path, Path]:
    """The llama.cpp venv's Python and ``convert_hf_to_gguf.py`` (from the
    ``llama-cpp-python`` source distribution: its ``vendor/llama.cpp`` with the ``conversion``
    and ``gguf-py`` packages the script imports), both made on first use."""
    python = peer_python(venv, LLAMACPP_PACKAGES, "llama.cpp")
    converter = venv / "llama.cpp" / "convert_hf_to_gguf.py"
    if not converter.is_file():
        import tarfile

        with tempfile.TemporaryDirectory(prefix="videovlm-bench-sdist-", dir=venv) as folder:
            subprocess.run([str(python), "-m", "pip", "download", "-q", "--no-binary", ":all:",
                            "--no-deps", "-d", folder, LLAMACPP_CONVERTER], check=True)
            (sdist,) = Path(folder).glob("*.tar.gz")
            with tarfile.open(sdist) as tar:
                root = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
                keep = [m for m in tar.getmembers() if m.name.startswith(root) and (
                    m.name[len(root):].split("/")[0] in ("conversion", "gguf-py")
                    or m.name == root + "convert_hf_to_gguf.py")]
                for m in keep:
                    m.name = m.name[len(root):]
                tar.extractall(Path(folder) / "llama.cpp", members=keep, filter="data")
            os.replace(Path(folder) / "llama.cpp", converter.parent)  # whole, or not at all
    return python, converter


def llamacpp_convert(python: Path, converter: Path, model_path: Path, outtype: str
                     ) -> tuple[Path, Path]:
    """``model_path`` as llama.cpp's text model and vision projector (``--mmproj``) GGUFs of
    ``outtype`` (cached in the temp folder, keyed by the checkpoint's weights file too, so a
    rebuilt checkpoint is converted again). The converter reads a transformers-4 copy whose
    ``size.longest_edge`` is the single-image size: llama.cpp scales every image to it and
    tiles it, and videovlm's frames are prepared at that size (the other rows get them
    unsplit); with the checkpoint's 4x it would upscale each frame and encode 16 tiles of it."""
    weights = (model_path / "model.safetensors").stat()
    out = Path(tempfile.gettempdir()) / (f"videovlm-bench-gguf-{model_path.name}-"
                                         f"{weights.st_size}-{weights.st_mtime_ns}-{outtype}")
    model, mmproj = out / "model.gguf", out / "mmproj.gguf"
    if model.is_file() and mmproj.is_file():
        return model, mmproj
    import shutil

    copy = transformers4_copy(model_path, "videovlm-bench-gguf-src-")
    config_path = copy / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config["size"] = {"longest_edge": config["max_image_size"]["longest_edge"]}
    config_path.write_text(json.dumps(config, indent=1))
    print(f"converting to GGUF ({outtype})...", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + "-", dir=out.parent))
    try:
        for extra, name in (([], "model.gguf"), (["--mmproj"], "mmproj.gguf")):
            done = subprocess.run([str(python), str(PEERS / "llamacpp_convert.py"),
                                   str(converter), str(copy), *extra, "--outtype", outtype,
                                   "--outfile", str(tmp / name)],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"convert_hf_to_gguf.py {' '.join(extra)} failed:\n"
                                 f"{done.stderr[-3000:]}")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it became ``out``
    return model, mmproj


def check_convertible(model_path: Path) -> None:
    """Stop before any row runs if ``convert_hf_to_gguf.py`` cannot read ``model_path``: it
    picks the text model by ``text_config.architectures``, which random checkpoints built
    before ``videovlm.testing`` wrote it lack (the benchmark builds its checkpoint once)."""
    text_config = json.loads((model_path / "config.json").read_text()).get("text_config", {})
    if "architectures" not in text_config:
        raise SystemExit(f"{model_path} has no text_config.architectures, which the llama.cpp "
                         "rows' converter needs (a random checkpoint built by an older "
                         f"videovlm.testing?): remove {model_path} and rerun to rebuild it, or "
                         "leave out the llamacpp rows")


def run_llamacpp(row: str, model_path: Path, frames: int, new_tokens: int, venv: Path
                 ) -> dict[str, Any]:
    python, converter = llamacpp_tools(venv)
    model, mmproj = llamacpp_convert(python, converter, model_path, row.split("-")[1])
    return run_peer(row, "dump-frames", model_path, frames, new_tokens,
                    [str(python), str(PEERS / "llamacpp_row.py"), str(model), str(mmproj)])


def run_row(row: str, model_path: Path, frames: int, new_tokens: int, cache: Path
            ) -> dict[str, Any]:
    env = {**os.environ, "VIDEOVLM_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    return run_json(row, [sys.executable, __file__, "--child", row, "--model", str(model_path),
                          "--frames", str(frames), "--new-tokens", str(new_tokens)], env=env)


def table(results: dict[str, dict[str, float]]) -> list[str]:
    """The rows side by side; a row that times only its first token (llama.cpp reports
    vision and prefill together) shows ``-`` for the two."""
    base = results.get("videovlm-cold")
    results = {k: v for k, v in results.items() if k not in NOT_TIMED}
    lines = ["| way | prompt tokens | vision s | prefill s | to first token s | decode tok/s | "
             "total s | peak RSS | total / videovlm-cold | RSS / videovlm-cold |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row, r in results.items():
        first = r.get("first_token", r.get("vision", 0.0) + r.get("prefill", 0.0))
        split = " | ".join(f"{r[k]:.1f}" if k in r else "-" for k in ("vision", "prefill"))
        ratio = f"{r['total'] / base['total']:.2f}x" if base else "-"
        rss = f"{r['rss_mb'] / base['rss_mb']:.2f}x" if base else "-"
        lines.append(f"| {row} | {int(r['tokens'])} | {split} | {first:.1f} | "
                     f"{r['decode_tps']:.1f} | {r['total']:.1f} | {r['rss_mb'] / 1024:.2f} GB | "
                     f"{ratio} | {rss} |")
    return lines


def vision_lines(results: dict[str, dict[str, float]]) -> list[str]:
    """The vision tower's throughput in the timed rows against the peaks measured now."""
    peak = results["vision-peak"]
    lines = [f"vision tower: {peak['vision_gflop']:.0f} GFLOP a frame; this machine's peaks "
             f"now (the tower's MLP shape): fp32 mm {peak['fp32_gflops']:.0f} GFLOP/s, dynamic "
             f"int8 Linear {peak['int8_gops']:.0f} GOP/s"]
    for row, limit, unit in (("videovlm-cold", "int8_gops", "int8"),
                             ("videovlm-fp32", "fp32_gflops", "fp32"),
                             ("transformers", "fp32_gflops", "fp32"),
                             ("openvino-fp32", "fp32_gflops", "fp32")):
        r = results.get(row)
        if r and r.get("vision", 0) > 0.5:
            rate = peak["vision_gflop"] * r["frames"] / r["vision"]
            lines.append(f"- {row}: {rate:.0f} G(FL)OP/s, {rate / peak[limit]:.0%} of the {unit} "
                         "peak")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=["256m", "2b"], default="256m")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint folder")
    parser.add_argument("--drift-frames", type=int, default=8)
    parser.add_argument("--openvino-venv", type=Path, default=VENVS / "openvino",
                        help="the OpenVINO peer's own venv (made on first use)")
    parser.add_argument("--llamacpp-venv", type=Path, default=VENVS / "llamacpp",
                        help="the llama.cpp peer's own venv and converter (made on first use)")
    parser.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child in ("dump", "dump-frames"):
        print(json.dumps(dump_inputs(args.child, str(args.model), args.frames, args.new_tokens,
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
    if any(row.startswith("llamacpp") for row in rows):
        check_convertible(model_path)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="videovlm-bench-cache-") as cache:
        for row in rows:  # warm runs after cold: the cache the cold row filled
            print(f"running {row}...", file=sys.stderr)
            frames = args.drift_frames if row == "drift" else args.frames
            if row.startswith("openvino"):
                results[row] = run_openvino(row, model_path, frames, args.new_tokens,
                                            args.openvino_venv)
            elif row.startswith("llamacpp"):
                results[row] = run_llamacpp(row, model_path, frames, args.new_tokens,
                                            args.llamacpp_venv)
            else:
                results[row] = run_row(row, model_path, frames, args.new_tokens, Path(cache))
            print(json.dumps({row: results[row]}), file=sys.stderr)
    any_row = next(r for k, r in results.items() if k not in NOT_TIMED)
    shape = f"{args.model}" if args.model else f"{args.shape}-shaped random checkpoint"
    head = (f"{shape}, {any_row['frames']} frames of {VIDEO.name}, {args.new_tokens} new "
            f"tokens, CPU (fp32 weights unless the row says otherwise), {os.cpu_count()} "
            f"threads, {platform.processor() or platform.machine()}")
    lines = [head, "", *table(results)]
    if "videovlm-cold" in results and "videovlm-warm" in results:
        warm, cold = results["videovlm-warm"], results["videovlm-cold"]
        ratio = warm["total"] / cold["total"]
        # the result JSON's timing_s.total: the command's stages without the model's load
        stages = (warm["total"] - warm["load"]) / (cold["total"] - cold["load"])
        lines += ["", f"second command over frames already encoded: {ratio:.2f}x of the cold "
                      f"one's total with the model load, {stages:.2f}x of its timing_s.total "
                      "(without it; target <= 0.25x)"]
    if "vision-peak" in results:
        lines += ["", *vision_lines(results)]
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
