"""Generation on the tiny checkpoints: real forward passes, and a KV cache that changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from videovlm.decode import Frame
from videovlm.model import DEFAULT_MODEL, Ask, Model, default_model_id
from videovlm.pack import build_prompt
from videovlm.prepare import prepare

QUESTIONS = ["What is the colour of the car?", "How many people are in the scene?",
             "Where does the video take place?"]


@pytest.fixture(scope="module", params=["tiny_idefics3", "tiny_smolvlm"])
def model(request) -> Model:
    return Model.load(str(request.getfixturevalue(request.param)), quantize="none")  # exact


def clip(n: int = 4) -> list[Frame]:
    rng = np.random.default_rng(3)
    return [Frame(i, i * 2.0, rng.integers(0, 255, (72, 128, 3), dtype=np.uint8))
            for i in range(n)]


def prompt_for(model: Model, frames: list[Frame], task: str):
    return build_prompt(model, frames, prepare(frames, model.image_size), task,
                        intro="Frames of a video.\n", max_new_tokens=12)


def fresh_answer(model: Model, frames: list[Frame], task: str, **generation) -> str:
    """The answer of a full encode of the prompt with ``task`` (no cached prefix)."""
    prompt = prompt_for(model, frames, task)
    return model.generate(model.encode(prompt.text, prompt.images), **generation)


def encoded(model: Model, frames: list[Frame]):
    """The frames' prefix run through the network once, and the tails of QUESTIONS after it."""
    prompt = prompt_for(model, frames, "unused")
    return (model.encode_prefix(prompt.head, model.image_features(prompt.images)),
            [prompt.tail_for(q) for q in QUESTIONS])


def test_generate_returns_text(model):
    text = fresh_answer(model, clip(), "Describe the video.", max_new_tokens=12)
    assert isinstance(text, str)
    again = fresh_answer(model, clip(), "Describe the video.", max_new_tokens=12)
    assert again == text  # greedy by default: reproducible


def test_generate_text_returns_text(model):
    assert isinstance(model.generate_text("Summarise: a dog runs.", max_new_tokens=6), str)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_answer_equals_full_reencode(model, batch_size):
    """The cached prefix must be invisible: same greedy answers as encoding each prompt anew.

    Questions of different lengths: batches pad between the video and the question.
    """
    frames = clip()
    prefix, tails = encoded(model, frames)
    cached = model.answer(prefix, tails, max_new_tokens=12, batch_size=batch_size)
    fresh = [fresh_answer(model, frames, q, max_new_tokens=12) for q in QUESTIONS]
    assert cached == fresh
    assert any(cached)  # a random model still says something: the comparison is not vacuous
    assert model.answer(prefix, []) == []


@pytest.mark.parametrize("batch_size", [1, 2])
def test_answer_with_beam_search_equals_full_reencode(model, batch_size):
    """Beams need the video's cache once per beam too (it used to fail on a cache of one row)."""
    frames = clip()
    prefix, tails = encoded(model, frames)
    gen = {"max_new_tokens": 6, "num_beams": 2}
    cached = model.choose(prefix, tails, ["A", "B"], batch_size=batch_size, **gen)
    fresh = [fresh_answer(model, frames, q, **gen) for q in QUESTIONS]
    assert [text for text, _ in cached] == fresh
    greedy = model.choose(prefix, tails, ["A", "B"], max_new_tokens=1)
    assert [letter for _, letter in cached] == [letter for _, letter in greedy]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_choose_gives_the_letter_of_a_restricted_decode_from_one_encoding(model, batch_size):
    """``choose``'s letter is what a one-token greedy decode restricted to the option letters
    writes after a full re-encode of each prompt, and its text is ``answer``'s."""
    frames = clip()
    prefix, tails = encoded(model, frames)
    letters = ["A", "B", "C"]
    chosen = model.choose(prefix, tails, letters, max_new_tokens=12, batch_size=batch_size)
    assert [text for text, _ in chosen] == model.answer(prefix, tails, max_new_tokens=12)
    allowed = [tok[0] for tok in (model.tokenizer(x, add_special_tokens=False)["input_ids"]
                                  for form in letters for x in (form, " " + form))
               if len(tok) == 1]
    assert allowed, "the tokenizer spells the letters as single tokens"
    restricted = [fresh_answer(model, frames, q, max_new_tokens=1,
                               prefix_allowed_tokens_fn=lambda _b, _ids: allowed).strip()
                  for q in QUESTIONS]
    assert [letter for _, letter in chosen] == restricted
    assert all(letter in letters for letter in restricted)
    # the letter is read from the logits, so sampling changes the text but never the letter
    sampled = model.choose(prefix, tails, letters, max_new_tokens=4, do_sample=True,
                           top_k=1, temperature=2.0, batch_size=batch_size)
    assert [letter for _, letter in sampled] == restricted
    assert model.choose(prefix, [], letters) == []


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_answer_together_gives_each_video_its_own_answers(model, batch_size):
    """Prompts of several videos (prefixes of different lengths, open and multiple-choice
    questions, a text-only summary) decoded together: merged caches right-aligned behind masked
    padding, each row at its own positions, so every answer is the one it gets alone."""
    asks, alone = [], []
    for seed, n in [(1, 2), (2, 4), (3, 3)]:
        rng = np.random.default_rng(seed)
        frames = [Frame(i, i * 2.0, rng.integers(0, 255, (72, 128, 3), dtype=np.uint8))
                  for i in range(n)]
        prefix, tails = encoded(model, frames)
        letters = ("A", "B", "C") if seed == 2 else None
        asks.append(Ask(prefix, tuple(tails[:seed]), letters))
        if letters:
            alone.append(model.choose(prefix, tails[:seed], list(letters), max_new_tokens=12))
        else:
            alone.append([(t, None) for t in model.answer(prefix, tails[:seed],
                                                          max_new_tokens=12)])
    asks.append(Ask(None, ("Summarise: a dog runs.",)))
    alone.append([(model.generate_text("Summarise: a dog runs.", max_new_tokens=12), None)])
    together = model.answer_together(asks, batch_size=batch_size, max_new_tokens=12)
    assert [[(r.text, r.choice) for r in answers] for answers in together] == alone
    assert len({text for answers in alone for text, _ in answers}) > 2  # not all one answer
    assert all(letter in "ABC" for letter in (x for _, x in alone[1]))
    # the letters' probabilities too are each prompt's own, batched or not
    for ask, answers in zip(asks, together, strict=True):
        for reply, single in zip(answers, model.answer_one(ask, max_new_tokens=12), strict=True):
            assert (reply.scores is None) == (ask.letters is None) == (single.scores is None)
            if reply.scores is not None:
                assert reply.scores == pytest.approx(single.scores, abs=1e-4)
                assert max(reply.scores, key=reply.scores.get) == reply.choice
                assert sum(reply.scores.values()) == pytest.approx(1.0)


def test_attention_is_sdpa(model):
    """PyTorch's fused attention, not the eager one (2x the time and memory on a CPU; on a GPU
    the flash kernels): transformers' default for these classes, pinned here."""
    config = model.network.config
    assert config._attn_implementation == "sdpa"
    assert config.text_config._attn_implementation == "sdpa"
    assert config.vision_config._attn_implementation == "sdpa"


def test_default_model_honours_the_environment(monkeypatch):
    monkeypatch.delenv("VIDEOVLM_MODEL", raising=False)
    assert default_model_id() == DEFAULT_MODEL == "HuggingFaceTB/SmolVLM-Instruct"
    monkeypatch.setenv("VIDEOVLM_MODEL", "/models/mine")
    assert default_model_id() == "/models/mine"
