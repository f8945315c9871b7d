"""The default backend: PyAV (FFmpeg), keyframe-aware and exact.

Why it is fast without being approximate:
- It seeks only when the next target's keyframe lies beyond what this run has already fed to the
  decoder; otherwise decoding forward is cheaper than a seek plus a fresh GOP.
- Packets are fed by hand, so each is known by its timestamp before it is decoded: packets of
  frames nobody wants are decoded with ``skip_frame="NONREF"``, which drops exactly the frames no
  other frame references (never changing a pixel of a frame we keep); the wanted frames and
  every reference frame are decoded in full.
- Only the wanted frames are converted to RGB; FFmpeg's frame and slice threads do the rest,
  and targets in different GOPs are decoded concurrently on machines with several cores.
- Frames are matched to the plan by presentation timestamp, never by counting, and a target that
  does not come out of the decoder is a BackendError, never a neighbour passed off as it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from videovlm.decode import Frame, turn
from videovlm.errors import BackendError, InputError
from videovlm.plan import FrameRef
from videovlm.probe import VideoInfo, check_frame_size, packets

# Decoders that read ``skip_frame`` per packet and skip only frames no other frame references
# (checked by the pixel tests); others (libdav1d reads it once, at open) always decode in full.
_SKIM_DECODERS = frozenset({"h264", "hevc", "vp9", "mpeg4"})

# A seek can land past its keyframe on files without an index (MPEG-TS); it is retried this many
# times, ever further back, before reading from the start of the file.
_SEEK_RETRIES = 3

# Workers decoding different GOPs at once: each holds its own decoder (reference frames and
# threads), so more workers cost memory (measured on 720p H.264: 4 workers peak ~35 MB above 1).
_MAX_WORKERS = 4


class AvBackend:
    """Decode planned frames with PyAV; see the module docstring for the strategy.

    Targets that need different GOPs are independent work: with several CPU cores they are split
    into contiguous chunks decoded concurrently (FFmpeg releases the GIL), each chunk in its own
    container and decoder, the cores shared out between them. ``workers`` fixes the number of
    chunks (1: one sequential pass); ``None`` picks it from the cores and the plan.
    """

    name = "av"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers

    def decode(
        self,
        info: VideoInfo,
        refs: Sequence[FrameRef],
        on_frame: Callable[[Frame], None] | None = None,
    ) -> list[Frame]:
        """Frames for ``refs`` in plan order (see :class:`videovlm.decode.Backend`)."""
        if not refs:
            return []
        chunks = _chunks(info, sorted(refs, key=lambda r: r.pts), self._workers())
        cores = _cores()
        threads = 0 if len(chunks) == 1 else max(1, cores // len(chunks))
        if len(chunks) == 1:
            found = _decode_chunk(info, chunks[0], on_frame, threads)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(chunks), thread_name_prefix="videovlm-av") as pool:
                parts = pool.map(lambda c: _decode_chunk(info, c, on_frame, threads), chunks)
                found = {pts: f for part in parts for pts, f in part.items()}
        return [found[r.pts] for r in refs]

    def _workers(self) -> int:
        if self.workers is not None:
            return max(1, self.workers)
        return max(1, min(_MAX_WORKERS, _cores()))


def _cores() -> int:
    """CPU cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _chunks(info: VideoInfo, refs: list[FrameRef], workers: int) -> list[list[FrameRef]]:
    """Split time-sorted targets into at most ``workers`` contiguous chunks of similar work.

    Targets sharing a keyframe stay together (one seek serves them all); a chunk's work is
    estimated as the frames decoded from each group's keyframe to its last target.
    """
    key_idx = info.timeline.entry_points()
    groups: list[list[FrameRef]] = []
    costs: list[int] = []
    last_key = None
    for r in refs:
        k = int(key_idx[max(int(np.searchsorted(key_idx, r.index, side="right")) - 1, 0)])
        if k != last_key:
            groups.append([])
            costs.append(0)
            last_key = k
        groups[-1].append(r)
        costs[-1] = r.index - k + 1
    workers = min(workers, len(groups))
    if workers <= 1:
        return [refs]
    share = sum(costs) / workers
    chunks: list[list[FrameRef]] = [[]]
    acc = 0.0
    for group, cost in zip(groups, costs, strict=True):
        if chunks[-1] and acc + cost / 2 > share * len(chunks) and len(chunks) < workers:
            chunks.append([])
        chunks[-1].extend(group)
        acc += cost
    return chunks


def _decode_chunk(info: VideoInfo, refs: list[FrameRef], on_frame, threads: int) -> dict:
    """Decode one chunk of targets in a container and decoder of its own."""
    import av

    run = _Run(info, refs, on_frame, threads)
    try:
        return run.decode_all()
    except av.FFmpegError as exc:
        raise InputError(f"{info.path}: decoding failed ({exc})") from None
    finally:
        run.close()


class _Run:
    """One chunk's state: what is wanted, what the decoder was fed, what came out."""

    def __init__(
        self, info: VideoInfo, refs: Sequence[FrameRef], on_frame, threads: int = 0
    ) -> None:
        self.info = info
        self.threads = threads
        # frame threads pay off over runs of frames; a plan of keyframes only decodes one frame
        # per seek, where their start-up and flush cost more than they give
        self.only_keys = all(info.timeline.keyframe[r.index] for r in refs)
        self.refs = {r.pts: r for r in refs}
        self.todo = sorted(self.refs)  # target pts not yet out of the decoder, ascending
        self.found: dict[int, Frame] = {}
        self.on_frame = on_frame
        tl = info.timeline
        self.has_keys = bool(tl.keyframe.any())
        self.key_pts = tl.pts[tl.entry_points()]  # where a run may start, frame 0 always
        # each packet is read at most once per run and runs overlap only on seek retries
        self.budget = 2 * (len(tl.pts) + 64) * (_SEEK_RETRIES + 2)
        self.packets = None  # the demux iterator of the current run; None: no run (must seek)
        self.frontier: int | None = None  # highest pts fed to the decoder in this run
        self.fed: set[int] = set()  # pts fed in this run
        # one swscale context for the whole run: a frame's own ``to_ndarray`` builds (and with
        # threads, starts a thread pool for) a fresh context per frame
        from av.video.reformatter import VideoReformatter

        self.rgb = VideoReformatter()
        # Every image of the run lands in one block allocated up front: a fresh array per frame
        # costs a page fault per 4 KB when first written (50 720p frames: ~0.06 s of CPU, as
        # much as decoding 25 keyframes), one block of >= 4 MB gets NumPy's huge pages.
        # The images are views of it: the block is freed when the last of them is.
        self.block: np.ndarray | None = None
        self.container = None
        self._open()

    def _open(self) -> None:
        """(Re)open the file: a fresh demuxer at its start and a fresh decoder."""
        import av

        self.close()
        try:
            self.container = av.open(self.info.path, metadata_errors="ignore")
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"{self.info.path}: cannot open for decoding ({exc})") from None
        self.stream = self.container.streams[self.info.stream_index]
        cc = self.stream.codec_context
        cc.thread_type = "SLICE" if self.only_keys else "AUTO"
        cc.thread_count = self.threads  # 0: FFmpeg picks from the cores
        self.cc = cc
        self.skip = "DEFAULT"
        self.skim = "NONREF" if cc.name in _SKIM_DECODERS else "DEFAULT"
        self.packets = None

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def decode_all(self) -> dict[int, Frame]:
        while self.todo:
            target = self.todo[0]
            key = self._key_before(target)
            if self.packets is None or self.frontier is None or key > self.frontier:
                self._seek(key)
            self._feed_until(target)
        return self.found

    def _key_before(self, pts: int) -> int:
        i = int(np.searchsorted(self.key_pts, pts, side="right")) - 1
        return int(self.key_pts[max(i, 0)])

    def _seek(self, key: int) -> None:
        """Start a run at keyframe ``key`` (or an earlier one), its first packet fed.

        Demuxers without an index (MPEG-TS) seek by timestamp and may land past the keyframe or
        on a frame that is not one: packets are skipped up to the next keyframe, and if that is
        past ``key`` the seek is retried further back, then from the start of the file.
        """
        if self.has_keys:
            tl = self.info.timeline
            k = int(np.searchsorted(self.key_pts, key))
            span = (
                key - int(self.key_pts[k - 1]) if k > 0
                else max((tl.end_pts - int(tl.pts[0])) // 8, 1)
            )
            for attempt in range(_SEEK_RETRIES):
                self._drain()
                at = key - (2**attempt - 1) * span
                self.container.seek(at, stream=self.stream, backward=True)
                self.packets = packets(self.container, self.stream)
                first = self._first_keyframe()
                if first is not None and first <= key:
                    return
        self._open()  # last resort (and for streams without keyframe flags): from the start
        self.packets = packets(self.container, self.stream)
        self._first_keyframe()

    def _first_keyframe(self) -> int | None:
        """Skip to the first keyframe packet (any packet if the stream flags none); feed it."""
        while self.packets is not None:
            packet = next(self.packets, None)
            if packet is None or packet.size == 0:
                self._drain()
                return None
            if self.has_keys and not packet.is_keyframe:
                self._spend()
                continue
            pts = self._feed(packet)
            if pts is not None:
                return pts
        return None

    def _feed_until(self, target: int) -> None:
        while self.packets is not None and target not in self.found:
            if target in self.fed and self._run_is_done(target):
                self._drain()  # nothing more to take from this run: drain, feed nothing more
                break
            packet = next(self.packets, None)
            if packet is None:
                self._drain()
                break
            self._feed(packet)
        if target not in self.found:
            t = float((target - int(self.info.timeline.pts[0])) * self.info.timeline.time_base)
            raise BackendError(
                f"{self.info.path}: the frame at {t:.3f} s (pts {target}) did not come out of the "
                "decoder; the file may be damaged there"
            )

    def _run_is_done(self, target: int) -> bool:
        """True when the next target needs a seek anyway, so this run has nothing more to give."""
        nxt = self._next_after(target)
        return nxt is None or self._key_before(nxt) > self.frontier

    def _next_after(self, target: int) -> int | None:
        later = [p for p in self.todo if p > target]
        return later[0] if later else None

    def _feed(self, packet) -> int | None:
        """Decode one packet (skimming it if its frame is not wanted); return its timestamp."""
        import av

        self._spend()
        if packet.size == 0:  # end of stream
            self._drain()
            return None
        pts = packet.pts if packet.pts is not None else packet.dts
        skip = "DEFAULT" if pts in self.refs else self.skim
        if skip != self.skip:
            self.cc.skip_frame = skip
            self.skip = skip
        try:
            frames = self.cc.decode(packet)
        except av.InvalidDataError:
            frames = []  # a damaged packet: its own frame is lost, found missing by the caller
        if pts is not None:
            self.fed.add(pts)
            if self.frontier is None or pts > self.frontier:
                self.frontier = pts
        self._take(frames)
        return pts

    def _spend(self) -> None:
        """Count one packet read; a damaged file must end in an error, not an endless loop."""
        self.budget -= 1
        if self.budget < 0:
            raise BackendError(f"{self.info.path}: decoding did not converge; file damaged?")

    def _drain(self) -> None:
        """Take every frame the decoder still holds, then reset it for the next run."""
        if self.skip != "DEFAULT":
            self.cc.skip_frame = self.skip = "DEFAULT"
        try:
            self._take(self.cc.decode(None))
        finally:
            self.cc.flush_buffers()
            self.packets = None
            self.frontier = None
            self.fed.clear()

    def _take(self, frames) -> None:
        for frame in frames:
            pts = frame.pts
            ref = self.refs.get(pts)
            if ref is None or pts in self.found:
                continue
            check_frame_size(self.info.path, frame.width, frame.height)  # a size change mid-way
            rgb = self.rgb.reformat(
                frame, format="rgb24", threads=self.threads, **_rgb_options(frame)
            ).to_ndarray()
            rgb = turn(rgb, self.info.rotation)
            out = Frame(index=ref.index, time_s=ref.time_s, image=self._keep(rgb))
            self.found[pts] = out
            self.todo.remove(pts)
            if self.on_frame is not None:
                self.on_frame(out)

    def _keep(self, rgb: np.ndarray) -> np.ndarray:
        """Copy ``rgb`` (swscale's buffer, reused for the next frame) into the run's block."""
        if self.block is None:
            self.block = np.empty((len(self.refs), *rgb.shape), dtype=np.uint8)
        if rgb.shape != self.block.shape[1:]:  # the stream changed size: a frame of its own
            return np.ascontiguousarray(rgb)
        image = self.block[len(self.found)]
        np.copyto(image, rgb)
        return image


def _rgb_options(frame) -> dict[str, str]:
    """swscale options for this frame's RGB conversion.

    For 8-bit 4:2:0 at even sizes (most video), ``FAST_BILINEAR`` selects swscale's unscaled
    converter: pixel-identical output here (no scaling happens) at several times the speed. At
    odd sizes that path differs along the last row/column, so the default is kept there.
    """
    if frame.format.name in ("yuv420p", "yuvj420p") and not (frame.width % 2 or frame.height % 2):
        return {"interpolation": "FAST_BILINEAR"}
    return {}


def make() -> AvBackend:
    """The registry's constructor; importing PyAV here makes a missing install an ImportError."""
    import av  # noqa: F401

    return AvBackend()
