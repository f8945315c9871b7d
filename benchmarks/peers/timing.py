"""What every engines.py row uses to time itself, importable in the peers' own venvs too (it
needs nothing but the standard library)."""

from __future__ import annotations

import time
from typing import Any


class FirstToken:
    """A logits processor that notes when generation's first step is done: time to first
    token, from one generation (no second run to tell prefill from decoding)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.at is None:
            self.at = time.perf_counter()
        return scores
