"""The random-weight checkpoints are the real architectures, loadable like a downloaded model."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from videovlm.errors import ModelError
from videovlm.model import Model
from videovlm.testing import make_checkpoint

SPECIALS = ["<image>", "<fake_token_around_image>", "<global-img>", "<row_1_col_1>",
            "<row_6_col_6>", "<end_of_utterance>", "<|im_start|>"]


@pytest.mark.parametrize(
    ("fixture", "cls", "size", "per_image", "context"),
    [
        ("tiny_idefics3", "Idefics3ForConditionalGeneration", 384, 81, 16384),
        ("tiny_smolvlm", "SmolVLMForConditionalGeneration", 512, 64, 8192),
    ],
)
def test_tiny_checkpoint_is_the_real_architecture(request, fixture, cls, size, per_image, context):
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    path = request.getfixturevalue(fixture)
    network = AutoModelForImageTextToText.from_pretrained(path)
    assert type(network).__name__ == cls
    config = network.config
    vision = config.vision_config
    assert (vision.image_size, config.text_config.max_position_embeddings) == (size, context)
    assert ((vision.image_size // vision.patch_size) // config.scale_factor) ** 2 == per_image
    assert json.loads((path / "processor_config.json").read_text())["image_seq_len"] == per_image
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert pre["max_image_size"] == {"longest_edge": size}
    assert pre["size"] == {"longest_edge": 4 * size}
    assert pre["do_image_splitting"] is True
    tokenizer = AutoTokenizer.from_pretrained(path)
    for token in SPECIALS:
        assert token in tokenizer.get_vocab(), token
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert network.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(
        "<end_of_utterance>")
    # what converters of real checkpoints (llama.cpp's) read: the text model's architecture
    # as the hub configs name it, and a paragraph break that is one token
    config_json = json.loads((path / "config.json").read_text())
    assert config_json["text_config"]["architectures"] == ["VLlama3ForCausalLM"]
    assert len(tokenizer("\n\n", add_special_tokens=False)["input_ids"]) == 1
    assert sum(p.numel() for p in network.parameters()) < 2_000_000  # tiny: fast in tests


@pytest.mark.parametrize(("fixture", "family"), [("tiny_idefics3", "idefics3"),
                                                 ("tiny_smolvlm", "smolvlm")])
def test_model_load_reads_the_facts_from_the_checkpoint(request, fixture, family):
    path = request.getfixturevalue(fixture)
    model = Model.load(str(path), device="cpu", dtype="auto")
    assert model.family == family
    assert model.image_size == (384 if family == "idefics3" else 512)
    assert model.tokens_per_image == (81 if family == "idefics3" else 64)
    assert model.context == (16384 if family == "idefics3" else 8192)
    assert (model.device, model.dtype) == ("cpu", "float32")
    info = model.info()
    assert {"id", "revision", "dtype", "device"} <= set(info)
    assert info["id"] == str(path)


def test_cli_writes_a_checkpoint_model_load_reads(tmp_path):
    out = tmp_path / "ckpt"
    proc = subprocess.run(
        [sys.executable, "-m", "videovlm.testing", "tiny-model", str(out), "--family", "smolvlm",
         "--context", "2048"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    model = Model.load(str(out))
    assert (model.family, model.context, model.tokens_per_image) == ("smolvlm", 2048, 64)


def test_missing_model_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelError) as err:
        Model.load("HuggingFaceTB/no-such-model-videovlm")
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "\n" not in message
    assert "HuggingFaceTB/no-such-model-videovlm" in message
    assert "--model PATH" in message and "HF_HUB_OFFLINE" in message


def test_missing_model_without_hub_access_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    start = time.perf_counter()
    with pytest.raises(ModelError) as err:
        Model.load("HuggingFaceTB/no-such-model-videovlm")
    assert time.perf_counter() - start < 20
    assert "\n" not in str(err.value)


def test_local_path_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="not a model checkpoint"):
        Model.load(str(tmp_path))
    with pytest.raises(ModelError, match="not found"):
        Model.load(str(tmp_path / "missing"))


def test_bad_device_and_dtype_are_user_errors(tiny_idefics3):
    with pytest.raises(ModelError, match="dtype"):
        Model.load(str(tiny_idefics3), dtype="int3")
    with pytest.raises(ModelError, match="device"):
        Model.load(str(tiny_idefics3), device="tpu")


@pytest.mark.slow
def test_256m_shape_has_the_public_model_size(tmp_path):
    """SmolVLM2-256M: ~256M parameters (SigLIP-B/16 at 512 px + SmolLM2-135M)."""
    from transformers import AutoModelForImageTextToText

    path = make_checkpoint(tmp_path / "m256", shape="256m")
    network = AutoModelForImageTextToText.from_pretrained(path)
    n = sum(p.numel() for p in network.parameters())
    assert type(network).__name__ == "SmolVLMForConditionalGeneration"
    assert 240e6 < n < 270e6, n
    model = Model.load(str(path))
    assert (model.image_size, model.tokens_per_image, model.context) == (512, 64, 8192)


def test_hub_id_resolves_from_the_local_cache(tiny_smolvlm, tmp_path, monkeypatch):
    """A cached hub id loads offline, and its revision is the snapshot's commit."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--videovlm-test--tiny-smolvlm"
    shutil.copytree(tiny_smolvlm, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = Model.load("videovlm-test/tiny-smolvlm")
    assert (model.id, model.revision, model.family) == ("videovlm-test/tiny-smolvlm", commit,
                                                        "smolvlm")
    assert model.info()["revision"] == commit
