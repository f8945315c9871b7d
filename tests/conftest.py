"""Shared pytest fixtures (file owned by H1; the model-stage block below is H3's)."""

from __future__ import annotations

import pytest

# --- Model-stage fixtures (H3): random-weight checkpoints of the real architectures -------------
# Built once per session with videovlm.testing.make_checkpoint (a few seconds, a few MB each) and
# loaded by Model.load(path) through the same code path as a downloaded model.


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory: pytest.TempPathFactory):
    """A tiny SmolVLM v1 checkpoint (Idefics3, 384 px, 81 tokens per image, 16k context)."""
    from videovlm.testing import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny_idefics3"), "idefics3", "tiny")


@pytest.fixture(scope="session")
def tiny_smolvlm(tmp_path_factory: pytest.TempPathFactory):
    """A tiny SmolVLM2 checkpoint (SmolVLM, 512 px, 64 tokens per image, 8k context)."""
    from videovlm.testing import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny_smolvlm"), "smolvlm", "tiny")
