"""Warm videos: a video's prepared frames and encoded prefixes, kept for the next question.

The expensive part of a question about a video is encoding it: the vision tower over every frame
and the language model over the thousands of image tokens that follow (the prompt's *head*, up
to its last frame). :meth:`videovlm.model.Model.answer` already continues several questions
from one such prefix; here the prefix outlives the request, so a follow-up question costs only
its own tokens.

A :class:`WarmVideo` is keyed by the video's identity (:mod:`videovlm.serve.media`) and every
setting that changes its frames or its prefix: the recipe (its intro text and task mode), the
frame budget, ``fit``, ``seek`` and the model's image size; the model itself is the server's
one. It holds the CPU stage's :class:`~videovlm.video.VideoInputs` (so a follow-up does not
decode again) and the prefixes made from them, by head text (the head names its frames, so
equal heads are equal prefixes: :class:`~videovlm.run.PrefixStore`). The cache is an LRU bounded
by bytes (``--cache-mb``): the prefixes' KV caches, spare room included
(:attr:`~videovlm.model.Prefix.nbytes`), and the frames' pixels. A video larger than the whole
budget is used for its request and not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videovlm.model import Prefix
from videovlm.video import VideoInputs


def inputs_nbytes(inputs: VideoInputs) -> int:
    """The pixels a :class:`VideoInputs` holds: decoded frames and prepared images."""
    return (sum(f.image.nbytes for f in inputs.frames)
            + sum(np.asarray(i).nbytes for i in inputs.images))


@dataclass
class WarmVideo:
    """One video's prepared frames under one set of settings, and its encoded prefixes."""

    key: tuple[Any, ...]
    inputs: VideoInputs
    prefixes: dict[str, Prefix] = field(default_factory=dict)
    uses: int = 0  # requests that found it warm
    used: bool = False  # a run has used it (and reported its CPU stage's timings)

    # the PrefixStore protocol (videovlm.run): ModelRun finds and keeps prefixes here
    def get(self, head: str) -> Prefix | None:
        return self.prefixes.get(head)

    def put(self, head: str, prefix: Prefix) -> None:
        self.prefixes[head] = prefix

    @property
    def nbytes(self) -> int:
        return inputs_nbytes(self.inputs) + sum(p.nbytes for p in self.prefixes.values())


@dataclass
class WarmStats:
    hits: int = 0  # requests whose video was warm
    misses: int = 0
    evicted: int = 0
    entries: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


class WarmCache:
    """Warm videos by key, least recently used dropped first to stay within ``budget`` bytes.

    Safe across threads: the event loop looks entries up, the model's thread adds prefixes and
    then calls :meth:`settle` to recount and trim. An entry dropped while a request still uses
    it stays alive for that request (it holds a reference) and is freed after.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: OrderedDict[tuple[Any, ...], WarmVideo] = OrderedDict()
        self._sizes: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()
        self.stats = WarmStats()

    def get(self, key: tuple[Any, ...]) -> WarmVideo | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            entry.uses += 1
            return entry

    def settle(self, entry: WarmVideo) -> bool:
        """Keep ``entry`` (newly made, or grown by a request) as the most recent, counted at
        its size now, and drop the least recent until the budget holds; whether it is kept."""
        size = entry.nbytes
        with self._lock:
            if size > self.budget:
                if self._entries.pop(entry.key, None) is not None:
                    self._sizes.pop(entry.key, None)
                    self.stats.evicted += 1
                self._count()
                return False
            self._entries[entry.key] = entry
            self._entries.move_to_end(entry.key)
            self._sizes[entry.key] = size
            while sum(self._sizes.values()) > self.budget:
                old, _ = self._entries.popitem(last=False)
                self._sizes.pop(old)
                self.stats.evicted += 1
            self._count()
            return True

    def _count(self) -> None:
        self.stats.entries = len(self._entries)
        self.stats.bytes = sum(self._sizes.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self._count()
