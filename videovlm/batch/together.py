"""Several videos' model stages run together, so that their prompts decode in batched calls
(``batch --batch-size N``, ``eval --batch-size N``).

On a GPU one small model decoding one sequence leaves the chip idle: a decode step costs about
the same for 1 row as for 32. But a task's runner (:mod:`videovlm.tasks`) is plain sequential
code (each scene in turn, then the summary), and rewriting every runner as a state machine would
spread one rule over all of them. Instead each video's model stage runs as a coroutine on its
own thread, a *lane*, with a strict hand-off: exactly one thread runs at any moment (the
scheduler or one lane), so the model, its tokenizer and the frame cache are never used by two
threads at once, and which prompts share a batch depends on the videos alone, never on timing.

A lane runs until it needs an answer (encoding its frames and running its prompt's head through
the language model on the way), posts its :class:`~videovlm.model.Ask` and waits. When every
lane waits or is done, the scheduler answers the posted asks, those with equal generation
settings in one :meth:`~videovlm.model.Model.answer_together` call, and lets each lane run on to
its next ask. An exception in a lane is that video's error; a batched call that fails is retried
one ask at a time, so a bad prompt fails its own video only.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from videovlm.batch.engine import ModelBatch
from videovlm.batch.inputs import Job
from videovlm.model import QUESTIONS_PER_CALL, Ask, Model
from videovlm.result import Result
from videovlm.run import Answers, Asker

log = logging.getLogger("videovlm")

Stage = Callable[[Job, Any, Asker], Result]
"""One video's model stage with the asker that answers its prompts (``VideoStages.model``)."""


def batch_size_for(model: Model, requested: int) -> int:
    """The batch size a run can use: ``requested``, or 1 (said once, as a warning) for a model
    that cannot decode different prompts together (int8: :attr:`Model.batches_rows`)."""
    if requested > 1 and not model.batches_rows:
        log.warning("--batch-size %d ignored: the model is int8-quantized, whose activations "
                    "are scaled over every row of a call, so batching would change the answers; "
                    "videos run one at a time (--quantize none batches them)", requested)
        return 1
    return max(1, requested)


def batched(model: Model, stage: Stage, batch_size: int) -> ModelBatch:
    """``stage`` for several videos at once: their prompts decode together, up to
    ``batch_size`` rows per call (at least :data:`~videovlm.model.QUESTIONS_PER_CALL`, the
    questions one video decodes together alone)."""
    rows = max(batch_size, QUESTIONS_PER_CALL)

    def run(items: Sequence[tuple[Job, Any]]) -> list[Result | BaseException]:
        return run_together(model, [functools.partial(stage, job, payload)
                                    for job, payload in items], rows=rows)

    return run


class _Abandoned(BaseException):
    """Unwinds a lane whose batch was given up (a second Ctrl-C). Not an ``Exception``, so no
    handler in a runner mistakes it for a failure of its own."""


class _Lane:
    """One video's model stage on its own thread, run step by step by the scheduler."""

    def __init__(self, work: Callable[[Asker], Result], name: str) -> None:
        self._work = work
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self.posted: tuple[Ask, Mapping[str, Any]] | None = None
        self.reply: tuple[Answers, float] | BaseException | None = None
        self.outcome: Result | BaseException | None = None
        self.done = False
        threading.Thread(target=self._main, name=name, daemon=True).start()

    def step(self) -> None:
        """Let the lane run until it posts its next ask or ends; the caller waits meanwhile."""
        self._go.release()
        self._back.acquire()

    def abandon(self) -> None:
        """Make the lane's next (or current) wait raise :class:`_Abandoned`."""
        if not self.done:
            self.reply = _Abandoned()
            self._go.release()

    def _main(self) -> None:
        self._go.acquire()
        try:
            if isinstance(self.reply, _Abandoned):  # given up before its first step: the
                raise self.reply  # video's work must not start, unseen, on the model
            self.outcome = self._work(self._ask)
        except _Abandoned:
            pass
        except BaseException as exc:  # this video's error, recorded by the engine
            self.outcome = exc
        self.posted = None
        self.done = True
        self._back.release()

    def _ask(self, ask: Ask, generation: Mapping[str, Any]) -> tuple[Answers, float]:
        self.posted = (ask, dict(generation))
        self._back.release()
        self._go.acquire()
        reply, self.reply, self.posted = self.reply, None, None
        if isinstance(reply, BaseException):
            raise reply
        assert reply is not None, "a lane is stepped on only once its ask is answered"
        return reply


def run_together(model: Model, works: Sequence[Callable[[Asker], Result]], *,
                 rows: int) -> list[Result | BaseException]:
    """Run each of ``works`` (a video's model stage, given the asker to use) as a lane until
    all are done; per work its result or its exception, in order."""
    lanes = [_Lane(work, f"videovlm-lane-{i}") for i, work in enumerate(works)]
    try:
        for lane in lanes:
            lane.step()
        while waiting := [lane for lane in lanes if not lane.done]:
            groups: dict[str, list[_Lane]] = {}
            for lane in waiting:
                assert lane.posted is not None
                groups.setdefault(repr(sorted(lane.posted[1].items())), []).append(lane)
            for group in groups.values():
                _answer(model, group, rows)
            for lane in waiting:
                lane.step()
    finally:
        for lane in lanes:  # nothing left to do unless interrupted
            lane.abandon()
    return [RuntimeError("the model stage returned no result") if lane.outcome is None
            else lane.outcome for lane in lanes]


def _answer(model: Model, group: Sequence[_Lane], rows: int) -> None:
    """Answer the asks ``group``'s lanes posted (equal generation settings) in batched calls;
    a call that fails is retried lane by lane, so only the lane at fault gets the error."""
    asks = [lane.posted[0] for lane in group if lane.posted is not None]
    generation = group[0].posted[1] if group[0].posted is not None else {}
    start = time.perf_counter()
    try:
        answers = model.answer_together(asks, batch_size=rows, **generation)
    except Exception as exc:
        if len(group) == 1:
            group[0].reply = exc
            return
        for lane in group:
            _answer(model, [lane], rows)
        return
    seconds = time.perf_counter() - start
    for lane, answer in zip(group, answers, strict=True):
        lane.reply = (answer, seconds)
