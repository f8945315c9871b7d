"""The local engine: runs a batch's inputs through two stages, overlapping the decoding of the
next videos with the generation of the current one, and commits each result (files, then its
record) as it comes.

The engine is generic over two stages so it can be tested, benchmarked and reused by the Ray engine
without a model: ``cpu_stage(job) -> payload`` (probe, scenes, decode, prepare: runs in background
workers) and ``model_stage(job, payload) -> Result`` (runs in the calling thread, where the one
loaded model lives). What both engines share lives here too: the commit step
(:class:`Recorder`), the report, the stop on Ctrl-C or SIGTERM and the progress bar.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from videovlm import writers
from videovlm.batch.inputs import Job, ensure_inside, output_location
from videovlm.batch.log import ResultsLog, prepare_run
from videovlm.errors import DecoderCrash, DiskFullError
from videovlm.interrupts import STOP_SIGNALS, Interrupts, exit_code, signum_of
from videovlm.isolation import crash_for_test
from videovlm.result import Result
from videovlm.windows import progress_path


def error_result(job: Job, exc: BaseException, *, seconds: float | None = None) -> Result:
    """The record of an input that failed: the error's type and its message on one line."""
    message = " ".join(str(exc).split()) or repr(exc)
    result = Result(video={"path": str(job.path)},
                    error={"type": type(exc).__name__, "message": message})
    if seconds is not None:
        result.timing_s = {"total": round(seconds, 6)}
    return result


ModelBatch = Callable[[Sequence[tuple[Job, Any]]], list[Result | BaseException]]
"""The model stage of several inputs at once (``batch_size`` > 1): per input its result or the
exception it raised (:func:`videovlm.batch.together.batched`)."""

WriteFiles = Callable[[Result, Path, Sequence[str], str], list[Path]]
"""What writes one input's files: ``(result, folder, formats, stem) -> paths``, as
:func:`videovlm.writers.write` does."""


@dataclass
class Recorder:
    """Turns one finished input into its files and its record: the commit step both engines
    share. Files first (atomic, by ``write``), the record last, so a record always means that
    its files are complete."""

    out_dir: Path
    log: ResultsLog
    formats: Sequence[str] = ()
    write: WriteFiles | None = None

    def commit(self, job: Job, result: Result) -> dict[str, Any]:
        outputs: list[str] = []
        if result.error is None and self.formats:
            try:
                folder, stem = output_location(self.out_dir, job.input)
                ensure_inside(self.out_dir, folder)
                write = self.write or writers.write
                paths = write(result, folder, self.formats, stem)
                outputs = [Path(p).relative_to(self.out_dir).as_posix() for p in paths]
            except DiskFullError:  # no input's fault: the batch stops, the next run redoes it
                raise
            except Exception as exc:  # a failed write is this input's failure, not the batch's
                result = error_result(job, exc)
        record = {"input": job.input, **result.to_dict(), "outputs": outputs}
        self.log.append(record)
        # a long video's finished windows are no longer needed once its record is there
        folder, stem = output_location(self.out_dir, job.input)
        progress_path(folder, stem).unlink(missing_ok=True)
        return record


@dataclass
class BatchReport:
    """How a batch went; ``cpu_s``/``model_s`` are the summed stage times of this run (for the
    overlap benchmark: wall time against the larger of the two), ``wait_s`` the time the model
    stage waited on the CPU stage."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0  # skipped inputs whose earlier record is an error
    interrupted: bool = False
    signum: int = signal.SIGINT  # what interrupted it, for the exit code
    wall_s: float = 0.0
    cpu_s: float = 0.0
    model_s: float = 0.0
    wait_s: float = 0.0  # the model stage waiting for background decoding (workers too slow)
    results: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, "Type: message")

    @property
    def exit_code(self) -> int:
        """0 all done; 1 some input's record is an error (this run's or a resumed one's);
        130 interrupted by Ctrl-C, 143 by SIGTERM (:func:`videovlm.interrupts.exit_code`)."""
        if self.interrupted:
            return exit_code(self.signum)
        return 1 if self.failed or self.failed_before else 0

    def count(self, record: dict[str, Any], say: Callable[[str], None]) -> None:
        """Tally one committed record; a failure is also said (one line) and kept for the end."""
        if record["error"] is None:
            self.done += 1
            return
        self.failed += 1
        failure = f"{record['error']['type']}: {record['error']['message']}"
        self.failures.append((record["input"], failure))
        say(f"failed: {record['input']}: {failure}")

    def summary(self) -> str:
        left = self.total - self.done - self.failed - self.skipped
        before = (f" ({self.failed_before} failed before: --retry-failed redoes them)"
                  if self.failed_before else "")
        text = (f"{self.done} done, {self.failed} failed, {self.skipped} skipped{before}"
                f"{f', {left} left' if left else ''} in {self.wall_s:.1f} s")
        return text + (f" -> {self.results}" if self.results else "")


def _ignore_sigint() -> None:
    """Decode processes leave Ctrl-C and SIGTERM to the main process, which decides what to
    finish: they ignore both. A broken pool ends its workers with SIGTERM, which they ignore, so
    :meth:`_Workers._recover` kills them (SIGKILL) before a fresh pool takes their jobs."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# In a decode process: the file that names the job it is working on, and where faulthandler
# writes "Fatal Python error: ..." if a signal kills it (how the parent knows which job did it)
_MARK: Any = None


def _start_worker(folder: str) -> None:
    global _MARK
    # the mark first: a worker that ignores signals is one the pool's recovery can find
    _MARK = open(os.path.join(folder, str(os.getpid())), "w")  # noqa: SIM115 (the process's)
    _ignore_sigint()
    faulthandler.enable(_MARK)


def _in_worker(stage: Callable[[Job], Any], job: Job) -> tuple[Any, float]:
    """``stage(job)`` in a decode process, its job named in the process's mark meanwhile."""
    _MARK.seek(0)
    _MARK.truncate()
    _MARK.write(job.input + "\n")
    _MARK.flush()
    try:
        crash_for_test("worker", job.path)
        return _timed(stage, job)
    finally:
        _MARK.seek(0)
        _MARK.truncate()
        _MARK.flush()


def _broken(future: Future[Any]) -> bool:
    """Whether a finished ``future`` failed because its pool broke, not by its own error."""
    return future.cancelled() or isinstance(future.exception(), BrokenProcessPool)


class _Workers:
    """The CPU stage's background workers: threads, or spawned processes that may die.

    A decode process killed by a signal (a decoder's native crash, the OOM killer) breaks its
    pool, and every job in flight fails with it. Here the job whose process died is given its
    error (:class:`~videovlm.errors.DecoderCrash`, named from the process's faulthandler mark),
    the others are submitted again to a fresh pool: nothing lost, nothing finished recomputed.
    A death no mark explains (SIGKILL) counts against every job then running; a job that was
    running at two such deaths is given the error.
    """

    def __init__(self, workers: int, processes: bool, stage: Callable[[Job], Any]) -> None:
        self.workers, self.processes, self.stage = workers, processes, stage
        self.marks = tempfile.mkdtemp(prefix="videovlm-workers-") if processes else None
        self.futures: dict[str, Future[tuple[Any, float]]] = {}
        self.jobs: dict[str, Job] = {}
        self.strikes: dict[str, int] = {}
        self.pool = self._pool()

    def _pool(self) -> Executor:
        if self.processes:
            # spawn, not fork: the parent may hold torch's threads and a loaded model
            return ProcessPoolExecutor(max_workers=self.workers, initializer=_start_worker,
                                       initargs=(self.marks,),
                                       mp_context=multiprocessing.get_context("spawn"))
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="videovlm-decode")

    def submit(self, job: Job) -> None:
        self.jobs[job.input] = job
        try:
            self.futures[job.input] = self._submit(job)
        except BrokenProcessPool:
            self._recover()
            self.futures[job.input] = self._submit(job)

    def _submit(self, job: Job) -> Future[tuple[Any, float]]:
        if self.processes:
            return self.pool.submit(_in_worker, self.stage, job)
        return self.pool.submit(_timed, self.stage, job)

    def result(self, job: Job) -> tuple[Any, float]:
        """The job's (payload, seconds), raising its error; its process's death is its error."""
        while True:
            future = self.futures[job.input]
            try:
                out = future.result()
            except BrokenProcessPool:
                if self.futures[job.input] is future:
                    self._recover()
                continue
            except BaseException:
                self._forget(job)
                raise
            self._forget(job)
            return out

    def _forget(self, job: Job) -> None:
        del self.futures[job.input], self.jobs[job.input]

    def _recover(self) -> None:
        """A fresh pool; each job in flight resubmitted, or failed if its process died."""
        # its workers ignore SIGTERM (the pool's way to end them): the old jobs must not run on.
        # They are this process's children with a mark (named by pid) in this pool's folder.
        assert self.marks is not None
        ours = {int(m.name) for m in Path(self.marks).iterdir() if m.name.isdigit()}
        for proc in multiprocessing.active_children():
            if proc.pid in ours:
                with contextlib.suppress(OSError):
                    proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)
        died = self._died()
        self.pool = self._pool()
        unexplained = not died
        for key, future in list(self.futures.items()):
            if future.done() and not _broken(future):
                continue  # finished before the pool broke: kept as it is
            reason = died.get(key)
            if reason is None and unexplained and key in self._running:
                self.strikes[key] = self.strikes.get(key, 0) + 1
                if self.strikes[key] >= 2:
                    reason = "its decode process was killed (twice) while it worked on it"
            if reason is None:
                self.futures[key] = self._submit(self.jobs[key])
                continue
            failed: Future[tuple[Any, float]] = Future()
            failed.set_exception(DecoderCrash(f"decoding {key} killed its process: {reason}"))
            self.futures[key] = failed

    def _died(self) -> dict[str, str]:
        """Per job whose process died of a signal, what faulthandler wrote; the jobs then
        running in ``self._running``."""
        died: dict[str, str] = {}
        self._running: set[str] = set()
        assert self.marks is not None
        for mark in Path(self.marks).iterdir():
            lines = mark.read_text(errors="replace").splitlines()
            mark.unlink()
            if not lines:
                continue
            self._running.add(lines[0])
            fatal = next((x for x in lines[1:] if x.startswith("Fatal Python error")), None)
            if fatal:
                died[lines[0]] = fatal.removeprefix("Fatal Python error: ")
        return died

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.marks is not None:
            shutil.rmtree(self.marks, ignore_errors=True)


def _timed(stage: Callable[[Job], Any], job: Job) -> tuple[Any, float]:
    start = time.perf_counter()
    return stage(job), time.perf_counter() - start


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """The batch's bar on stderr, ``initial`` of ``total`` inputs already done (resumed); shown
    only on a terminal when ``enabled``."""
    return tqdm(total=total, initial=initial, desc="batch", unit="video", file=sys.stderr,
                dynamic_ncols=True, disable=None if enabled else True, smoothing=0.1)


def run_local(
    jobs: Sequence[Job],
    cpu_stage: Callable[[Job], Any],
    model_stage: Callable[[Job, Any], Result],
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = (),
    write: WriteFiles | None = None,
    workers: int = 2,
    prefetch: int | None = None,
    processes: bool = False,
    resume: bool | str = True,
    settings: Mapping[str, Any] | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    batch_size: int = 1,
    model_batch: ModelBatch | None = None,
) -> BatchReport:
    """Run every input not yet recorded: ``cpu_stage`` in ``workers`` background threads,
    ``model_stage`` here, one record per input.

    At most ``workers + prefetch`` inputs are decoded ahead of the ones being generated
    (default prefetch: ``workers``, or ``batch_size`` when larger, so the next batch is being
    decoded while this one generates), so memory stays flat however many videos there are.
    ``workers=0`` runs both stages one after the other in this thread (the sequential
    baseline). Threads by default: the decoders and resizers release the GIL and payloads need
    no copying; ``processes=True`` runs ``cpu_stage`` (then picklable) in spawned processes
    instead, for CPU stages whose Python parts (scene detection) would contend with generation
    for the GIL. With ``batch_size`` > 1 and ``model_batch``, the next ``batch_size`` inputs
    (fewer at the end) wait until their CPU stage is done, then go to ``model_batch``
    together; each still gets its own record, committed in order. Inputs are taken in order;
    an exception in either stage becomes that input's error record and the batch goes on.
    ``report.wait_s`` is the time the model stage waited for background decoding: near zero
    when the workers keep up.
    """
    prep = prepare_run(jobs, out_dir, resume=resume, settings=settings)
    report = BatchReport(total=prep.total, skipped=prep.skipped,
                         failed_before=prep.failed_before, results=prep.log.path)
    bar = progress_bar(prep.total, prep.skipped, progress)
    say = say or (lambda text: bar.write(f"videovlm: {text}", file=sys.stderr))
    recorder = Recorder(prep.out_dir, prep.log, formats, write)
    start = time.perf_counter()
    size = max(1, batch_size) if model_batch is not None else 1
    window = max(0, workers) + (max(workers, size) if prefetch is None else max(0, prefetch))
    pool = _Workers(workers, processes, cpu_stage) if workers > 0 else None
    todo = iter(prep.todo)
    ahead: deque[Job] = deque()

    def fill() -> None:
        while pool is not None and len(ahead) < max(window, 1):
            job = next(todo, None)
            if job is None:
                return
            pool.submit(job)
            ahead.append(job)

    def take() -> list[Job]:
        group: list[Job] = []
        while len(group) < size:
            if pool is not None:
                if not ahead:
                    break
                group.append(ahead.popleft())
                fill()
            else:
                job = next(todo, None)
                if job is None:
                    break
                group.append(job)
        return group

    def cpu_result(job: Job) -> Any:
        if pool is None:
            payload, cpu_s = _timed(cpu_stage, job)
        else:
            waited = time.perf_counter()
            payload, cpu_s = pool.result(job)
            report.wait_s += time.perf_counter() - waited
        report.cpu_s += cpu_s
        return payload

    interrupts = Interrupts(say)
    try:
        with interrupts:
            fill()
            while not interrupts.stop:
                group = take()
                if not group:
                    break
                bar.set_postfix_str(f"failed={report.failed} {group[0].input}", refresh=True)
                t0 = time.perf_counter()
                results: list[Result | BaseException | None] = [None] * len(group)
                ready: list[tuple[int, Job, Any]] = []
                for i, job in enumerate(group):
                    try:
                        ready.append((i, job, cpu_result(job)))
                    except Exception as exc:
                        results[i] = exc
                t1 = time.perf_counter()
                try:
                    if model_batch is None or size == 1:
                        for i, job, payload in ready:
                            try:
                                results[i] = model_stage(job, payload)
                            except Exception as exc:
                                results[i] = exc
                    else:
                        try:
                            outs = model_batch([(job, payload) for _, job, payload in ready])
                        except Exception as exc:
                            outs = [exc] * len(ready)
                        for (i, _, _), out in zip(ready, outs, strict=True):
                            results[i] = out
                finally:
                    report.model_s += time.perf_counter() - t1
                del ready
                for job, result in zip(group, results, strict=True):
                    if isinstance(result, DiskFullError):  # the batch's, not this input's
                        raise result
                    if not isinstance(result, Result):
                        result = error_result(job, result or RuntimeError("no result"),
                                              seconds=time.perf_counter() - t0)
                    with interrupts.commit():
                        record = recorder.commit(job, result)
                    report.count(record, say)
                    bar.update(1)
        report.interrupted = interrupts.stop and report.done + report.failed < len(prep.todo)
        report.signum = interrupts.signum
    except KeyboardInterrupt as exc:
        report.interrupted = True
        report.signum = interrupts.signum if interrupts.stop else signum_of(exc)
    finally:
        if pool is not None:
            pool.close()
        bar.close()
        prep.close()
        report.wall_s = time.perf_counter() - start
    return report
