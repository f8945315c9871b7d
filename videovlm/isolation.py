"""Decoding (and every other reading of a video file) in a child process, so that what goes
wrong in a decoder's native code stays there.

Decoders are C and C++ (FFmpeg in four builds, OpenCV, decord): on a damaged file one may crash
with a signal (SIGSEGV, SIGABRT), loop forever (decord's ``get_batch`` on packets that do not
decode), or print its library's log lines on stderr (OpenCV's FFmpeg: ``[av1 @ 0x...]`` lines
before our one-line refusal). None of that can be caught in the process that runs it. So every
:func:`videovlm.decode.decode` runs the backend in a child interpreter, one per calling thread,
started on first use and reused for the next decodes (its imports, torch for torchcodec, are paid
once):

- its stderr goes to /dev/null and its stdout is not the protocol's pipe (a library's printing
  cannot break it): stderr holds videovlm's lines only, whichever backend ran;
- a child that dies of a signal becomes :class:`~videovlm.errors.DecoderCrash`, one line (exit 2
  in the CLI, an error record in a batch), and the next decode starts a fresh child;
- a decode that overruns its time limit (proportional to the file's length) is killed the same
  way, so no file can hang a command;
- frames come back through shared memory (one copy), progress as they are decoded.

The other readers of a video file run there too (:func:`call_isolated`): the probe, FFmpeg's
first reading of every file, and scene detection, a decode of every frame.

``VIDEOVLM_DECODE_IN_PROCESS=1`` decodes in the calling process instead (no isolation: for
profiling and for measuring what isolation costs, ``benchmarks/fuzz.py --isolation``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing import resource_tracker, shared_memory
from typing import TYPE_CHECKING, Any

import numpy as np

import videovlm.errors as errors
from videovlm.errors import BackendError, DecoderCrash, InputError, VideoVLMError

if TYPE_CHECKING:  # below probe, plan and decode, which all run their work through here
    from videovlm.decode import Frame
    from videovlm.plan import FrameRef
    from videovlm.probe import VideoInfo

Decoder = Callable[[str, "VideoInfo", Sequence["FrameRef"], Callable[[Any], None]], list[Any]]
"""What the child runs per job: ``(backend name, info, refs, on_frame) -> frames``
(:mod:`videovlm.decode.__main__` passes the registry's; this module does not import it)."""

# Bound on one decode: a fixed allowance plus one per frame of the file (a backend may decode up
# to all of them), scaled by frame size; ~10x what it takes here. Starting the child (torch for
# torchcodec: seconds on a busy machine) has its own, larger allowance.
BASE_TIMEOUT_S = 20.0
PER_FRAME_S_720P = 0.01
START_TIMEOUT_S = 120.0
IN_PROCESS_ENV = "VIDEOVLM_DECODE_IN_PROCESS"
# "probe:NAME" / "scenes:NAME" / "decode:NAME" / "worker:NAME": the process doing that work on a
# file whose name contains NAME
# kills itself with SIGSEGV (a real signal death, as a native crash is), for the tests
CRASH_TEST_ENV = "VIDEOVLM_TEST_CRASH"
_HEADER = struct.Struct("<Q")


def isolated() -> bool:
    """Whether decodes run in a child process (the default)."""
    return os.environ.get(IN_PROCESS_ENV, "") in ("", "0")


def crash_for_test(where: str, path: str | os.PathLike[str]) -> None:
    """Die of SIGSEGV here when ``$VIDEOVLM_TEST_CRASH`` asks for it (``where:NAME``) on this file.

    How the tests get a native crash on demand: the process ends by the signal, as it would in a
    decoder's C code, not by an exception Python could catch. No core file is written.
    """
    spec = os.environ.get(CRASH_TEST_ENV, "")
    place, _, name = spec.partition(":")
    if place != where or not name or name not in os.path.basename(os.fspath(path)):
        return
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), signal.SIGSEGV)


def warm_up() -> None:
    """Start this thread's decoding child now, without waiting for it: its imports then overlap
    the caller's probe (``videovlm frames`` calls this first)."""
    if isolated():
        _thread_child().spawn()


def _thread_child() -> _Child:
    child = getattr(_local, "child", None)
    if child is None:
        child = _local.child = _Child()
    return child


def decode_isolated(
    name: str, info: VideoInfo, refs: Sequence[FrameRef],
    make_frame: Callable[[int, float, np.ndarray], Frame],
    on_frame: Callable[[Frame], None] | None = None,
) -> list[Frame]:
    """Backend ``name``'s frames for ``refs``, decoded in this thread's child process, each
    made here by ``make_frame(index, time_s, image)``."""
    return _thread_child().decode(name, info, refs, make_frame, on_frame)


def call_isolated(target: str, args: tuple, *, path: str, doing: str, limit: float,
                  tag: str) -> Any:
    """``module:function`` called with ``args`` in this thread's child process: for the readers
    of a file other than the decoders (the probe, scene detection), which run FFmpeg on it too.

    ``doing`` ("reading FILE") words the errors: a crash is :class:`DecoderCrash`, an overrun of
    ``limit`` seconds an InputError; the function's own VideoVLMError comes back as itself.
    ``tag`` names the job for ``$VIDEOVLM_TEST_CRASH`` (``tag:NAME``, ``path`` matched).
    """
    return _thread_child().call(("call", tag, target, args, path), doing, limit)


def timeout_s(info: VideoInfo) -> float:
    """The time one decode of ``info``'s file may take before it is killed."""
    scale = max(1.0, info.width * info.height / (1280 * 720))
    return BASE_TIMEOUT_S + PER_FRAME_S_720P * scale * info.frame_count


def signal_name(returncode: int) -> str:
    """``SIGSEGV`` for a process that ended with returncode -11; ``status N`` otherwise."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-returncode).name
        return f"signal {-returncode}"
    return f"status {returncode}"


_local = threading.local()


class _Child:
    """One decoding child interpreter and its two pipes; restarted after a crash or overrun."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self._finalizer: weakref.finalize | None = None

    def decode(self, name: str, info: VideoInfo, refs: Sequence[FrameRef],
               make_frame: Callable[[int, float, np.ndarray], Frame],
               on_frame: Callable[[Frame], None] | None) -> list[Frame]:
        if not refs:
            return []
        self._start()
        h, w = info.height, info.width
        shm = shared_memory.SharedMemory(create=True, size=max(1, len(refs) * h * w * 3))
        answered = False  # the child finished the job: it can take the next one
        try:
            block = np.ndarray((len(refs), h, w, 3), dtype=np.uint8, buffer=shm.buf)
            limit = timeout_s(info)
            self._send(("decode", name, info, list(refs), shm.name))
            deadline = time.monotonic() + limit
            slot = {r.index: k for k, r in enumerate(refs)}
            got: dict[int, Frame] = {}
            while True:
                try:
                    message = self._receive(deadline)
                except TimeoutError:
                    raise BackendError(
                        f"{name} did not finish decoding {info.path} within {limit:.0f} s (some "
                        "decoders loop forever on damaged files); it was stopped; try --backend "
                        "av") from None
                except _Died as died:
                    raise DecoderCrash(
                        f"the {name} decoder crashed on {info.path} ({died}): the file is damaged "
                        "or the decoder has a bug; try another --backend") from None
                answered = message[0] != "frame"
                if message[0] == "frame":
                    _, index, time_s, image = message
                    if image is None:
                        image = block[slot[index]].copy()
                    frame = make_frame(index, time_s, image)
                    got[index] = frame
                    if on_frame is not None:
                        on_frame(frame)
                elif message[0] == "done":
                    return [got[index] for index in message[1]]
                else:
                    _raise(message, f"decoding {info.path} with {name}")
        finally:
            del block
            if not answered and self.proc is not None:
                self._kill()  # left mid-job (Ctrl-C, a failing callback): never reused so
            shm.close()
            shm.unlink()

    def call(self, job: tuple, doing: str, limit: float) -> Any:
        self._start()
        answered = False
        try:
            self._send(job)
            try:
                message = self._receive(time.monotonic() + limit)
            except TimeoutError:
                raise InputError(f"{doing} took over {limit:.0f} s (a damaged file FFmpeg loops "
                                 "on, or a stalled disk); it was stopped") from None
            except _Died as died:
                raise DecoderCrash(
                    f"FFmpeg crashed {doing} ({died}): the file is damaged or FFmpeg has a bug; "
                    "re-encode it (ffmpeg -i IN OUT.mp4) or leave it out") from None
            answered = True
            if message[0] == "done":
                return message[1]
            _raise(message, doing)
        finally:
            if not answered and self.proc is not None:
                self._kill()

    def _start(self) -> None:
        """A child that has said it is ready: this one, or a fresh one if it is gone."""
        if self.proc is not None and self.proc.poll() is not None:
            self._kill()
        self.spawn()
        if self.ready:
            return
        try:
            message = self._receive(time.monotonic() + START_TIMEOUT_S)
        except TimeoutError:
            raise BackendError(f"the decode process did not start within {START_TIMEOUT_S:.0f} "
                               "s (the machine is overloaded?); try again") from None
        except _Died as died:
            raise BackendError(f"the decode process ended as it started ({died}): is videovlm "
                               "installed whole? (python -m videovlm.decode)") from None
        except BaseException:  # Ctrl-C mid-read: its pipe is out of step, never reused
            self._kill()
            raise
        if message != ("ready",):
            self._kill()
            raise RuntimeError(f"the decode process said {message!r} instead of ready")
        self.ready = True

    def spawn(self) -> None:
        """Start the child if there is none; it says it is ready when its imports are done."""
        if self.proc is not None:
            return
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # above videovlm/
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root if not path else root + os.pathsep + path}
        # a fresh interpreter, not multiprocessing: spawn would re-run the caller's main script
        # and fork would copy a process that may hold threads (torch) and a loaded model
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "videovlm.decode"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
        self.ready = False
        self._finalizer = weakref.finalize(self, _stop, self.proc)

    def _send(self, job: Any) -> None:
        """One job, with this process's working directory (the child's follows it)."""
        assert self.proc is not None and self.proc.stdin is not None
        data = pickle.dumps((os.getcwd(), job), protocol=pickle.HIGHEST_PROTOCOL)
        with contextlib.suppress(BrokenPipeError):  # the child is gone: _receive says how
            self.proc.stdin.write(_HEADER.pack(len(data)) + data)

    def _receive(self, deadline: float) -> Any:
        """The child's next message; TimeoutError or :class:`_Died` (the child killed or
        reaped, so the next job starts a fresh one) when none will come."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            size = _HEADER.unpack(_read(fd, _HEADER.size, deadline))[0]
            return pickle.loads(_read(fd, size, deadline))
        except TimeoutError:
            self._kill()
            raise
        except EOFError:
            raise _Died(signal_name(self._kill())) from None

    def _kill(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
        _stop(self.proc)
        self.proc, self.ready = None, False
        return code


class _Died(Exception):
    """The child ended mid-job; its text is how (``SIGSEGV``, ``status 1``)."""


def _raise(message: tuple, doing: str) -> None:
    """Raise what the child's ``error`` or ``bug`` message says went wrong ``doing`` its job."""
    if message[0] == "error":
        _, type_name, text = message
        cls = getattr(errors, type_name, BackendError)
        raise (cls if issubclass(cls, VideoVLMError) else BackendError)(text)
    # "bug": an exception that is not the user's to fix, with its traceback
    raise RuntimeError(f"{doing} failed in the decode process:\n{message[-1]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a child whose thread or process is done with it: EOF on its stdin ends it."""
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _read(fd: int, n: int, deadline: float) -> bytes:
    """Exactly ``n`` bytes from ``fd`` by ``deadline`` (TimeoutError), EOFError at its end."""
    parts: list[bytes] = []
    while n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        part = os.read(fd, min(n, 1 << 20))
        if not part:
            raise EOFError
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


# -- the child ----------------------------------------------------------------------------------


def child_main(decoder: Decoder) -> None:
    """Serve decode jobs from stdin until it closes; every answer on a private copy of stdout.

    fd 1 and fd 2 are pointed at /dev/null first, so nothing a library prints reaches the
    protocol or the user; a native crash is written nowhere and ends this process by its signal.
    """
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    faulthandler.disable()  # a crash must end by its own signal, for the parent to name it
    os.environ[IN_PROCESS_ENV] = "1"  # what this process probes or decodes, it does itself
    # Ctrl-C and SIGTERM (sent to the whole process group by a terminal or a scheduler) are the
    # parent's to handle: it finishes the video in hand, which may need this child; the parent
    # ends it by EOF or SIGKILL
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    lock = threading.Lock()

    def send(message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with lock:
            out.write(_HEADER.pack(len(data)) + data)

    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    send(("ready",))
    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        cwd, job = pickle.loads(stdin.read(_HEADER.unpack(header)[0]))
        if cwd != os.getcwd():  # a relative path means what it means to the caller now
            os.chdir(cwd)
        _serve(job, decoder, send)


def _orphan_watch(parent: int) -> None:
    """End this child once its parent is gone (killed: no EOF comes while a decode hangs)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _serve(job: tuple, decoder: Decoder, send: Callable[[Any], None]) -> None:
    if job[0] == "call":
        _serve_call(job, send)
    else:
        _serve_decode(job, decoder, send)


def _serve_call(job: tuple, send: Callable[[Any], None]) -> None:
    _, tag, target, args, path = job
    try:
        crash_for_test(tag, path)
        module, _, function = target.partition(":")
        send(("done", getattr(importlib.import_module(module), function)(*args)))
    except VideoVLMError as exc:
        send(("error", type(exc).__name__, str(exc)))
    except Exception:
        send(("bug", traceback.format_exc()))


def _serve_decode(job: tuple, decoder: Decoder, send: Callable[[Any], None]) -> None:
    _, name, info, refs, shm_name = job
    shm = _attach(shm_name)
    block: np.ndarray | None = np.ndarray((len(refs), info.height, info.width, 3), np.uint8,
                                          buffer=shm.buf)
    slot = {r.index: k for k, r in enumerate(refs)}
    sent: set[int] = set()

    def on_frame(frame: Any) -> None:
        image = frame.image
        k = slot.get(frame.index)
        fits = block is not None and image.shape == block.shape[1:] and image.dtype == np.uint8
        if fits and k is not None:
            block[k] = image
            image = None  # in shared memory
        sent.add(id(frame))
        send(("frame", frame.index, frame.time_s, image))

    try:
        crash_for_test("decode", info.path)
        frames = decoder(name, info, refs, on_frame)
        for frame in frames:
            if id(frame) not in sent:  # a backend that took on_frame and skipped a frame
                on_frame(frame)
        send(("done", [f.index for f in frames]))
    except VideoVLMError as exc:
        send(("error", type(exc).__name__, str(exc)))
    except Exception:
        send(("bug", traceback.format_exc()))
    finally:
        block = None  # the shared memory cannot close while a view of it exists
        shm.close()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open the parent's shared memory without letting this process's tracker unlink it."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")  # the parent owns and unlinks it
    return shm
