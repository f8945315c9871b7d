"""Windows: a long video cut into consecutive spans, each described from its own frames.

One budget of 50 frames over a one-hour film is a frame every 72 s; the tools people use on long
footage cut it into windows and spend a budget inside each. A window's boundaries are
presentation times of frames on the probed timeline (as scene boundaries are, so the selection
rule inside a window and the segments agree to the frame), the windows cover ``[0, duration]``
exactly once, and a boundary moves to a scene cut when one lies near it, so a window starts
where a shot starts rather than a few seconds into it.

The driver (:func:`drive`) is generic: ``load(i)`` makes window ``i``'s inputs (decoding, one
window ahead in a background thread), ``work(i, inputs)`` turns them into a plain-JSON record,
and the caller combines the records. Records are what the :class:`Progress` file keeps, so a run
killed at any moment goes on after its last finished window and combines exactly the records an
uninterrupted run would. ``api.run_windows`` is the driver with a task's runner as the work
(:func:`window_record`, :func:`combine`, then the task's ``finish``); other per-window work
(scores for a query) can use :func:`drive` with records of its own.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from videovlm.dialogue import Cue
from videovlm.files import atomic_write, make_folder
from videovlm.interrupts import Interrupted, stop_requested
from videovlm.probe import VideoInfo
from videovlm.result import Result, Segment
from videovlm.scenes import Scene, split_long
from videovlm.writers import Thumbnail

log = logging.getLogger("videovlm")
T = TypeVar("T")

Span = Scene
"""``(start_s, end_s)`` in seconds from the first frame."""


def window_spans(info: VideoInfo, length_s: float, cuts: Sequence[int] = (),
                 snap_s: float = 0.0) -> list[Span]:
    """Consecutive windows of about ``length_s`` seconds covering the whole video once.

    The video is split into ``ceil(duration / length_s)`` equal windows whose boundaries sit on
    frame starts; a boundary with a cut (``cuts``: indices of frames that start a shot, as
    :func:`~videovlm.scenes.detect_cuts` returns) within ``snap_s`` seconds moves to the nearest
    such cut, never further than a quarter of a window (so no window shrinks to a sliver). A
    video no longer than ``length_s`` is one window.
    """
    if length_s <= 0:
        raise ValueError(f"a window must be longer than 0 s, got {length_s}")
    tl = info.timeline
    tb = tl.time_base
    origin = int(tl.pts[0])
    starts = tl.pts - origin
    edges = split_long([0, tl.end_pts - origin], starts, round(Fraction(length_s) / tb))
    cut_edges = sorted({int(starts[i]) for i in cuts if 0 < i < len(starts)})
    reach = round(Fraction(min(snap_s, length_s / 4)) / tb)
    if cut_edges and reach > 0:
        for k in range(1, len(edges) - 1):
            pos = bisect.bisect_left(cut_edges, edges[k])
            near = [c for c in cut_edges[max(0, pos - 1):pos + 1] if abs(c - edges[k]) <= reach]
            if near:
                best = min(near, key=lambda c: abs(c - edges[k]))
                if edges[k - 1] < best < edges[k + 1]:
                    edges[k] = best
    return [(float(a * tb), float(b * tb)) for a, b in itertools.pairwise(edges)]


# -- which videos are windowed, and how long a window is ----------------------------------------


def window_length(settings: Mapping[str, Any], duration_s: float) -> float | None:
    """The window length for a video of ``duration_s`` under a recipe's ``[windows]`` table, or
    None when it is not cut into windows (no table, ``after_s = 0``, or not longer than
    ``after_s``: every short clip runs exactly as a whole)."""
    after = float(settings.get("after_s", 0.0) or 0.0)
    if not settings or after <= 0 or duration_s <= after:
        return None
    return float(settings["length_s"])


def window_overrides(seconds: float | None) -> dict[str, float]:
    """``--window SECONDS`` as recipe overrides: videos longer than SECONDS are cut into windows
    of SECONDS (``length_s`` and ``after_s`` both); 0 turns windows off; None keeps the
    recipe's."""
    if seconds is None:
        return {}
    if seconds == 0:
        return {"after_s": 0.0}
    return {"length_s": float(seconds), "after_s": float(seconds)}


# -- the driver: per-window work, resumable, then a combine step --------------------------------

Record = dict[str, Any]
"""What one finished window leaves: plain JSON, so the progress file holds it as it is."""

OnWindow = Callable[[int, Span, Record], None]
"""Told of each window as it finishes (and, on a resumed run, of each finished one first):
its position, its span and its record. The CLI streams segments and moves its bar with it."""

OnStart = Callable[[Sequence[Span]], None]
"""Told of a windowed run's windows before the first one starts (the CLI opens its bar)."""


class Progress:
    """The finished windows of one run, in a JSON file beside its outputs, so the same command
    killed at any moment and run again goes on after the last finished window.

    ``key`` is every setting that makes the records (video identity, recipe, model, windows):
    a file made with another key is set aside with one warning, and the run starts over. The
    file is rewritten whole after each window (:func:`~videovlm.files.atomic_write`: the old one
    or the new one, never a part) and removed by :meth:`remove` once the final outputs exist.
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike[str], key: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.key = json.loads(json.dumps(dict(key), sort_keys=True, default=str))
        self.done: list[Record] = []
        self.restarted = False
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s): starting over", self.path.name, exc)
            self.restarted = True
            return
        old = stored.get("key") if isinstance(stored, dict) else None
        if stored.get("version") == self.VERSION and old == self.key:
            self.done = list(stored.get("windows", []))
            return
        changed = sorted(k for k in set(old or {}) | set(self.key)
                         if (old or {}).get(k) != self.key.get(k)) or ["format"]
        log.warning("%s was made with other settings (%s): starting over", self.path.name,
                    ", ".join(changed))
        self.restarted = True

    def add(self, record: Record) -> None:
        self.done.append(record)
        make_folder(self.path.parent)
        atomic_write(self.path, json.dumps({"version": self.VERSION, "key": self.key,
                                            "windows": self.done}, ensure_ascii=False))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def progress_path(folder: str | os.PathLike[str], stem: str) -> Path:
    """Where the progress file of the outputs ``folder/stem.*`` lives."""
    return Path(folder) / f"{stem}.progress.json"


def drive(spans: Sequence[Span], load: Callable[[int], T], work: Callable[[int, T], Record], *,
          progress: Progress | None = None, on_start: OnStart | None = None,
          on_window: OnWindow | None = None, prefetch: bool = True) -> list[Record]:
    """Run ``work`` over each window in order and return every window's record.

    ``load(i)`` makes window ``i``'s inputs (decoding: CPU), ``work(i, inputs)`` its record (the
    model); with ``prefetch`` the next window loads in a background thread while this one is
    worked, so at most two windows' inputs exist at once, whatever the video's length. Windows
    already in ``progress`` are not redone; each new record is added to it before the next
    window starts. The combine step (the caller's) then reads the records alone, so a resumed
    run and an uninterrupted one combine the same records. With ``progress``, a first Ctrl-C or
    SIGTERM (:func:`videovlm.interrupts.stop_requested`) stops the run after the window in
    hand, once it is kept, with :class:`~videovlm.interrupts.Interrupted` (the same call goes
    on from there); the last window is finished as the whole run.
    """
    if progress is not None and progress.done:
        log.info("%s: %d of %d windows already done: going on from there", progress.path.name,
                 min(len(progress.done), len(spans)), len(spans))
    if on_start is not None:
        on_start(spans)
    records: list[Record] = []
    for i, record in enumerate(progress.done[:len(spans)] if progress else []):
        records.append(record)
        if on_window is not None:
            on_window(i, spans[i], record)
    todo = list(range(len(records), len(spans)))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videovlm-window")
    try:
        ahead: Future[T] | None = pool.submit(load, todo[0]) if todo and prefetch else None
        for i in todo:
            inputs = ahead.result() if ahead is not None else load(i)
            ahead = pool.submit(load, i + 1) if prefetch and i + 1 < len(spans) else None
            record = work(i, inputs)
            del inputs
            if progress is not None:
                progress.add(record)
            records.append(record)
            if on_window is not None:
                on_window(i, spans[i], record)
            stop = stop_requested()
            if stop is not None and progress is not None and i + 1 < len(spans):  # kept
                raise Interrupted(stop.signum)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return records


# -- window records and their combination -------------------------------------------------------

REPORT_FRAMES_PER_SEGMENT = 4
"""Thumbnails a windowed result keeps per segment for its reports (HTML, contact sheet): a
bound, so an hour's result holds a few hundred kilobytes of pictures, not 600 decoded frames."""


def window_record(span: Span, result: Result) -> Record:
    """One window's :class:`~videovlm.result.Result` as its record: the segments, the frames'
    times, the prompt figures, timings, warnings, the dialogue record (segments keep their
    ``transcript``), and a few thumbnails per segment."""
    by_index = {f.index: f for f in result.frames}
    keep: set[int] = set()
    for seg in result.segments:
        idx = [i for i in seg.frames if i in by_index]
        if len(idx) > REPORT_FRAMES_PER_SEGMENT:
            step = len(idx) / REPORT_FRAMES_PER_SEGMENT
            idx = [idx[int(k * step + step / 2)] for k in range(REPORT_FRAMES_PER_SEGMENT)]
        keep.update(idx)
    d = result.to_dict()
    return {
        "span": list(span),
        "segments": d["segments"],
        "segments_parsed": result.segments_parsed,
        "sampling": d["sampling"],
        "prompt": d["prompt"],
        "timing_s": d["timing_s"],
        "cache": d["cache"],
        "warnings": d["warnings"],
        # the dialogue's use in this window; its source (the whole transcript, with
        # --transcribe) is the video's, the same in every window: combine puts it back once
        "dialogue": None if d["dialogue"] is None else {
            k: v for k, v in d["dialogue"].items() if k != "transcript"},
        "thumbnails": [Thumbnail.of(by_index[i]).to_dict() for i in sorted(keep)],
    }


def combine(records: Sequence[Record], *, video: Mapping[str, Any], model: Mapping[str, Any],
            generation: Mapping[str, Any], mode: str, length_s: float,
            timing_s: Mapping[str, float], dialogue: Mapping[str, Any] | None = None
            ) -> Result:
    """The whole video's :class:`~videovlm.result.Result` from its windows' records, in order:
    segments one after another, every frame's time, the largest prompt and the sum of all,
    timings and frame-cache counts summed (``timing_s``: the stages run once for the file,
    probe, cuts and dialogue), every distinct warning, each segment's transcript and the
    dialogue record (``dialogue``: the video's dialogue source, read once for the file). The
    task's own last step (a summary) comes after."""
    first = records[0]
    frames = sorted({(f["index"], f["time_s"]) for r in records for f in r["sampling"]["frames"]})
    sampling = {k: v for k, v in first["sampling"].items() if k != "frames"}
    sampling["frames"] = [{"index": i, "time_s": t} for i, t in frames]
    sampling["windows"] = {"length_s": length_s, "spans": [r["span"] for r in records]}
    prompts = [r["prompt"] for r in records]
    prompt = {"tokens": max(p["tokens"] for p in prompts), "budget": prompts[0]["budget"],
              "recipe": prompts[0]["recipe"],
              "calls": sum(p.get("calls", 1) for p in prompts),
              "total_tokens": sum(p.get("total_tokens", p["tokens"]) for p in prompts)}
    timing = dict(timing_s)
    for r in records:
        for stage, seconds in r["timing_s"].items():
            if stage != "total":
                timing[stage] = timing.get(stage, 0.0) + seconds
    caches = [r["cache"] for r in records if r["cache"] is not None]
    cache = {k: sum(c[k] for c in caches) for k in caches[0]} if caches else None
    thumbs = {t["index"]: Thumbnail.from_dict(t) for r in records for t in r["thumbnails"]}
    return Result(
        video=dict(video),
        sampling=sampling,
        model=dict(model),
        prompt=prompt,
        generation=dict(generation),
        segments=[Segment(s["start_s"], s["end_s"], s["text"], list(s["frames"]),
                          None if s.get("transcript") is None
                          else [Cue(**c) for c in s["transcript"]])
                  for r in records for s in r["segments"]],
        timing_s=timing,
        cache=cache,
        warnings=list(dict.fromkeys(w for r in records for w in r["warnings"])),
        mode=mode,
        segments_parsed=all(r["segments_parsed"] for r in records),
        frames=[thumbs[i] for i in sorted(thumbs)],
        dialogue=_dialogue(records, dialogue),
    )


def _dialogue(records: Sequence[Record], source: Mapping[str, Any] | None
              ) -> dict[str, Any] | None:
    """The whole video's ``dialogue`` record from its windows': the source (read once for the
    file) and cue count, the cues shown summed (a cue spanning two windows is shown in both),
    trimmed if any window trimmed."""
    found = [r["dialogue"] for r in records if r.get("dialogue") is not None]
    if not found:
        return None
    return {**found[0], **(source or {}), "in_prompt": sum(d["in_prompt"] for d in found),
            "trimmed": any(d["trimmed"] for d in found)}
