"""The torchcodec backend: PyTorch's FFmpeg-based decoder, opt-in with ``--backend torchcodec``.

torchcodec indexes frames exactly in presentation order when ``seek_mode="exact"``, returns each
frame's real presentation time, and (0.13, measured) turns frames upright by itself from the
display matrix. videovlm still checks every frame's time against the probed timeline and turns
only what torchcodec left unturned, so the result is upright exactly once whatever the version.
Importing torchcodec imports torch (seconds), so it happens only when this backend is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from videovlm.decode import Frame, turn
from videovlm.errors import BackendError
from videovlm.plan import TIME_TOLERANCE_S, FrameRef
from videovlm.probe import VideoInfo


class TorchcodecBackend:
    """Decode planned frames with ``torchcodec.decoders.VideoDecoder.get_frames_at``."""

    name = "torchcodec"

    def decode(self, info: VideoInfo, refs: Sequence[FrameRef]) -> list[Frame]:
        """Frames for ``refs``: one batched call, then every frame's time checked.

        torchcodec's index ``i`` is its ``i``-th frame by time, like the timeline's; where the two
        tables differ (a damaged packet one of them skipped) the times disagree and it refuses.
        """
        if not refs:
            return []
        from torchcodec.decoders import VideoDecoder

        try:
            decoder = VideoDecoder(
                info.path,
                stream_index=info.stream_index,
                seek_mode="exact",
                dimension_order="NHWC",
                num_ffmpeg_threads=0,  # FFmpeg picks the thread count: one decoder, all cores
            )
            batch = decoder.get_frames_at([r.index for r in refs])
        except (RuntimeError, ValueError, IndexError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise BackendError(
                f"torchcodec cannot decode {info.path} ({reason}); use --backend av"
            ) from None
        tb = info.timeline.time_base
        got = batch.pts_seconds.tolist()
        for ref, t in zip(refs, got, strict=True):
            want = float(ref.pts * tb)
            if abs(t - want) > TIME_TOLERANCE_S:
                raise BackendError(
                    f"torchcodec returned the frame at {t:.6f} s for frame {ref.index} "
                    f"(at {want:.6f} s) of {info.path}; use --backend av"
                )
        images = batch.data.numpy()
        left = (info.rotation - _applied_rotation(decoder)) % 360  # what torchcodec did not turn
        frames = []
        for ref, image in zip(refs, images, strict=True):
            if left:
                image = np.ascontiguousarray(turn(image, left))
            frames.append(Frame(ref.index, ref.time_s, image))
        return frames


def _applied_rotation(decoder) -> int:
    """Degrees clockwise torchcodec already turned its frames (it reports counter-clockwise)."""
    rotation = getattr(decoder.metadata, "rotation", None)
    return 0 if rotation is None else round(-rotation) % 360


def make() -> TorchcodecBackend:
    """The backend, once torchcodec (and through it torch and FFmpeg's libraries) loads."""
    try:
        import torchcodec.decoders  # noqa: F401  (imports torch: seconds)
    except (RuntimeError, OSError) as exc:  # present, but FFmpeg's or CUDA's libraries are not
        raise BackendError(
            f"torchcodec is installed but cannot load ({str(exc).splitlines()[0][:160]}); it "
            "needs FFmpeg 4-8's shared libraries (e.g. apt-get install ffmpeg) and, on a machine "
            "without CUDA, a CPU build (torchcodec 0.13 is the last one); or use --backend av"
        ) from None
    return TorchcodecBackend()
