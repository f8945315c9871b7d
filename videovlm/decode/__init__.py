"""Decoding planned frames, behind one small backend interface.

Every backend returns, for the same plan, the same frames: upright RGB uint8 arrays at decoded
resolution, each with its index in presentation order and its real presentation time. A backend
that cannot guarantee that for a file refuses with a BackendError instead of guessing.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

import videovlm.isolation as isolation
from videovlm.errors import BackendError
from videovlm.plan import TIME_TOLERANCE_S, FrameRef, SeekMode, plan
from videovlm.probe import VideoInfo, probe


@dataclass(frozen=True, eq=False)
class Frame:
    """A decoded frame that never travels without its place and time in the video."""

    index: int
    time_s: float
    image: np.ndarray  # H x W x 3, uint8, RGB, upright


def turn(images: np.ndarray, degrees: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """``images`` turned ``degrees`` clockwise, ``VideoInfo.rotation``'s convention (a view).

    One place for the direction, which every backend needs and a sign slip would mirror.
    """
    return np.rot90(images, k=-(degrees // 90), axes=axes) if degrees % 360 else images


class Backend(Protocol):
    """What a decoder must do: decode exactly these frames of this file."""

    name: str

    def decode(self, info: VideoInfo, refs: Sequence[FrameRef]) -> list[Frame]:
        """Frames for ``refs`` (sorted by time), in that order; BackendError rather than a guess.

        A backend may also accept ``on_frame: Callable[[Frame], None] | None`` (keyword) and call
        it as each frame is ready; :func:`decode` passes it only to backends that take it.
        """
        ...


# name -> module implementing ``make() -> Backend`` (imported lazily: a missing library is simply
# an absent backend). Order is the ``auto`` preference.
_REGISTRY: dict[str, str] = {
    "av": "videovlm.decode._av",
    "decord": "videovlm.decode._decord",
    "opencv": "videovlm.decode._opencv",
    "torchcodec": "videovlm.decode._torchcodec",
}
BACKEND_NAMES: tuple[str, ...] = ("auto", *_REGISTRY)
# the library each backend needs, checked without importing it (importing torch takes seconds)
_LIBRARY: dict[str, str] = {"av": "av", "decord": "decord", "opencv": "cv2",
                            "torchcodec": "torchcodec"}
_INSTANCES: dict[str, Backend] = {}


def available_backends() -> list[str]:
    """Backends whose module and library are installed, in ``auto`` preference order.

    Decided from the import system's metadata alone, so asking is cheap and imports nothing
    heavy; a library that is present but broken shows up when :func:`get_backend` makes it.
    """
    names = []
    for name, module in _REGISTRY.items():
        try:
            found = importlib.util.find_spec(module) and importlib.util.find_spec(_LIBRARY[name])
        except (ImportError, ValueError):
            found = None
        if found:
            names.append(name)
    return names


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (made once per process); BackendError if it cannot be used."""
    _known(name)
    if name not in _INSTANCES:
        try:
            module = importlib.import_module(_REGISTRY[name])
            _INSTANCES[name] = module.make()
        except ImportError as exc:
            raise _not_installed(name, str(exc)) from None
    return _INSTANCES[name]


def _not_installed(name: str, why: str) -> BackendError:
    return BackendError(f"backend {name!r} is not installed ({why}); install it with "
                        f"pip install 'videovlm[{name}]' or choose --backend av")


def _known(name: str) -> None:
    if name not in _REGISTRY:
        raise BackendError(
            f"unknown backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}"
        )


def decode(
    info_or_path: VideoInfo | str | os.PathLike[str],
    refs: Sequence[FrameRef],
    backend: str = "auto",
    on_frame: Callable[[Frame], None] | None = None,
) -> list[Frame]:
    """Decode exactly the planned frames, in plan order, with one backend.

    ``auto`` takes the first installed backend that decodes this file correctly: a backend that
    refuses (BackendError) hands over to the next one. Whatever backend ran, its output is checked
    here against the plan (same indices, same order, upright RGB at the probed display size), so a
    backend that returns something else fails loudly instead of passing on a wrong frame.
    ``on_frame`` is called as each frame is ready (progress bars). The backend runs in a child
    process (:mod:`videovlm.isolation`): a crash, a hang or a library's stderr stays there.
    """
    return decode_with_backend(info_or_path, refs, backend, on_frame)[0]


def decode_with_backend(
    info_or_path: VideoInfo | str | os.PathLike[str],
    refs: Sequence[FrameRef],
    backend: str = "auto",
    on_frame: Callable[[Frame], None] | None = None,
) -> tuple[list[Frame], str]:
    """:func:`decode`, also saying which backend did it (what ``auto`` chose), for the record."""
    info = info_or_path if isinstance(info_or_path, VideoInfo) else probe(info_or_path)
    if backend == "auto":
        names = available_backends()
        if not names:
            raise BackendError("no decoding backend is installed; pip install av")
    else:
        _known(backend)
        if backend not in available_backends():  # said here: the child may see other modules
            raise _not_installed(backend, f"no module named {_LIBRARY[backend]!r}")
        names = [backend]
    first_error: BackendError | None = None
    for name in names:
        try:
            if isolation.isolated():
                frames = isolation.decode_isolated(name, info, refs, Frame, on_frame)
            else:
                frames = _call(get_backend(name), info, refs, on_frame)
            _check(info, refs, frames, name)
            return frames, name
        except BackendError as exc:
            if backend != "auto":
                raise
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def sample_frames(
    path: str | os.PathLike[str],
    n: int = 50,
    backend: str = "auto",
    seek: SeekMode = "exact",
) -> list[Frame]:
    """Probe, plan and decode in one call: up to ``n`` frames by the selection rule."""
    info = probe(path)
    return decode(info, plan(info, n, seek=seek), backend)


def _call(impl: Backend, info: VideoInfo, refs: Sequence[FrameRef], on_frame) -> list[Frame]:
    """Call a backend, passing ``on_frame`` only to those that take it."""
    if on_frame is not None and "on_frame" in inspect.signature(impl.decode).parameters:
        return impl.decode(info, refs, on_frame=on_frame)
    frames = impl.decode(info, refs)
    if on_frame is not None:
        for f in frames:
            on_frame(f)
    return frames


def _check(info: VideoInfo, refs: Sequence[FrameRef], frames: list[Frame], name: str) -> None:
    """The contract every backend must meet, checked on every call."""
    got = [f.index for f in frames]
    want = [r.index for r in refs]
    if got != want:
        raise BackendError(
            f"backend {name!r} returned frames {got[:8]}... for planned {want[:8]}... "
            f"in {info.path}; try --backend av"
        )
    for f, r in zip(frames, refs, strict=True):
        img = f.image
        if (
            not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3
            or img.shape[2] != 3 or abs(f.time_s - r.time_s) > TIME_TOLERANCE_S
        ):
            raise BackendError(
                f"backend {name!r} returned a malformed frame {f.index} "
                f"({getattr(img, 'shape', None)}, {getattr(img, 'dtype', None)}, t={f.time_s}) "
                f"for {info.path}"
            )
        h, w = img.shape[:2]
        if (h, w) != (info.height, info.width) and (w, h) == (info.height, info.width):
            raise BackendError(
                f"backend {name!r} returned frame {f.index} of {info.path} not upright "
                f"({w}x{h}, display {info.width}x{info.height})"
            )
