"""Randomly initialised checkpoints of the real SmolVLM architectures, for tests and benchmarks.

Nothing here can be downloaded on the machines we test on, so every test of the model stage runs
on a checkpoint written by :func:`make_checkpoint`: the real model class
(``Idefics3ForConditionalGeneration`` or ``SmolVLMForConditionalGeneration``) with random
weights, a byte-level BPE tokenizer trained offline in well under a second that carries the real
special tokens, the real image-processor settings and the real chat template. It is saved with
``save_pretrained`` so ``Model.load(DIR)`` reads it through exactly the code path of a real model;
only the weights (and therefore the words) are meaningless.

Where each shape number comes from (checked against the hub files, read through the ``search``
tool, and against the defaults in ``transformers/models/{idefics3,smolvlm}``):

- ``idefics3`` = SmolVLM v1, ``HuggingFaceTB/SmolVLM-Instruct``: ``config.json`` has
  ``scale_factor`` 3, ``image_token_id`` 49190, a SigLIP so400m/14 vision tower (hidden 1152,
  intermediate 4304, 27 layers, 16 heads, patch 14, 384 px) and SmolLM2-1.7B text (hidden 2048,
  intermediate 8192, 24 layers, 32 heads and 32 kv heads, ``max_position_embeddings`` 16384,
  ``rope_theta`` 273768, vocab 49155). ``preprocessor_config.json``: ``Idefics3ImageProcessor``,
  ``max_image_size.longest_edge`` 384, ``size.longest_edge`` 1536, ``do_image_splitting`` true,
  mean/std 0.5, ``resample`` 1 (LANCZOS). ``processor_config.json``: ``image_seq_len`` 81
  (= (384 / 14)² / 3² rounded down as the processor docstring computes it). Chat template: the
  ``chat_template.json`` of that repository (``User:``/``Assistant:`` turns ending in
  ``<end_of_utterance>``).
- ``smolvlm`` = SmolVLM2, ``HuggingFaceTB/SmolVLM2-256M-Video-Instruct``: ``scale_factor`` 4, a
  SigLIP-B/16 tower (hidden 768, intermediate 3072, 12 layers, 12 heads, patch 16, 512 px) and
  SmolLM2-135M text (hidden 576, intermediate 1536, 30 layers, 9 heads, 3 kv heads, head_dim 64,
  8192 positions, ``rope_theta`` 100000, vocab 49280). ``preprocessor_config.json``:
  ``SmolVLMImageProcessor``, ``max_image_size`` 512, ``size`` 2048, ``video_sampling``
  (fps 1, max_frames 64, 512 px). ``processor_config.json``: ``image_seq_len`` 64
  (= (512 / 16)² / 4²). Chat template: ``DEFAULT_CHAT_TEMPLATE`` of
  ``transformers/models/smolvlm/processing_smolvlm.py`` (the repository's, with ``<video>``).
  ``generation_config.json`` of both: ``eos_token_id`` = ``<end_of_utterance>``.
- SmolVLM2-2.2B (``--family smolvlm --shape 2b``) has SmolVLM-Instruct's dimensions with 8192
  positions (its ``config.json``).

Shapes: ``tiny`` keeps each family's image layout (384 px / patch 14 / scale 3 -> 81 tokens, or
512 px / patch 16 / scale 4 -> 64 tokens) with hidden 64 and 2 layers (a few MB, builds in
seconds); ``256m`` and ``2b`` are the public dimensions with random weights, so their timings are
the real model's. The default family of a shape is the model it mirrors (``256m`` -> smolvlm,
``tiny`` and ``2b`` -> idefics3).

Whisper (:func:`make_whisper_checkpoint`, ``tiny-asr``), for speech recognition: the real
``WhisperForConditionalGeneration``. ``base`` and ``small`` have openai/whisper-base's and
-small's dimensions (openai/whisper's ``ModelDimensions``: 80 mels, 1500 audio positions, 448
text positions, width 512 / 768, 8 / 12 heads, 6 / 12 layers each side, feed-forward 4x the
width, vocabulary 51865). The token layout is the multilingual tokenizer's: 50257 byte-level
BPE entries (here trained offline on the corpus below, padded with unreachable entries), then
``<|endoftext|>`` 50257, ``<|startoftranscript|>`` 50258, the 99 languages ``<|en|>`` 50259 to
``<|su|>`` 50357, ``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``,
``<|nospeech|>``, ``<|notimestamps|>`` 50363 and the 1501 timestamps ``<|0.00|>`` 50364 to
``<|30.00|>`` 51864; the generation config carries what timestamped multilingual generation
reads (``no_timestamps_token_id``, ``lang_to_id``, ``task_to_id``, ``max_initial_timestamp_index``
50 = 1 s, ``begin_suppress_tokens`` space and end of text). ``tiny`` keeps that layout after a
small BPE, with width 64 and 2 layers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from videovlm.model import FAMILIES

Family = Literal["idefics3", "smolvlm"]
Shape = Literal["tiny", "256m", "2b"]
SHAPES: tuple[str, ...] = ("tiny", "256m", "2b")

# The hub repositories' chat templates (see the module docstring for where they come from).
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string %}{{': ' + message['content']}}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}"
    "{{ '<video>' }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# The SmolLM2 tokenizer's special tokens, in its order, then the ones the VLMs added.
_BASE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_VLM_SPECIALS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
]
_SMOLVLM_SPECIALS = ["<video>"]

# A few hundred words of ordinary text, enough for the BPE trainer to learn merges that make the
# prompts' words a handful of tokens (so token counts have the real character of a BPE).
_CORPUS = """\
You are provided the following series of frames from a video. Frame from 00:00: Frame from
01:15: Describe what happens in this video, with the time of each event. Answer the question
about the video. Which of the following options is correct? Answer with the letter of the
option. A person walks into the room and sits down at a table. The camera pans to the left and
shows a window; outside it is raining. A dog runs across a green field, chasing a red ball. The
scene cuts to a kitchen where someone is cooking pasta on a stove. Two people talk in a street
at night under bright lights. The video ends with a title card on a black background. What
colour is the car? How many people are in the scene? Where does the video take place? Summarise
the scenes in order. The man opens the door, the woman reads a book, the children play football.
Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.
Complex is better than complicated. Flat is better than nested. Sparse is better than dense.
Readability counts. Special cases aren't special enough to break the rules. Although
practicality beats purity. Errors should never pass silently. Unless explicitly silenced.
In the face of ambiguity, refuse the temptation to guess. There should be one and preferably
only one obvious way to do it. Now is better than never. 0 1 2 3 4 5 6 7 8 9 10 11 12 30 45 59
User: Assistant: the a an of in on at to and is are was were with from for by it this that
"""
# Paragraph breaks on their own, so the trainer learns "\n\n" as one token, as SmolLM2's
# vocabulary has it (the llama.cpp converter looks for it); the byte-level pre-tokenizer never
# lets a break inside running text reach the merge.
_BREAKS = ["\n\n"] * 16


@dataclass(frozen=True)
class _Dims:
    """One architecture's sizes (vision tower, connector, text model)."""

    image_size: int
    patch_size: int
    scale_factor: int
    v_hidden: int
    v_intermediate: int
    v_layers: int
    v_heads: int
    t_hidden: int
    t_intermediate: int
    t_layers: int
    t_heads: int
    t_kv_heads: int
    context: int
    rope_theta: float
    vocab_size: int | None  # None: the trained tokenizer's size


def _dims(family: str, shape: str) -> _Dims:
    """The numbers of the module docstring, by family and shape."""
    if shape == "tiny":
        if family == "idefics3":
            return _Dims(384, 14, 3, 64, 128, 2, 4, 64, 128, 2, 4, 2, 16384, 273768.0, None)
        return _Dims(512, 16, 4, 64, 128, 2, 4, 64, 128, 2, 4, 2, 8192, 100000.0, None)
    if shape == "256m":
        return _Dims(512, 16, 4, 768, 3072, 12, 12, 576, 1536, 30, 9, 3, 8192, 100000.0, 49280)
    if shape == "2b":
        context = 16384 if family == "idefics3" else 8192
        vocab = 49155 if family == "idefics3" else 49280
        return _Dims(384, 14, 3, 1152, 4304, 27, 16, 2048, 8192, 24, 32, 32, context, 273768.0,
                     vocab)
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def default_family(shape: str) -> str:
    """The family of the public model a shape mirrors."""
    return "smolvlm" if shape == "256m" else "idefics3"


def _train_tokenizer(family: str):  # -> transformers.PreTrainedTokenizerFast
    """A byte-level BPE with SmolLM2's special tokens, trained on the small corpus above."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _BASE_SPECIALS + _VLM_SPECIALS + (_SMOLVLM_SPECIALS if family == "smolvlm" else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4 + _BREAKS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        model_max_length=_dims(family, "tiny").context,
    )


def _image_processor(family: str, dims: _Dims):
    """The repository's image-processor settings (PIL backend: no torchvision needed)."""
    common = {
        "do_convert_rgb": True,
        "do_image_splitting": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "max_image_size": {"longest_edge": dims.image_size},
        "resample": 1,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": 4 * dims.image_size},
    }
    if family == "idefics3":
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil,
        )

        return Idefics3ImageProcessorPil(**common)
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    return SmolVLMImageProcessorPil(
        **common,
        video_sampling={
            "fps": 1, "max_frames": 64, "video_size": {"longest_edge": dims.image_size}
        },
    )


def make_checkpoint(
    dir: str | os.PathLike[str],
    family: str | None = None,
    shape: str = "tiny",
    *,
    context: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight checkpoint of the real architecture to ``dir`` and return its path.

    ``context`` overrides the positions (a small one makes the over-budget path cheap to test).
    Big shapes are created in bfloat16 (a 2b model then needs ~4.4 GB of memory, not 8.8).
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    family = family or default_family(shape)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    dims = _dims(family, shape)
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_tokenizer(family)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vocab = dims.vocab_size or len(tokenizer)
    n_ctx = context or dims.context
    text_config = {
        "model_type": "llama",
        "architectures": ["VLlama3ForCausalLM"],  # as the hub checkpoints say (converters read it)
        "hidden_size": dims.t_hidden,
        "intermediate_size": dims.t_intermediate,
        "num_hidden_layers": dims.t_layers,
        "num_attention_heads": dims.t_heads,
        "num_key_value_heads": dims.t_kv_heads,
        "head_dim": dims.t_hidden // dims.t_heads,
        "max_position_embeddings": n_ctx,
        "rope_theta": dims.rope_theta,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    vision_config = {
        "hidden_size": dims.v_hidden,
        "intermediate_size": dims.v_intermediate,
        "num_hidden_layers": dims.v_layers,
        "num_attention_heads": dims.v_heads,
        "image_size": dims.image_size,
        "patch_size": dims.patch_size,
    }
    if family == "idefics3":
        from transformers import Idefics3Config as Config
    else:
        from transformers import SmolVLMConfig as Config
    config = Config(
        text_config=text_config,
        vision_config=vision_config,
        scale_factor=dims.scale_factor,
        image_token_id=image_token_id,
        tie_word_embeddings=False,
    )
    big = shape != "tiny"
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(
        config, dtype=torch.bfloat16 if big else torch.float32
    )
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)

    image_seq_len = ((dims.image_size // dims.patch_size) ** 2) // (dims.scale_factor**2)
    tokenizer.save_pretrained(out)
    _image_processor(family, dims).save_pretrained(out)
    template = IDEFICS3_CHAT_TEMPLATE if family == "idefics3" else SMOLVLM_CHAT_TEMPLATE
    processor_class = "Idefics3Processor" if family == "idefics3" else "SmolVLMProcessor"
    (out / "processor_config.json").write_text(
        json.dumps({"image_seq_len": image_seq_len, "processor_class": processor_class}, indent=2)
    )
    (out / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2))
    return out


# --- Whisper (speech recognition) ----------------------------------------------------------------

ASR_SHAPES: tuple[str, ...] = ("tiny", "base", "small")


@dataclass(frozen=True)
class _AsrDims:
    """One Whisper's sizes: encoder and decoder share width, heads and feed-forward size."""

    d_model: int
    layers: int
    heads: int
    ffn: int
    base_vocab: int | None  # byte-level BPE entries before the specials; None: as trained
    positions: int  # the decoder's: tokens one 30 s window may hold, prompt included


def _asr_dims(shape: str) -> _AsrDims:
    """``base``/``small``: openai/whisper-base and -small's ``config.json``; ``tiny``: a few MB,
    whose decoder holds 64 positions instead of 448 (random weights rarely end a window early:
    a window then costs 60 tokens, not 444, and tests stay fast, as the VLM's ``--context``)."""
    if shape == "tiny":
        return _AsrDims(64, 2, 4, 128, None, 64)
    if shape == "base":
        return _AsrDims(512, 6, 8, 2048, 50257, 448)
    if shape == "small":
        return _AsrDims(768, 12, 12, 3072, 50257, 448)
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(ASR_SHAPES)}")


# Whisper's vocabulary after the byte-level BPE, in its order (openai/whisper-base's
# tokenizer.json; the multilingual models before large-v3 have 99 languages, LANGUAGES' first).
_ASR_TASKS = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
              "<|nospeech|>", "<|notimestamps|>"]
_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>, one per 20 ms


def _whisper_tokenizer(base_vocab: int | None):  # -> WhisperTokenizer
    """Whisper's tokenizer layout on a byte-level BPE trained offline on :data:`_CORPUS`:
    ``<|endoftext|>`` right after the BPE entries, then ``<|startoftranscript|>``, the 99
    language tokens, the task and control tokens and the 1501 timestamps, as the hub's. With
    ``base_vocab`` the BPE is padded with unreachable entries to that size, so every id of the
    real model (51865 for the multilingual ones) is where it is there."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.whisper.tokenization_whisper import WhisperTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=1024, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    for i in range(len(vocab), base_vocab or len(vocab)):
        vocab[f"unused{i}"] = i
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    specials = ["<|endoftext|>", "<|startoftranscript|>", *_language_tokens(), *_ASR_TASKS]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(_TIMESTAMPS)])
    return tokenizer


def make_whisper_checkpoint(dir: str | os.PathLike[str], shape: str = "tiny", *,
                            seed: int = 0) -> Path:
    """Write a random-weight ``WhisperForConditionalGeneration`` with the real tokenizer layout,
    feature extractor (80 mel bins, 16 kHz, 30 s windows) and generation config (the fields
    timestamped, multilingual generation reads: ``no_timestamps_token_id``, ``lang_to_id``,
    ``task_to_id``, ``max_initial_timestamp_index``...) to ``dir``; return its path.
    ``base``/``small`` have those models' layer sizes, so their timings are the real ones."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    dims = _asr_dims(shape)
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _whisper_tokenizer(dims.base_vocab)
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=dims.d_model,
        encoder_layers=dims.layers, decoder_layers=dims.layers,
        encoder_attention_heads=dims.heads, decoder_attention_heads=dims.heads,
        encoder_ffn_dim=dims.ffn, decoder_ffn_dim=dims.ffn,
        max_source_positions=1500, max_target_positions=dims.positions,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        begin_suppress_tokens=[ids("Ġ"), eot], tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    lang_to_id = {token: ids(token) for token in _language_tokens()}
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        max_length=448, begin_suppress_tokens=[ids("Ġ"), eot], suppress_tokens=[],
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=True, lang_to_id=lang_to_id,
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        forced_decoder_ids=None, max_initial_timestamp_index=50, return_timestamps=False,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160,
                            chunk_length=30, n_fft=400).save_pretrained(out)
    return out


def _language_tokens() -> list[str]:
    """``<|en|>`` ... : the 99 languages of the multilingual Whisper models before large-v3."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return [f"<|{code}|>" for code in list(LANGUAGES)[:99]]


def main(argv: list[str] | None = None) -> int:
    """``python -m videovlm.testing tiny-model DIR [--family F] [--shape S] [--context N]``, or
    ``tiny-asr DIR [--shape tiny|base|small]`` (Whisper)."""
    parser = argparse.ArgumentParser(prog="python -m videovlm.testing")
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny-model", help="write a random-weight checkpoint of the real model")
    tiny.add_argument("dir")
    tiny.add_argument("--family", choices=FAMILIES, default=None)
    tiny.add_argument("--shape", choices=SHAPES, default="tiny")
    tiny.add_argument("--context", type=int, default=None, help="override the positions")
    asr = sub.add_parser("tiny-asr", help="write a random-weight Whisper checkpoint")
    asr.add_argument("dir")
    asr.add_argument("--shape", choices=ASR_SHAPES, default="tiny")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Writing model shards" bar: the path printed is enough
    if args.command == "tiny-asr":
        print(make_whisper_checkpoint(args.dir, args.shape))
        return 0
    path = make_checkpoint(args.dir, args.family, args.shape, context=args.context)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
