"""--quantize: int8 Linear layers on the CPU by default, said in the result, and answers that do
not depend on which other questions were asked with them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from videovlm.api import ask, load_video
from videovlm.errors import ModelError
from videovlm.model import Model
from videovlm.pipelines import load_recipe

BIKES = Path(__file__).resolve().parent.parent / "samples" / "bikes.mp4"


def test_int8_is_the_cpu_default_and_replaces_every_linear_layer(tiny_smolvlm) -> None:
    model = Model.load(str(tiny_smolvlm), cache=False)
    assert model.quantization == "int8" and model.info()["quantization"] == "int8"
    kinds = {type(m).__module__ + "." + type(m).__name__ for m in model.network.modules()}
    assert "torch.nn.modules.linear.Linear" not in kinds
    assert any("quantized" in k and k.endswith("Linear") for k in kinds)
    plain = Model.load(str(tiny_smolvlm), quantize="none", cache=False)
    assert plain.quantization == "none"
    assert any(isinstance(m, torch.nn.Linear) for m in plain.network.modules())
    with pytest.raises(ModelError, match="unknown quantization"):
        Model.load(str(tiny_smolvlm), quantize="int4")
    # int8 computes in float32 around its layers: another dtype means no quantization by
    # default, and a one-line refusal when asked for both
    half = Model.load(str(tiny_smolvlm), dtype="bf16", cache=False)
    assert (half.dtype, half.quantization) == ("bfloat16", "none")
    inputs = load_video(BIKES, "qa", n=1, image_size=half.image_size)
    assert half.image_features(inputs.images)[0].dtype == torch.bfloat16
    with pytest.raises(ModelError, match="float32"):
        Model.load(str(tiny_smolvlm), dtype="bf16", quantize="int8")


def test_int8_encodings_stay_close_to_fp32(tiny_smolvlm) -> None:
    """Drift of the image features (the benchmark reports it on the real shapes)."""
    inputs = load_video(BIKES, load_recipe("qa"), n=3, image_size=512)
    q = Model.load(str(tiny_smolvlm), cache=False).image_features(inputs.images)
    f = Model.load(str(tiny_smolvlm), quantize="none", cache=False).image_features(inputs.images)
    for a, b in zip(q, f, strict=True):
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert 0.97 < float(cos) < 1.0  # close, and really quantized


def test_an_int8_answer_does_not_depend_on_the_other_questions(tiny_idefics3) -> None:
    """int8 activations are scaled per call: questions are therefore answered one at a time,
    so asking more questions never changes an answer."""
    model = Model.load(str(tiny_idefics3), cache=False)
    alone = ask(BIKES, ["What moves?"], model=model, n=4)
    together = ask(BIKES, ["Where is this?", "What moves?", "Who is there?"], model=model, n=4)
    assert together.answers[1].answer == alone.answers[0].answer
    assert alone.model["quantization"] == "int8"


def test_int8_keeps_a_bf16_checkpoints_embeddings_narrow(tiny_smolvlm, tmp_path) -> None:
    """bf16 rows widen exactly to fp32: the table stays as stored, and gives fp32 rows."""
    from transformers import AutoModelForImageTextToText

    folder = tmp_path / "bf16"
    shutil.copytree(tiny_smolvlm, folder)
    (folder / "model.safetensors").unlink()
    AutoModelForImageTextToText.from_pretrained(tiny_smolvlm, dtype=torch.bfloat16) \
        .save_pretrained(folder)
    model = Model.load(str(folder), cache=False)
    table = model.network.get_input_embeddings()
    assert model.quantization == "int8" and table.weight.dtype == torch.bfloat16
    rows = table(torch.tensor([[1, 2, 3]]))
    assert rows.dtype == torch.float32
    assert torch.equal(rows, table.weight[1:4].float()[None])
    result = ask(BIKES, ["What happens?"], model=model, n=2)
    assert isinstance(result.answers[0].answer, str)


def test_released_checkpoint_pages_leave_memory_and_read_back_from_the_file(tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from videovlm.model import _MappedPages

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(16 * 2**20, dtype=torch.float32)}, path)  # 64 MB
    with safe_open(path, framework="pt") as f:
        tensor = f.get_slice("w")[:]
    pages = _MappedPages([path])
    if not pages.ranges:
        pytest.skip("the checkpoint is not mapped here (not Linux, or safetensors copies)")
    total = float(tensor.sum())
    before = _rss_file_mb()
    pages.release(tensor)
    assert before - _rss_file_mb() > 48  # the pages left this process
    assert float(tensor.sum()) == total  # and anything still reading them gets the file's bytes
    pages.release(torch.zeros(2**20))  # not in a mapped checkpoint: left alone
    assert pages.release(tensor) is None


def _rss_file_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    return 0.0
