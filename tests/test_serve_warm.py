"""Warm videos in-process: a real run puts its prefix in the video's entry, the next question
reuses it (no frame encoded) with the same answer, a prefix's size is its KV cache's, and the
LRU keeps within its byte budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import media
from tests.helpers import EncodedFrames
from videovlm.api import load_video, run_model
from videovlm.model import Model
from videovlm.pipelines import load_recipe
from videovlm.serve.warm import WarmCache, WarmVideo, inputs_nbytes


@pytest.fixture(scope="module")
def model(tiny_smolvlm: Path) -> Model:
    return Model.load(str(tiny_smolvlm), cache=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("warm")
    return [media.make_video(d / f"c{i}.mp4", n_frames=12 + i) for i in range(3)]


def _warm(model: Model, path: Path, key: str) -> tuple[WarmVideo, str]:
    recipe = load_recipe("qa").with_overrides(n=3, max_new_tokens=4)
    entry = WarmVideo((key,), load_video(path, recipe, image_size=model.image_size))
    result = run_model(model, entry.inputs, recipe, questions=["What?"], prefixes=entry)
    return entry, result.answers[0].answer


def test_the_second_question_reuses_the_prefix(model: Model, clips: list[Path]) -> None:
    recipe = load_recipe("qa").with_overrides(n=3, max_new_tokens=4)
    entry = WarmVideo(("a",), load_video(clips[0], recipe, image_size=model.image_size))
    with EncodedFrames(model) as first:
        run_model(model, entry.inputs, recipe, questions=["What?"], prefixes=entry)
    assert first.frames == 3 and len(entry.prefixes) == 1
    with EncodedFrames(model) as second:
        warm = run_model(model, entry.inputs, recipe, questions=["Where?"], prefixes=entry)
    assert second.frames == 0 and "vision" not in warm.timing_s
    cold = run_model(model, entry.inputs, recipe, questions=["Where?"])
    assert warm.answers[0].answer == cold.answers[0].answer
    assert warm.prompt["tokens"] == cold.prompt["tokens"]


def test_a_prefix_counts_its_kv_cache(model: Model, clips: list[Path]) -> None:
    entry, _ = _warm(model, clips[0], "b")
    (prefix,) = entry.prefixes.values()
    text = model.network.config.text_config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = text.num_hidden_layers * 2 * heads * head_dim * 4  # float32 keys and values
    held = per_token * prefix.tokens
    # and the spare room the cache grows into: a quarter more, or 256 tokens (an answer's 4 too)
    assert held <= prefix.nbytes <= 2 * held + per_token * 512
    assert entry.nbytes == prefix.nbytes + inputs_nbytes(entry.inputs)


def test_the_lru_keeps_within_its_budget(model: Model, clips: list[Path]) -> None:
    entries = [_warm(model, c, f"k{i}")[0] for i, c in enumerate(clips)]
    size = max(e.nbytes for e in entries)
    cache = WarmCache(budget=2 * size)
    for e in entries[:2]:
        assert cache.settle(e)
    assert cache.get(entries[0].key) is entries[0]  # now the most recent
    assert cache.settle(entries[2])  # over budget: the least recent (entries[1]) goes
    assert cache.get(entries[1].key) is None
    assert cache.get(entries[0].key) is entries[0] and cache.get(entries[2].key) is entries[2]
    assert cache.stats.bytes <= cache.budget and cache.stats.evicted == 1
    tiny = WarmCache(budget=size // 2)
    assert not tiny.settle(entries[0]) and tiny.stats.entries == 0  # too big to keep at all
