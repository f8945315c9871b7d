"""--quantize: int8 Linear layers on the CPU by default, said in the result, and answers that do
not depend on which other questions were asked with them."""

from __future__ import annotations

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
