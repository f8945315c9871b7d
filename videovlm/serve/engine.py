"""The server's one model, the queue in front of it, and the workers that decode beside it.

Every request that needs the model takes a place in the queue first (:meth:`Engine.admit`): at
most ``--max-queue`` wait behind the one generating, and the next is refused with 503 at once,
so a burst never piles up unbounded work or memory. A request's CPU stage (probe, plan, decode,
prepare: :func:`videovlm.video.load_video`) runs in a pool of decode threads while the model
serves another request, then its model stage runs on the model's own thread, one at a time.
On a CPU one generation at a time is all the cores can do; on a GPU it keeps the memory for
one KV cache at a time, and a batch's questions still share one pass (``Model.answer``).

Two requests about the same cold video share one decode, and the second finds the first's
encoded prefix (:mod:`videovlm.serve.warm`). Tokens reach the client as they are generated
through :class:`TokenSink`, a transformers streamer, which also counts the exact prompt and
completion tokens of every model call. A client that goes away, streamed or not, stops its
generation at the next token; ``Model.answer`` leaves the warm prefix as it found it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from videovlm.api import run_model
from videovlm.decode import Frame
from videovlm.model import Model
from videovlm.pipelines import Recipe
from videovlm.result import Result
from videovlm.serve.errors import APIError
from videovlm.serve.media import Video
from videovlm.serve.warm import WarmCache, WarmVideo
from videovlm.tasks import check_user_text
from videovlm.video import load_video
from videovlm.writers import THUMB_SIZE

log = logging.getLogger("videovlm")
T = TypeVar("T")

KEPT_RESULTS = 32
PROBE_THREADS = 2  # threads (and so decoding children) that probe newly registered videos
"""Results kept for their report files (``GET /v1/results/ID.FORMAT``), the latest first."""


class Cancelled(Exception):
    """The client went away: raised inside generation to stop it at the next token."""


class TokenSink:
    """A transformers streamer (``put``/``end``) that turns each model call's tokens into text
    deltas as they come, and counts them.

    ``generate`` first puts the prompt's ids (their count is the call's exact prompt tokens),
    then each new token. Text is re-decoded from all of the call's tokens each time, and a delta
    is sent only up to the last non-space character and never while the text ends in a
    half-decoded character, so the deltas of a call add up exactly to the answer's final text
    (``Model._decode``: special tokens skipped, stripped). Only one-row calls stream text (a
    batch of questions is counted, its text comes with the result). Without ``emit`` (a request
    not streamed) it only counts, and is there to be cancelled.
    """

    def __init__(self, model: Model, emit: Callable[[dict[str, Any]], None] | None) -> None:
        self.tokenizer = model.tokenizer
        eos = model.network.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.emit = emit
        self.calls: list[dict[str, Any]] = []
        self.cancelled = threading.Event()
        self._prompt_next = True
        self._rows = 1
        self._ids: list[int] = []
        self._sent = ""

    def put(self, value: Any) -> None:
        if self.cancelled.is_set():
            raise Cancelled()
        if self._prompt_next:
            self._prompt_next = False
            self._rows = int(value.shape[0]) if value.dim() > 1 else 1
            self._ids, self._sent = [], ""
            self.calls.append({"prompt_tokens": int(value.shape[-1]), "completion_tokens": 0,
                               "finish_reason": "length"})
            return
        call = self.calls[-1]
        call["completion_tokens"] += 1
        if self._rows != 1:
            return
        token = int(value.reshape(-1)[0])
        self._ids.append(token)
        if token in self.eos:
            call["finish_reason"] = "stop"
        if self.emit is None:
            return
        text = self.tokenizer.decode(self._ids, skip_special_tokens=True).strip()
        if text.endswith("\ufffd") or not text.startswith(self._sent):
            return
        if len(text) > len(self._sent):
            delta, self._sent = text[len(self._sent):], text
            self.emit({"call": len(self.calls) - 1, "delta": delta})

    def end(self) -> None:
        self._prompt_next = True
        if self.emit is None:
            return
        if self._rows == 1:
            text = self.tokenizer.decode(self._ids, skip_special_tokens=True).strip()
            if len(text) > len(self._sent) and text.startswith(self._sent):
                self.emit({"call": len(self.calls) - 1, "delta": text[len(self._sent):]})
        self.emit({"call": len(self.calls) - 1, "end": True, **self.calls[-1]})


class Ticket:
    """A request's place in a queue, given back once: when its work ended, or when nothing
    holds it any more (a stream whose client left before it started)."""

    def __init__(self, places: Places) -> None:
        self.places = places
        self._done = False

    def release(self, *_: Any) -> None:
        with self.places.lock:
            if not self._done:
                self._done = True
                self.places.taken -= 1

    def __del__(self) -> None:
        self.release()


class Places:
    """A bounded queue in front of one stage: ``capacity`` requests at most, working or
    waiting; the next is refused with 503 at once (``busy`` says why)."""

    def __init__(self, capacity: int, busy: Callable[[int], str]) -> None:
        self.capacity = capacity
        self.busy = busy  # the refusal's message, given the places taken
        self.lock = threading.Lock()
        self.taken = 0

    def take(self) -> Ticket:
        with self.lock:
            if self.taken >= self.capacity:
                raise APIError(503, self.busy(self.taken))
            self.taken += 1
        return Ticket(self)


@dataclass(frozen=True)
class Sampling:
    """What a request asks of the CPU stage, beyond the recipe: the warm key's settings."""

    n: int | None = None
    fit: str | None = None
    seek: str | None = None


def _light(frames: Sequence[Frame]) -> list[Frame]:
    """Decoded frames shrunk to the reports' thumbnail size: what a result keeps them for (the
    model uses the prepared images), at a sixteenth of a 720p frame's memory."""
    out = []
    for f in frames:
        img = Image.fromarray(f.image)
        img.thumbnail((THUMB_SIZE, THUMB_SIZE))
        out.append(Frame(f.index, f.time_s, np.asarray(img)))
    return out


class Engine:
    """One loaded model served to many requests (see the module docstring)."""

    def __init__(self, model: Model, *, max_queue: int, cache_bytes: int, workers: int) -> None:
        self.model = model
        self.max_queue = max_queue
        self.warm = WarmCache(cache_bytes)
        self.decoders = ThreadPoolExecutor(max(1, workers), thread_name_prefix="videovlm-decode")
        # probes of new videos: not behind the decodes, and each thread keeps its decoding child
        # process, so a few threads (not the web server's pool of dozens) hold a few children
        self.probes = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="videovlm-probe")
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="videovlm-model")
        self._lock = threading.Lock()
        self._model = Places(max_queue + 1, lambda n: (
            f"the server is busy ({n - 1} requests wait for the model, --max-queue "
            f"{max_queue}): retry in a moment"))
        self._thumbs = Places(max(1, workers) + max_queue, lambda n: (
            f"the server is busy ({n} frame requests decode or wait for a decode thread, "
            f"--workers {max(1, workers)} + --max-queue {max_queue}): retry in a moment"))
        self._loading: dict[tuple[Any, ...], asyncio.Future[WarmVideo]] = {}
        self.draining = False
        self.results: OrderedDict[str, Result] = OrderedDict()
        self.served = 0

    # -- the queue -----------------------------------------------------------------------------

    def admit(self) -> Ticket:
        """A place in the queue, or 503 when ``max_queue`` requests already wait behind the one
        generating (or the server is stopping)."""
        self._refuse_when_draining()
        return self._model.take()

    def admit_frames(self) -> Ticket:
        """A place for decoding thumbnails (``GET /v1/videos/ID/frames``), which needs no model
        but the decode threads: one per thread and ``max_queue`` waiting, 503 beyond."""
        self._refuse_when_draining()
        return self._thumbs.take()

    def _refuse_when_draining(self) -> None:
        if self.draining:
            raise APIError(503, "the server is shutting down: retry on its next start")

    @property
    def pending(self) -> int:
        return self._model.taken

    @property
    def frames_pending(self) -> int:
        return self._thumbs.taken

    def drain(self) -> None:
        """Stop taking work (SIGTERM): new and still-queued requests get 503; the one
        generating finishes."""
        self.draining = True

    async def on_model(self, job: Callable[[], T], ticket: Ticket, seed: int | None = None,
                       cancelled: threading.Event | None = None) -> T:
        """Run ``job`` on the model's thread, after the requests queued before it; the ticket
        is given back when the job ends, even if the client stopped waiting. A job whose
        client left (``cancelled``) before its turn does not run."""
        def run() -> T:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            if self.draining:
                raise APIError(503, "the server is shutting down: retry on its next start")
            if seed is not None:
                import torch

                torch.manual_seed(seed)
            return job()

        future = asyncio.get_running_loop().run_in_executor(self._model_thread, run)
        future.add_done_callback(ticket.release)
        result = await asyncio.shield(future)
        self.served += 1
        return result

    # -- the CPU stage -------------------------------------------------------------------------

    def key(self, video: Video, recipe: Recipe) -> tuple[Any, ...]:
        """What makes a warm video: its identity and every setting that changes its frames or
        prefix (recipes that share a mode and sampling share frames; their prefixes are told
        apart by head text)."""
        s = recipe.sampling
        scenes = json.dumps(dict(recipe.scenes), sort_keys=True) if recipe.mode == "scenes" else ""
        d = recipe.dialogue
        return (video.identity, recipe.mode, scenes, s["n"], s["fit"], s["seek"],
                self.model.image_size, d.get("subtitles"), d.get("subtitle_lang"),
                d.get("transcribe"), d.get("asr_model"), d.get("asr_language"))

    async def warm_video(self, video: Video, recipe: Recipe) -> WarmVideo:
        """The video's prepared frames for ``recipe``: warm, or decoded now in the pool (one
        decode for concurrent requests that need the same)."""
        key = self.key(video, recipe)
        entry = self.warm.get(key)
        if entry is not None:
            return entry
        future = self._loading.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self.decoders, self._load, video, recipe, key)
            self._loading[key] = future
            future.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(future)

    def _load(self, video: Video, recipe: Recipe, key: tuple[Any, ...]) -> WarmVideo:
        inputs = load_video(video.path, recipe, image_size=self.model.image_size)
        return WarmVideo(key, dataclasses.replace(inputs, frames=_light(inputs.frames)))

    # -- the model stage -----------------------------------------------------------------------

    def run_video(self, entry: WarmVideo, recipe: Recipe, sink: TokenSink | None, *,
                  questions: Sequence[str] | None = None,
                  choices: Sequence[str] | None = None) -> Result:
        """The recipe's task over a warm video (on the model's thread), its prefixes kept.

        A warm video's CPU timings belong to the first request that used it; later results
        show only their own stages (no ``vision`` when the prefix was warm)."""
        inputs = entry.inputs
        if entry.used:
            inputs = dataclasses.replace(inputs, timing_s={})
        entry.used = True
        try:
            return run_model(self.model, inputs, recipe, questions=questions, choices=choices,
                             prefixes=entry, streamer=sink)
        finally:
            self.warm.settle(entry)

    def run_images(self, content: list[dict[str, Any]], images: Sequence[np.ndarray],
                   generation: dict[str, Any], sink: TokenSink) -> str:
        """A chat turn of text and images (each one image of the model's size, no tiling),
        through the checkpoint's chat template, on the model's thread."""
        check_user_text(self.model, [p["text"] for p in content if p["type"] == "text"])
        inputs = self.model.encode(self.model.render(content), images)
        return self.model.generate(inputs, streamer=sink, **generation)

    def keep(self, rid: str, result: Result) -> None:
        """Keep ``result`` for its report files; the oldest beyond :data:`KEPT_RESULTS` go."""
        with self._lock:
            self.results[rid] = result
            while len(self.results) > KEPT_RESULTS:
                self.results.popitem(last=False)

    def close(self) -> None:
        self.probes.shutdown(wait=True, cancel_futures=True)
        self.decoders.shutdown(wait=True, cancel_futures=True)
        self._model_thread.shutdown(wait=True, cancel_futures=True)
        self.warm.clear()


async def stream_events(job: Callable[[Callable[[dict[str, Any]], None]], Any]
                        ) -> AsyncIterator[dict[str, Any]]:
    """Run ``job(emit)`` (a coroutine factory) and yield what it emits from any thread as it
    comes, then ``{"done": result}``; its exception is raised after the events before it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def emit(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    task = asyncio.ensure_future(job(emit))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                continue
            getter.cancel()
            await asyncio.sleep(0)  # events the thread scheduled just before it finished
            while not queue.empty():
                yield queue.get_nowait()
            yield {"done": task.result()}
            return
    finally:
        if not task.done():
            task.cancel()
