"""Loading a SmolVLM-family checkpoint once, turning text and images into its inputs, and
generating with it.

One :class:`Model` holds the network, its processor and the facts the other stages need
(``image_size`` for prepare, ``tokens_per_image`` and ``context`` for pack). Everything that
touches the tokenizer or the processor is here (:meth:`Model.render`, :meth:`Model.count_tokens`,
:meth:`Model.encode`); :mod:`videovlm.pack` owns the prompt's layout and budget and calls these,
never the other way round. The processor is built
by hand, the same way for both families: an ``Idefics3Processor`` from the checkpoint's image
processor (PIL backend), tokenizer, ``image_seq_len`` and chat template. ``AutoProcessor`` would
need torchvision (SmolVLM2's video processor) and num2words, multi-GB and unneeded: we write the
per-frame text ourselves, and the token layout of an image is the same in both families.

Several questions on one clip encode the video once (:meth:`Model.image_features`, the only
call that runs the vision tower, then :meth:`Model.encode_prefix`) and continue from its KV
cache (:meth:`Model.answer`, :meth:`Model.choose`), cropped back to the video after each answer,
instead of re-encoding thousands of image tokens per question. Multiple choice reads each
answer's best option letter from that same generation, so a rambling answer costs no second
pass over the frames; ``find`` reads P(yes) against P(no) by the same rule
(:func:`_letter_scores`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from videovlm.cache import FrameCache, cache_dir, pixels_key
from videovlm.errors import ModelError

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-Instruct"
FAMILIES: tuple[str, ...] = ("idefics3", "smolvlm")
"""The checkpoints' ``config.model_type``: SmolVLM v1 (idefics3) and SmolVLM2 (smolvlm)."""
DEFAULT_MAX_NEW_TOKENS = 512
"""Most tokens one generation may write when neither the recipe nor the caller says."""
QUESTIONS_PER_CALL = 8
"""Questions about one video that decode together in one ``generate`` call by default."""
IMAGE_TOKEN = "<image>"
"""One image's placeholder in a chat text, before :meth:`Model.expand_images`."""
PREFILL_CHUNK = 1024
"""Tokens of a prompt's head the language model reads per forward pass (a 50-frame prompt is
~4k): memory stays a chunk's size, and shorter heads (tests, few frames) are one pass."""
QUANTIZATIONS: tuple[str, ...] = ("auto", "none", "int8")
"""``--quantize``: ``int8`` replaces every Linear layer (vision tower, connector, language model)
with PyTorch's dynamic int8 one (int8 weights, activations quantized per call: fbgemm kernels);
``none`` keeps the weights as loaded; ``auto`` is int8 on the CPU in float32 and none otherwise
(measured: benchmarks/engines.py)."""
_DTYPES = {
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}
_DEVICES = ("cuda", "mps", "cpu")
_HOW_TO_GET = (
    "pass a local checkpoint with --model PATH, or set HF_HUB_OFFLINE=1 with a cached copy, or run "
    "`hf download {id}` on a connected machine"
)


def default_model_id() -> str:
    """The model used when none is named: ``$VIDEOVLM_MODEL`` or SmolVLM-Instruct."""
    return os.environ.get("VIDEOVLM_MODEL") or DEFAULT_MODEL


def resolve(model_id: str) -> tuple[Path, str | None]:
    """A local folder for ``model_id`` and its revision; fail fast (one line) when there is none.

    A hub id is looked up in the local cache first; only when it is missing do we ask the hub,
    with short timeouts, so an offline machine answers in seconds instead of retrying for minutes.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{model_id} is a folder but not a model checkpoint (no config.json)")
        return path.resolve(), None
    if path.exists() or model_id.startswith((".", "/", "~")) or model_id.count("/") != 1:
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise ModelError(
            f"model {model_id!r} not found ({what}): --model takes a checkpoint folder (with "
            "config.json) or a hub id like HuggingFaceTB/SmolVLM-Instruct"
        )

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(model_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        folder = None
    if folder is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        if offline:
            raise ModelError(
                f"model {model_id} is not in the local cache and HF_HUB_OFFLINE is set: "
                + _HOW_TO_GET.format(id=model_id)
            ) from None
        folder = _download(model_id)
    return Path(folder), Path(folder).name


def _download(model_id: str) -> str:
    """Download from the hub, failing in seconds when it cannot be reached."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        HfApi().model_info(model_id, timeout=5)
    except Exception as exc:  # network down, DNS, 404, gated...: all one line for the user
        reason = type(exc).__name__
        raise ModelError(
            f"model {model_id} is not downloaded and the Hugging Face Hub cannot be reached "
            f"({reason}): " + _HOW_TO_GET.format(id=model_id)
        ) from None
    try:
        return snapshot_download(model_id, etag_timeout=10)
    except Exception as exc:
        raise ModelError(
            f"downloading {model_id} failed ({type(exc).__name__}): "
            + _HOW_TO_GET.format(id=model_id)
        ) from None


def _pick_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.split(":")[0] not in _DEVICES:
        raise ModelError(f"unknown device {device!r}: use auto, cuda, cuda:N, mps or cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device} requested but CUDA is not available: use --device cpu")
    return device


def _pick_dtype(dtype: str | None, device: str) -> str:
    if dtype in (None, "auto"):
        return "float32" if device == "cpu" else "bfloat16"
    if dtype.lower() not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}: use auto, bfloat16, float16 or float32")
    return _DTYPES[dtype.lower()]


def _pick_quantization(quantize: str | None, device: str, dtype: str) -> str:
    """int8 needs the CPU and float32 around it (PyTorch's dynamic int8 layers take and give
    float32); ``auto`` picks it exactly there."""
    choice = (quantize or "auto").lower()
    if choice not in QUANTIZATIONS:
        raise ModelError(f"unknown quantization {quantize!r}: use {', '.join(QUANTIZATIONS)}")
    if choice == "auto":
        return "int8" if device == "cpu" and dtype == "float32" else "none"
    if choice == "int8" and device != "cpu":
        raise ModelError(f"--quantize int8 runs on the CPU only (PyTorch's dynamic int8 "
                         f"kernels), not on {device}: use --quantize none there")
    if choice == "int8" and dtype != "float32":
        raise ModelError(f"--quantize int8 computes in float32 around its int8 layers, not "
                         f"{dtype}: drop --dtype, or use --quantize none")
    return choice


def _load_dtype(config: dict[str, Any], dtype: str, quantization: str) -> str:
    """The dtype to read the weights in. For int8 that is the checkpoint's own (bf16 for the
    hub's SmolVLMs) rather than fp32: each Linear layer is then widened and quantized one at a
    time, so the fp32 copy of the whole model never exists (peak memory about halves)."""
    stored = config.get("torch_dtype") or config.get("dtype")
    if quantization == "int8" and stored in ("bfloat16", "float16"):
        return str(stored)
    return dtype


def _quantize_int8(network: Any, dtype: Any, checkpoint: Sequence[Path] = ()) -> None:
    """Every Linear layer to PyTorch's dynamic int8 one, one layer at a time, in place; the
    other weights (norms, biases, positions) to ``dtype``, but embedding tables stay in a
    narrower checkpoint dtype (bf16 widens exactly to fp32, so the numbers are the same, at half
    the memory: 200 MB less on SmolVLM-Instruct) and give ``dtype`` rows. On these AVX2 CPUs
    the vision tower ran 2.3x and decoding 2x faster than fp32 (benchmarks/engines.py), with a
    quarter of the Linear weights' memory. ``torch.ao.quantization`` rather than the ``torchao``
    package: torchao's int8 dynamic config ran the vision tower only 1.2x faster here and
    prints warnings on import; this one ships with torch (its deprecation notice is silenced
    here). ``checkpoint``: the weight files the network was mapped from (:class:`_MappedPages`).
    """
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    pages = _MappedPages(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        linears = [(module, name, child) for module in network.modules()
                   for name, child in module.named_children() if type(child) is torch.nn.Linear]
        # the largest first (the vocabulary projection): its fp32 copy then comes and goes
        # while little else is in memory, which sets the peak
        linears.sort(key=lambda item: -item[2].weight.numel())
        for module, name, child in linears:
            stored = [param.data for param in child.parameters()]  # as read, not as converted
            wide = torch.nn.Sequential(child.to(torch.float32))
            quantize_dynamic(wide, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
            setattr(module, name, wide[0])
            child.to("meta")  # its fp32 weights go now, not at some later collection
            for tensor in stored:  # and the checkpoint's pages they were read from
                pages.release(tensor)
            del stored
        del linears
        tables = [m for m in network.modules() if isinstance(m, torch.nn.Embedding)
                  and m.weight.dtype.itemsize < dtype.itemsize]
        for table in tables:
            table.register_forward_hook(lambda _m, _args, out: out.to(dtype))
        narrow = {id(table.weight) for table in tables}
        for tensor in [*network.parameters(), *network.buffers()]:
            if id(tensor) in narrow or not tensor.is_floating_point():
                continue
            stored = tensor.data
            tensor.data = stored.to(dtype)
            if tensor.data.data_ptr() != stored.data_ptr():
                pages.release(stored)
            del stored
    _return_freed_memory()


def _return_freed_memory() -> None:
    """Give the heap's free memory back to the system (glibc's ``malloc_trim``). The layers'
    fp32 copies made while quantizing are freed into glibc's heap, which keeps them (0.2 GB of
    SmolVLM-Instruct's load here) unless asked; elsewhere nothing happens."""
    import contextlib
    import ctypes

    with contextlib.suppress(AttributeError, OSError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


class _MappedPages:
    """The checkpoint files' pages mapped into this process, handed back layer by layer.

    transformers maps safetensors files and a weight is read from the mapping when first
    touched; every page read stays resident (counted in the process's memory) until the whole
    mapping goes, which for int8 was after the last layer: the bf16 file and its int8 copy at
    once (7.5 GB peak for SmolVLM-Instruct's 4.4 GB). Releasing a weight's pages as soon as its
    converted copy exists keeps the peak near the converted model's size. Linux only (elsewhere
    nothing is released). Only whole pages inside a tensor that is being dropped are released,
    and only in a mapping of the checkpoint files: the mapping is private, so a released page
    is read from the file again if anything ever touches it.
    """

    _MADV_DONTNEED = 4

    def __init__(self, files: Sequence[Path]) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.libc: Any = None
        self.page = 0
        names = {str(Path(f).resolve()) for f in files}
        if not names or not os.path.exists("/proc/self/maps"):
            return
        import ctypes

        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip() in names:
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    self.ranges.append((start, end))
        if self.ranges:
            self.libc = ctypes.CDLL(None, use_errno=True)
            self.libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            self.page = os.sysconf("SC_PAGE_SIZE")

    def release(self, tensor: Any) -> None:
        """Hand back the whole pages of ``tensor``'s bytes, if they lie in a mapped file."""
        if self.libc is None or tensor.device.type != "cpu":
            return
        start = tensor.untyped_storage().data_ptr()
        end = start + tensor.untyped_storage().nbytes()
        if not any(lo <= start and end <= hi for lo, hi in self.ranges):
            return
        page = self.page
        first, last = -(-start // page) * page, end // page * page
        if last > first:
            self.libc.madvise(first, last - first, self._MADV_DONTNEED)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _chat_template(folder: Path, tokenizer: Any) -> str:
    """The processor's chat template (``chat_template.json``/``.jinja``), else the tokenizer's."""
    data = _read_json(folder / "chat_template.json")
    if data.get("chat_template"):
        return str(data["chat_template"])
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.chat_template)
    raise ModelError(f"{folder} has no chat template (chat_template.json): not a SmolVLM model")


class Model:
    """A loaded SmolVLM-family model with its processor; load once, use for many videos."""

    def __init__(self, *, id: str, revision: str | None, path: Path, device: str, dtype: str,
                 family: str, image_size: int, tokens_per_image: int, context: int,
                 quantization: str,
                 network: Any, processor: Any, chat_template: str,
                 frame_cache: FrameCache | None = None) -> None:
        self.id = id
        self.revision = revision
        self.path = path
        self.device = device
        self.dtype = dtype
        self.family = family
        self.image_size = image_size
        self.tokens_per_image = tokens_per_image
        self.context = context
        self.quantization = quantization
        self.network = network
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.chat_template = chat_template
        self.frame_cache = frame_cache  # encoded frames on disk (None: --no-cache)

    def __repr__(self) -> str:
        return (f"Model(id={self.id!r}, family={self.family}, device={self.device}, "
                f"dtype={self.dtype}, image_size={self.image_size}, context={self.context})")

    @classmethod
    def load(cls, model: str | None = None, *, device: str | None = None,
             dtype: str | None = None, quantize: str | None = None,
             cache: bool = True) -> Model:
        """Load a hub id or a local folder (``ModelError``, one line, when it cannot be had).

        ``quantize`` is one of :data:`QUANTIZATIONS` (default ``auto``); ``cache=False``
        neither reads nor writes encoded frames on disk (``--no-cache``)."""
        model_id = model or default_model_id()
        folder, revision = resolve(model_id)
        config = _read_json(folder / "config.json")
        family = config.get("model_type", "")
        if family not in FAMILIES:
            raise ModelError(
                f"{model_id} is a {config.get('model_type')!r} model; videovlm runs SmolVLM "
                "checkpoints (model_type idefics3 or smolvlm)"
            )
        dev = _pick_device(device)
        dt = _pick_dtype(dtype, dev)
        quant = _pick_quantization(quantize, dev, dt)

        import torch
        from transformers import AutoModelForImageTextToText, AutoTokenizer
        from transformers.models.idefics3.processing_idefics3 import Idefics3Processor

        if family == "idefics3":
            from transformers.models.idefics3.image_processing_pil_idefics3 import (
                Idefics3ImageProcessorPil as ImageProcessor,
            )
        else:
            from transformers.models.smolvlm.image_processing_pil_smolvlm import (
                SmolVLMImageProcessorPil as ImageProcessor,
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            image_processor = ImageProcessor.from_pretrained(folder)
            network = AutoModelForImageTextToText.from_pretrained(
                folder, dtype=getattr(torch, _load_dtype(config, dt, quant)))
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load {model_id}: {first}") from None
        if quant == "int8":
            _quantize_int8(network, getattr(torch, dt), sorted(folder.glob("*.safetensors")))
        network.to(dev).eval()

        image_size = int(image_processor.max_image_size["longest_edge"])
        vision = network.config.vision_config
        computed = ((image_size // vision.patch_size) ** 2) // (network.config.scale_factor**2)
        seq_len = int(_read_json(folder / "processor_config.json").get("image_seq_len", computed))
        if seq_len != computed:
            raise ModelError(
                f"{model_id}: processor_config image_seq_len {seq_len} does not match the "
                f"vision config ({image_size} px, patch {vision.patch_size}, scale "
                f"{network.config.scale_factor} -> {computed} tokens)"
            )
        template = _chat_template(folder, tokenizer)
        processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=seq_len,
                                      chat_template=template)
        frames = (FrameCache(cache_dir() / "frames", _encoding_key(model_id, revision, folder,
                                                                    dev, dt, quant))
                  if cache else None)
        return cls(
            id=model_id, revision=revision, path=folder, device=dev, dtype=dt, family=family,
            image_size=image_size, tokens_per_image=seq_len,
            context=int(network.config.text_config.max_position_embeddings), quantization=quant,
            network=network, processor=processor, chat_template=template, frame_cache=frames,
        )

    def info(self) -> dict[str, Any]:
        """The result JSON's ``model`` object: enough to know what produced a result."""
        return {
            "id": self.id,
            "revision": self.revision,
            "family": self.family,
            "dtype": self.dtype,
            "device": self.device,
            "image_size": self.image_size,
            "tokens_per_image": self.tokens_per_image,
            "context": self.context,
            "quantization": self.quantization,
        }

    # -- text and images into model inputs -----------------------------------------------------

    def render(self, content: list[dict[str, Any]]) -> str:
        """One user turn through the checkpoint's chat template, ready for the assistant."""
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], chat_template=self.chat_template,
            tokenize=False, add_generation_prompt=True,
        )

    def expand_images(self, text: str) -> str:
        """``text`` with each ``<image>`` expanded the way the processor expands a whole image:
        ``<fake_token_around_image><global-img>`` + ``tokens_per_image`` ``<image>`` tokens +
        ``<fake_token_around_image>`` (no tiling: frames arrive at the single-image size)."""
        proc = self.processor
        image = (proc.fake_image_token + proc.global_image_tag
                 + proc.image_token * self.tokens_per_image + proc.fake_image_token)
        return text.replace(IMAGE_TOKEN, image)

    def count_tokens(self, text: str) -> int:
        """Tokens of a chat text whose images are still ``<image>`` placeholders: exactly the
        length of the ``input_ids`` :meth:`encode` makes, without needing the pixels."""
        return len(self.tokenizer(self.expand_images(text), verbose=False)["input_ids"])

    def encode(self, text: str, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """The model inputs for prepared images: what the processor gives, without its overhead.

        With ``do_resize=False, do_image_splitting=False`` the processor only expands each
        ``<image>``, tokenizes, rescales, normalises and pads equal-sized images, one image at a
        time in float64 numpy (0.75 s for 50 frames here). We do the same in one vectorised pass
        with the checkpoint's own settings; tests check it equals :meth:`encode_with_processor`.
        """
        size = self.image_size
        for image in images:
            if image.shape != (size, size, 3) or image.dtype != np.uint8:
                raise ValueError(
                    f"images must be prepared to {size}x{size}x3 uint8 (videovlm.prepare), "
                    f"got {image.shape} {image.dtype}"
                )
        encoded = self._tokenize(text, len(images), "images")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "pixel_values": self._pixels(images)}

    def _tokenize(self, text: str, n_images: int, what: str) -> Any:
        """``text``'s token ids with every image expanded, checked to hold ``n_images``."""
        if text.count(IMAGE_TOKEN) != n_images:
            raise ValueError(f"{text.count(IMAGE_TOKEN)} image placeholders but {n_images} "
                             f"{what}")
        return self.tokenizer([self.expand_images(text)], return_tensors="pt", verbose=False)

    def _pixels(self, images: Sequence[np.ndarray]) -> Any:
        """Prepared images as the vision tower's input, (1, N, 3, H, W) float32: rescaled then
        normalised, (x * r - mean) / std, folded into one multiply-add per channel."""
        import torch

        ip = self.processor.image_processor
        scale = float(ip.rescale_factor) if ip.do_rescale else 1.0
        mean = np.asarray(ip.image_mean if ip.do_normalize else [0.0] * 3, dtype=np.float64)
        std = np.asarray(ip.image_std if ip.do_normalize else [1.0] * 3, dtype=np.float64)
        pixels = torch.from_numpy(np.stack(images)).to(torch.float32)  # N, H, W, 3
        pixels.mul_(torch.from_numpy(scale / std).float())
        pixels.add_(torch.from_numpy(-mean / std).float())
        return pixels.permute(0, 3, 1, 2).unsqueeze(0).contiguous()

    def encode_with_processor(self, text: str, images: Sequence[np.ndarray]) -> Any:
        """The stock processor's inputs for prepared images (the reference :meth:`encode`
        matches)."""
        return self.processor(
            text=[text], images=[list(images)], return_tensors="pt",
            do_resize=False, do_image_splitting=False,
        )

    # -- generation ----------------------------------------------------------------------------

    def _to_device(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        out = {}
        for key, value in inputs.items():
            if not isinstance(value, torch.Tensor):
                continue
            value = value.to(self.device)  # then convert there: bf16 casts are cheap on a GPU
            if value.is_floating_point():
                value = value.to(getattr(torch, self.dtype))
            out[key] = value
        return out

    def _generation_kwargs(self, generation: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "do_sample": False, **generation}
        if not kwargs.get("do_sample"):
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key, None)
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        return kwargs

    def _decode(self, ids: Any) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _check_room(self, tokens: int, max_new_tokens: int, what: str) -> None:
        if tokens + max_new_tokens > self.context:
            raise ModelError(
                f"{what} needs {tokens + max_new_tokens} tokens with its answer "
                f"({max_new_tokens} new), more than the model's {self.context}: use fewer "
                "frames (-n) or fewer new tokens"
            )

    def generate(self, inputs: Mapping[str, Any], **generation: Any) -> str:
        """Answer one encoded prompt (:meth:`encode`'s output; greedy unless ``generation``
        says otherwise)."""
        import torch

        inputs = self._to_device(inputs)
        n = inputs["input_ids"].shape[1]
        kwargs = self._generation_kwargs(generation)
        self._check_room(n, kwargs["max_new_tokens"], "the prompt")
        with torch.inference_mode():
            out = self.network.generate(**inputs, **kwargs)
        return self._decode(out[0, n:])

    def generate_text(self, text: str, **generation: Any) -> str:
        """Answer a text-only prompt (summaries), templated like every other turn."""
        chat = self._text_turn(text)
        return self.generate(self.tokenizer(chat, return_tensors="pt", add_special_tokens=False),
                             **generation)

    def image_features(self, images: Sequence[np.ndarray]) -> list[Any]:
        """Each prepared image's encoding (the connector's output, ``tokens_per_image`` x the
        language model's width): what the prompt's image tokens become.

        Read from the frame cache where it holds them; the rest go through the vision tower one
        at a time and are stored. One at a time: a frame's encoding then never depends on which
        frames shared its batch (int8 activations are scaled per call), so the cache holds
        exactly what a fresh encoding gives, activations stay one frame's size, and it measured
        no slower than batches of 4 (a frame is ~1,000 patches: full-speed matrix products).
        Images with the same pixels are encoded once. The vision tower runs for no other reason.
        """
        import torch

        keys = [pixels_key(image) for image in images]
        first: dict[str, int] = {}  # each distinct frame's first position
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        shape = (self.tokens_per_image, int(self.network.config.text_config.hidden_size))
        dtype = getattr(torch, self.dtype)
        cache, found = self.frame_cache, {}
        for k in first:
            payload = cache.get(cache.key(k), shape, str(dtype)) if cache else None
            if payload is not None:
                found[k] = torch.frombuffer(bytearray(payload), dtype=dtype).reshape(shape)
        missing = [k for k in first if k not in found]
        for k in missing:
            pixels = self._pixels([images[first[k]]]).to(self.device, dtype)
            with torch.inference_mode():
                (feature,) = self.network.get_image_features(pixel_values=pixels).pooler_output
            found[k] = feature.reshape(shape).cpu()
            if cache:
                cache.stats.encoded += 1
                cache.put(cache.key(k), _tensor_bytes(found[k]), shape, str(dtype))
        if cache and missing:
            cache.trim()
        return [found[k] for k in keys]

    def encode_prefix(self, text: str, features: Sequence[Any]) -> Prefix:
        """Run the language model once over a prompt's head (everything up to its last image),
        its image tokens replaced by ``features`` (:meth:`image_features`): a KV cache that
        :meth:`answer` and :meth:`choose` continue from, as often as asked."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        ids = self._tokenize(text, len(features), "encoded images")["input_ids"].to(self.device)
        rows = torch.cat(list(features)).to(self.device, getattr(torch, self.dtype))
        image_id = self.processor.image_token_id
        # room for the whole head and a short answer from the start: no regrowth copies (and
        # no freed smaller buffers left behind) during the prefill
        cache = _growing_cache(self.network.config, reserve=ids.shape[1] + 256)
        used = 0
        with torch.inference_mode():
            # PREFILL_CHUNK tokens at a time: attention and activations stay a chunk's size
            # (one pass over 4k tokens held ~0.5 GB more here); each chunk's image tokens take
            # the next rows of the features. Logits for the last position only: the head's
            # answer is not read, and all of them (tokens x vocabulary) would be ~0.8 GB more.
            for start in range(0, ids.shape[1], PREFILL_CHUNK):
                chunk = ids[:, start:start + PREFILL_CHUNK]
                n_image = int((chunk == image_id).sum())
                extra: dict[str, Any] = {}
                if n_image:
                    extra["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(
                        pooler_output=[rows[used:used + n_image]])}
                    used += n_image
                self.network(input_ids=chunk, use_cache=True, cache=cache, logits_to_keep=1,
                             **extra)
        return Prefix(input_ids=ids[0].cpu(), cache=cache)

    def answer(self, prefix: Prefix, tails: Sequence[str], *,
               batch_size: int = QUESTIONS_PER_CALL,
               **generation: Any) -> list[str]:
        """Answer several prompts that share ``prefix``, without encoding the frames again.

        Each of ``tails`` is the chat text after the prefix (the question and the turn's end).
        They continue from the prefix ``batch_size`` at a time: each batch gets the cache
        repeated per question (and per beam with ``num_beams``), the questions padded between
        the video and their text (masked, and skipped by the position ids), and one batched
        generation, so decoding N answers costs little more than decoding one. The answers are
        those of a full encode of prefix + tail (tested for greedy decoding, unquantized).
        ``batch_size=1`` reuses one cache, cropped back after each answer, for the least memory;
        an int8 model always answers one question at a time (:attr:`batches_rows`).
        """
        return [r.text for r in self._answer(Ask(prefix, tuple(tails)), batch_size, generation)]

    def choose(self, prefix: Prefix, tails: Sequence[str], letters: Sequence[str], *,
               batch_size: int = QUESTIONS_PER_CALL, **generation: Any
               ) -> list[tuple[str, str | None]]:
        """Answer multiple-choice prompts: each answer's text and the option letter the model
        scores highest right after the question, from the same pass as :meth:`answer`.

        Small models often answer without naming a letter; the letter with the highest logit at
        the answer's first token is then the model's choice (what multiple-choice benchmarks
        score, and what a one-token greedy decode restricted to the letters would write). The
        letter is read from the raw logits, so sampling or a repetition penalty in
        ``generation`` change the text, not the letter. It is ``None`` only when the tokenizer
        has no token that begins any letter (:meth:`_letter_ids`).
        """
        replies = self._answer(Ask(prefix, tuple(tails), tuple(letters)), batch_size, generation)
        return [(r.text, r.choice) for r in replies]

    def _letter_ids(self, letters: Sequence[str]) -> dict[int, str]:
        """The token ids that begin writing one of ``letters`` (option letters, or answer words
        such as find's ``yes``/``no``), mapped to it: the first token of each spelling (as
        written, after a space, capitalised), when that token holds the word's first character
        (a bare space says nothing) and begins no other word's spelling. ``B`` and `` B`` on
        any tokenizer; ``Yes``/`` yes`` whole on SmolVLM's, their first pieces (``Y``, ``y``)
        on a small one that splits them."""
        owners: dict[int, set[str]] = {}
        for letter in letters:
            for form in dict.fromkeys((letter, " " + letter, letter.capitalize(),
                                       " " + letter.capitalize())):
                tok = self.tokenizer(form, add_special_tokens=False)["input_ids"]
                piece = self.tokenizer.decode(tok[:1]).strip() if tok else ""
                if piece and form.strip().startswith(piece):
                    owners.setdefault(tok[0], set()).add(letter)
        return {tok: next(iter(who)) for tok, who in owners.items() if len(who) == 1}

    def _answer(self, ask: Ask, batch_size: int, generation: Mapping[str, Any]
                ) -> list[Reply]:
        """:meth:`answer`'s work for one video's ``ask`` (with letters: also each question's
        best letter and the letters' scores), ``batch_size`` questions per call where the model
        batches rows."""
        if not ask.tails:
            return []
        kwargs = self._generation_kwargs(generation)
        rows = self._rows(ask, kwargs)
        step = max(1, batch_size) if self.batches_rows else 1
        replies: list[Reply] = []
        for start in range(0, len(rows), step):
            replies.extend(self._generate_rows(rows[start:start + step], kwargs))
        return replies

    def _rows(self, ask: Ask, kwargs: Mapping[str, Any]) -> list[_Row]:
        """``ask``'s tails as rows for :meth:`_generate_rows` (a tail with no prefix is a
        text-only turn, templated as :meth:`generate_text` does), the longest checked to fit
        the context with its answer."""
        letter_ids = None if ask.letters is None else self._letter_ids(ask.letters)
        head = 0 if ask.prefix is None else ask.prefix.tokens
        texts = ask.tails if ask.prefix is not None else [self._text_turn(t) for t in ask.tails]
        ids_of = [self.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]
                  for t in texts]
        self._check_room(head + max(len(ids) for ids in ids_of), kwargs["max_new_tokens"],
                         "a question prompt" if head else "the prompt")
        return [(ask.prefix, ids, letter_ids) for ids in ids_of]

    @property
    def batches_rows(self) -> bool:
        """Whether several prompts may decode in one batched call and each get the answer it
        gets alone. Not with int8: its activations are scaled per call, over every row of a
        batch, so prompts decoded together would change each other's answers; a quantized
        model takes them in turn (questions, and videos in ``batch --batch-size``)."""
        return self.quantization != "int8"

    def answer_together(self, asks: Sequence[Ask], *, batch_size: int = QUESTIONS_PER_CALL,
                        **generation: Any) -> list[list[Reply]]:
        """Several videos' prompts in batched generations: for each :class:`Ask`, its answers
        (a :class:`Reply` per tail), as :meth:`answer`, :meth:`choose` or :meth:`generate_text`
        give them one video at a time.

        On a GPU one sequence decoding leaves the chip idle: here every tail of every ask is a
        row, and up to ``batch_size`` rows decode in one ``generate`` call. Rows continue from
        different prefixes (other videos, other lengths): their KV caches are merged into one,
        each right-aligned after masked left padding, so every row's tokens keep their own
        positions (``generate`` counts them from the attention mask); tails are padded between
        prefix and text, as :meth:`answer` pads questions. An ask with no prefix is a
        text-only turn (a summary), templated as :meth:`generate_text` does. The answers are
        those of one video at a time (tested for greedy decoding, unquantized); a model that
        cannot batch rows (:attr:`batches_rows`) answers each ask alone.
        """
        if not self.batches_rows:
            return [self.answer_one(ask, **generation) for ask in asks]
        kwargs = self._generation_kwargs(generation)
        rows: list[_Row] = []
        owner: list[int] = []
        for i, ask in enumerate(asks):
            if ask.tails:
                made = self._rows(ask, kwargs)
                rows.extend(made)
                owner.extend([i] * len(made))
        out: list[list[Reply]] = [[] for _ in asks]
        step = max(1, batch_size)
        for start in range(0, len(rows), step):
            replies = self._generate_rows(rows[start:start + step], kwargs)
            for i, reply in zip(owner[start:start + step], replies, strict=True):
                out[i].append(reply)
        return out

    def answer_one(self, ask: Ask, **generation: Any) -> list[Reply]:
        """One :class:`Ask`'s answers the way a single video's run gets them:
        :meth:`generate_text`, :meth:`answer` or :meth:`choose`, with their default batches."""
        if ask.prefix is None:
            return [Reply(self.generate_text(t, **generation)) for t in ask.tails]
        return self._answer(ask, QUESTIONS_PER_CALL, generation)

    def _text_turn(self, text: str) -> str:
        """A text-only user turn through the chat template (summaries: :meth:`generate_text`,
        and text-only rows of a batched call)."""
        return self.render([{"type": "text", "text": text}])

    def _generate_rows(self, rows: Sequence[_Row], kwargs: Mapping[str, Any]) -> list[Reply]:
        """One batched generation of ``rows`` (a prefix or None, the tail's token ids, the
        option letters' ids or None): each row's answer, best letter and letters' scores.

        Layout of a row: left padding up to the longest prefix, its prefix (in the cache), then
        padding up to the longest tail, then its tail; padding is masked and skipped by the
        position ids. One row from a prefix continues from that prefix's own cache, cropped
        back afterwards; rows that share one prefix get it repeated; rows of several prefixes
        get them merged (:func:`_merged_cache`).
        """
        import torch

        prefixes = [prefix for prefix, _, _ in rows]
        heads = [0 if p is None else p.tokens for p in prefixes]
        n_head = max(heads)
        width = max(len(tail) for _, tail, _ in rows)
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        beams = int(kwargs.get("num_beams") or 1)
        ids = torch.full((len(rows), n_head + width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (prefix, tail, _) in enumerate(rows):
            if prefix is not None:
                ids[row, n_head - heads[row]:n_head] = prefix.input_ids
                mask[row, n_head - heads[row]:n_head] = 1
            ids[row, n_head + width - len(tail):] = torch.tensor(tail)
            mask[row, n_head + width - len(tail):] = 1
        shared = prefixes[0] if all(p is prefixes[0] for p in prefixes) else None
        reused = shared is not None and len(rows) == 1 and beams == 1
        extra: dict[str, Any] = {}
        if reused:
            extra["cache"] = shared.cache
        elif shared is not None:  # one copy of the video per row and beam
            extra["cache"] = copy.deepcopy(shared.cache)
            extra["cache"].batch_repeat_interleave(len(rows) * beams)
        elif n_head:
            extra["cache"] = _merged_cache(self.network.config, prefixes, n_head, beams)
        letters = [letter_ids for _, _, letter_ids in rows]
        want_letters = any(x is not None for x in letters)
        with torch.inference_mode():
            try:
                with _FirstLogits(self.network, want_letters) as first:
                    out = self.network.generate(
                        input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                        **extra, **kwargs,
                    )
            finally:  # the prefix is left as found, even when generation failed
                if reused:
                    shared.cache.crop(n_head - shared.cache.get_seq_length())  # negative: drop
        replies = [Reply(self._decode(row[n_head + width:])) for row in out]
        if want_letters:
            per_row = first.logits.reshape(len(rows), beams, -1)
            for row, letter_ids in enumerate(letters):
                if letter_ids is not None:  # the first beam's: beams share the prompt
                    replies[row] = Reply(replies[row].text,
                                         *_letter_scores(per_row[row][0], letter_ids))
        return replies


class Reply(NamedTuple):
    """One prompt's answer: its text and, when its :class:`Ask` had ``letters``, the letter the
    model scores highest at the answer's first token (``choice``) and every letter's
    probability there (``scores``: softmax over the letters' logits, summing to 1), read from
    the same pass that wrote the text. A tuple, so answers travel as plain data (JSON, other
    processes)."""

    text: str
    choice: str | None = None
    scores: dict[str, float] | None = None


@dataclass(frozen=True)
class Ask:
    """One video's prompts for :meth:`Model.answer_together`: ``tails`` that continue from
    ``prefix`` (:meth:`Model.encode_prefix`), each answered with the best of ``letters`` too
    when they are given (:meth:`Model.choose`); with no prefix, each tail is a text-only user
    turn (:meth:`Model.generate_text`)."""

    prefix: Prefix | None
    tails: tuple[str, ...]
    letters: tuple[str, ...] | None = None


@dataclass
class Prefix:
    """A prompt's head run through the network once: its token ids and the KV cache after
    them. Reusable: :meth:`Model.answer` leaves the cache as it found it."""

    input_ids: Any  # 1-D tensor on the CPU
    cache: Any

    @property
    def tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes the KV cache holds, spare room included (each tensor's storage counted once):
        what keeping this prefix costs, for a memory budget such as ``serve --cache-mb``."""
        import torch

        seen: dict[tuple[str, int], int] = {}
        for layer in self.cache.layers:
            for value in vars(layer).values():
                if isinstance(value, torch.Tensor):
                    storage = value.untyped_storage()
                    seen[(str(value.device), storage.data_ptr())] = storage.nbytes()
        return sum(seen.values())



_Row = tuple[Prefix | None, list[int], dict[int, str] | None]
"""One prompt of a batched generation: the prefix it continues (None: a text-only turn), its
tail's token ids, and the option letters' token ids (None: no letter is read)."""

def _encoding_key(model_id: str, revision: str | None, folder: Path, device: str,
                  dtype: str, quantization: str) -> str:
    """Everything about a loaded model that changes how a frame is encoded: the checkpoint
    (id, revision, its weight files' names, sizes and times, so a checkpoint rewritten in
    place is a new one, and its image-processor settings), the dtype, the quantization, the kind
    of device, and the versions of the code that encodes (videovlm, torch, transformers)."""
    import torch
    import transformers

    from videovlm._version import __version__

    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    # the pixels' normalisation and the code that encodes them change an encoding too
    preprocessing = _read_json(folder / "preprocessor_config.json")
    return json.dumps([model_id, revision, weights, preprocessing, dtype, quantization,
                       device.split(":")[0], __version__, torch.__version__,
                       transformers.__version__], sort_keys=True, default=str)


def _growing_cache(config: Any, reserve: int = 0) -> Any:
    """A KV cache whose layers grow in place (:func:`_growing_layer_class`), one per layer of
    the language model, each with room for ``reserve`` tokens from its first write."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    layer = _growing_layer_class()
    cache.layers = [layer() for _ in cache.layers]
    for each in cache.layers:
        each.reserve = reserve
    return cache


def _merged_cache(config: Any, prefixes: Sequence[Prefix | None], length: int,
                  repeats: int) -> Any:
    """One growing cache of ``length`` positions with a row per prefix (``repeats`` rows with
    beams): each prefix's keys and values right-aligned, zeros before them and for a row with
    no prefix. Zeros, not empty memory: the padding is masked, and a masked NaN would still
    poison attention's sums."""
    cache = _growing_cache(config)
    for n, layer in enumerate(cache.layers):
        like = next(p.cache.layers[n] for p in prefixes if p is not None)
        _, heads, _, dim = like.keys.shape
        keys = like.keys.new_zeros(len(prefixes), heads, length, dim)
        values = like.values.new_zeros(len(prefixes), heads, length, like.values.shape[-1])
        for row, prefix in enumerate(prefixes):
            if prefix is not None:
                source = prefix.cache.layers[n]
                keys[row, :, length - prefix.tokens:] = source.keys[0]
                values[row, :, length - prefix.tokens:] = source.values[0]
        if repeats > 1:
            keys = keys.repeat_interleave(repeats, dim=0)
            values = values.repeat_interleave(repeats, dim=0)
        layer.update(keys, values)
    return cache


@functools.cache
def _growing_layer_class() -> Any:
    """transformers' ``DynamicLayer`` with room to grow: a new token is written into spare
    capacity instead of ``torch.cat`` copying the whole cache for every token. At 4.8k tokens of
    SmolVLM-Instruct that copy is 1.9 GB per generated token (measured: decoding 1.6 tok/s)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        reserve = 0  # tokens to make room for at the first write

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            super().lazy_initialization(key_states, value_states)
            self._k: Any = None
            self._v: Any = None
            self._length = 0

        def _view(self) -> None:
            self.keys = self._k[..., :self._length, :]
            self.values = self._v[..., :self._length, :]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any
                   ) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self._length + key_states.shape[-2]
            if self._k is None or end > self._k.shape[-2] \
                    or self._k.shape[:-2] != key_states.shape[:-2]:
                room = max(end + max(256, end // 4), self.reserve)
                k = key_states.new_empty(*key_states.shape[:-2], room, key_states.shape[-1])
                v = value_states.new_empty(*value_states.shape[:-2], room,
                                           value_states.shape[-1])
                if self._k is not None and self._length:
                    k[..., :self._length, :] = self._k[..., :self._length, :]
                    v[..., :self._length, :] = self._v[..., :self._length, :]
                self._k, self._v = k, v
            self._k[..., self._length:end, :] = key_states
            self._v[..., self._length:end, :] = value_states
            self._length = end
            self._view()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._length if self.is_initialized else 0

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes a negative number: the tokens to drop")
            if tokens_to_remove and self.is_initialized:
                self._length = max(0, self._length + tokens_to_remove)
                self._view()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._view()

        def batch_select_indices(self, indices: Any) -> None:
            if self.get_seq_length() > 0:
                self._k, self._v = self._k[indices, ...], self._v[indices, ...]
                self._view()

        def reorder_cache(self, beam_idx: Any) -> None:
            if self.get_seq_length() > 0:
                index = beam_idx.to(self._k.device)
                self._k = self._k.index_select(0, index)
                self._v = self._v.index_select(0, index)
                self._view()

        def reset(self) -> None:
            self._k = self._v = None
            self._length = 0
            super().reset()

    return GrowingLayer


def _tensor_bytes(tensor: Any) -> bytes:
    """A CPU tensor's raw bytes (bfloat16 too, which numpy has no type for)."""
    import torch

    return tensor.contiguous().view(torch.uint8).numpy().tobytes()


class _FirstLogits:
    """Keeps the logits of the first forward pass a ``generate`` call makes: the answer's first
    token, after the question.

    A forward hook on the network, not ``output_logits=True``: that keeps every step's logits
    for the whole batch (``max_new_tokens`` x batch x vocabulary floats) to use one row, and
    logits processors would only see them after the recipe's penalties and sampling filters.
    """

    def __init__(self, network: Any, active: bool) -> None:
        self.network = network
        self.active = active
        self.logits: Any = None
        self._handle: Any = None

    def _keep(self, _module: Any, _args: Any, output: Any) -> None:
        if self.logits is None:
            self.logits = output.logits[:, -1, :].float()

    def __enter__(self) -> _FirstLogits:
        if self.active:
            self._handle = self.network.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()


def _letter_scores(logits: Any, letter_ids: dict[int, str]
                   ) -> tuple[str | None, dict[str, float] | None]:
    """The one rule for reading letters from an answer's first-token ``logits`` (one row):
    the letter of the highest-scoring token (what a one-token greedy decode restricted to the
    letters writes; ties go to the lower token id, as greedy decoding's argmax), and each
    letter's probability, the softmax over the letters of each one's best token logit.
    ``(None, None)`` when the tokenizer spells none of them."""
    import torch

    if not letter_ids:
        return None, None
    ids = sorted(letter_ids)
    chosen = letter_ids[ids[int(logits[ids].argmax())]]
    names = list(dict.fromkeys(letter_ids.values()))  # in the letters' order
    best = torch.stack([logits[[i for i in ids if letter_ids[i] == n]].max() for n in names])
    probs = torch.softmax(best.double(), dim=0)
    return chosen, {n: float(p) for n, p in zip(names, probs, strict=True)}
