"""Speech recognition: a video's audio track as timed lines of dialogue (:class:`Cue`).

Whisper through ``transformers`` (already the model stage's library), on the same clock as the
frames. The audio is decoded with PyAV and resampled to Whisper's 16 kHz mono float32 as it is
read, and transcribed with Whisper's own long-form rule, sequentially: a 30 s window is decoded
with timestamps; when its last segment is cut off by the window's end, the next window starts at
the last timestamp the model closed (that text is decoded again, whole), else right after the
window. So no word is split between windows and no overlap has to be stitched back together (the
chunked alternative, overlapping windows merged by their longest common token run, guesses at the
seams), and only one window of samples (~2 MB) and one decoded audio frame are ever in memory,
whatever the track's length. Windows cannot be batched this way (each starts where the last one
ended); on a CPU a batch would buy little.

Silence is skipped as Whisper does (a window whose "no speech" probability is over 0.6 and whose
text is unlikely, mean log-probability under -1, gives no cue), which keeps the model from
writing its well-known phantom lines over music or quiet.

A :class:`SpeechModel` is loaded once (:meth:`SpeechModel.load`: the same ``ID|PATH``
resolution, device, dtype and int8 rules as :class:`videovlm.model.Model`) and transcribes any
number of videos; :func:`transcribe` is the one-call form.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videovlm.dialogue import Cue, Dialogue, DialogueSettings, clean_text
from videovlm.errors import InputError, ModelError, VideoVLMError
from videovlm.model import pick_runtime, resolve
from videovlm.probe import VideoInfo, decoded, probe

log = logging.getLogger("videovlm")

DEFAULT_ASR_MODEL = "openai/whisper-base"
"""The speech model used when none is named: multilingual (99 languages), 74 M parameters; on
2 CPU cores (int8) a minute of speech cost it 30 CPU-seconds, whisper-small 105
(benchmarks/results/asr.md)."""
SAMPLE_RATE = 16_000
"""What every Whisper hears: 16 kHz mono."""
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
"""Whisper's own silence rule (openai/whisper's ``transcribe`` defaults): a window is skipped when
its no-speech probability is above the first and its mean token log-probability below the
second."""
MIN_ADVANCE_S = 1.0
"""A window whose last closed timestamp is earlier than this moves on by the whole window: a
model that keeps closing a segment at its very start would otherwise crawl through the track."""


def default_asr_model_id() -> str:
    """The speech model used when none is named: ``$VIDEOVLM_ASR_MODEL`` or whisper-base."""
    return os.environ.get("VIDEOVLM_ASR_MODEL") or DEFAULT_ASR_MODEL


# -- the audio track ----------------------------------------------------------------------------


@dataclass
class Audio:
    """An audio track being read: where its first sample sits on the frames' clock (seconds from
    the video's first frame; negative when the sound starts before the picture) and its samples,
    16 kHz mono float32, as they are decoded."""

    start_s: float
    chunks: Iterator[np.ndarray]


def open_audio(path: str | os.PathLike[str], video_start_s: float = 0.0) -> Audio | None:
    """The first audio track of ``path``, resampled as it is read; None when there is none.

    ``video_start_s`` is the first frame's presentation time (:attr:`VideoInfo.start_s`): the
    audio's own start is measured against it, so a track that starts 2 s after the picture
    gives cues 2 s later. Samples are counted from the first decoded one (a gap inside the track
    is not reproduced: players do not either).
    """
    import av

    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: not a readable media file ({exc})") from None
    if not container.streams.audio:
        container.close()
        return None
    chunks = _resampled(container, container.streams.audio[0], os.fspath(path))
    try:
        first_time, first = next(chunks)
    except StopIteration:  # a track that decodes to nothing: no speech either
        return Audio(start_s=0.0, chunks=iter(()))
    except av.FFmpegError as exc:
        container.close()
        raise InputError(f"{path}: the audio track cannot be decoded ({exc})") from None
    samples = itertools.chain([first], (chunk for _, chunk in chunks))
    return Audio(start_s=first_time - video_start_s, chunks=samples)


def _resampled(container: Any, stream: Any, path: str) -> Iterator[tuple[float, np.ndarray]]:
    """(the first decoded frame's time in seconds, the samples at 16 kHz mono float32), frame by
    frame; the container is closed when the stream ends or the reader stops. A track that
    breaks off (a cut-off file) ends there, with a warning: what was heard is still said."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    stream.thread_type = "AUTO"
    first_time: float | None = None
    heard = 0
    try:
        try:
            for frame in decoded(container, stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in resampler.resample(frame):
                    heard += out.samples
                    yield first_time or 0.0, out.to_ndarray().reshape(-1)
        except av.FFmpegError as exc:
            if first_time is None:
                raise
            log.warning("%s: the audio track breaks off after %.1f s (%s); transcribed up to "
                        "there", path, heard / SAMPLE_RATE, exc)
        for out in resampler.resample(None):
            yield first_time or 0.0, out.to_ndarray().reshape(-1)
    finally:
        container.close()


class _Window:
    """The samples not yet transcribed: at most one window plus one decoded frame."""

    def __init__(self, chunks: Iterator[np.ndarray], size: int) -> None:
        self.chunks = chunks
        self.size = size
        self.samples = np.zeros(0, dtype=np.float32)
        self.start = 0  # samples from the track's first one to ``samples[0]``
        self.ended = False

    def fill(self) -> np.ndarray:
        """The next window's samples (fewer than ``size`` only at the end of the track)."""
        parts = [self.samples]
        have = len(self.samples)
        while have < self.size and not self.ended:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.ended = True
            else:
                parts.append(chunk)
                have += len(chunk)
        if len(parts) > 1:
            self.samples = np.concatenate(parts)
        return self.samples[:self.size]

    @property
    def last(self) -> bool:
        """Whether the window :meth:`fill` gave holds the rest of the track."""
        return self.ended and len(self.samples) <= self.size

    def advance(self, samples: int) -> None:
        self.samples = self.samples[samples:]
        self.start += samples


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    """One timed line of a window, seconds from the window's start."""

    start_s: float
    end_s: float
    text: str


class SpeechModel:
    """A loaded Whisper checkpoint with its feature extractor and tokenizer; load once, use for
    many videos."""

    def __init__(self, *, id: str, revision: str | None, path: Path, device: str, dtype: str,
                 quantization: str, network: Any, feature_extractor: Any,
                 tokenizer: Any) -> None:
        self.id = id
        self.revision = revision
        self.path = path
        self.device = device
        self.dtype = dtype
        self.quantization = quantization
        self.network = network
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.window_samples = int(feature_extractor.n_samples)  # 30 s
        self.timestamp_begin = int(network.generation_config.no_timestamps_token_id) + 1

    def __repr__(self) -> str:
        return (f"SpeechModel(id={self.id!r}, device={self.device}, dtype={self.dtype}, "
                f"quantization={self.quantization})")

    @classmethod
    def load(cls, model: str | None = None, *, device: str | None = None,
             dtype: str | None = None, quantize: str | None = None) -> SpeechModel:
        """Load a Whisper hub id or local folder (``ModelError``, one line, when it cannot be had).

        The model is found as ``--model`` finds a SmolVLM (:func:`videovlm.model.resolve`) and
        runs where and how :func:`videovlm.model.pick_runtime` says (int8 Linear layers on the
        CPU by default: :func:`videovlm.model._quantize_int8`, measured in
        benchmarks/results/asr.md)."""
        from videovlm.model import _load_dtype, _quantize_int8, _read_json

        model_id = model or default_asr_model_id()
        folder, revision = resolve(model_id, option="--asr-model", example=DEFAULT_ASR_MODEL)
        config = _read_json(folder / "config.json")
        if config.get("model_type") != "whisper":
            raise ModelError(f"{model_id} is a {config.get('model_type')!r} model; --asr-model "
                             "takes a Whisper checkpoint (model_type whisper), e.g. "
                             f"{DEFAULT_ASR_MODEL}")
        dev, dt, quant = pick_runtime(device, dtype, quantize)

        import torch
        from transformers import AutoTokenizer, WhisperFeatureExtractor
        from transformers import WhisperForConditionalGeneration as Whisper

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            features = WhisperFeatureExtractor.from_pretrained(folder)
            network = Whisper.from_pretrained(folder,
                                              dtype=getattr(torch, _load_dtype(config, dt, quant)))
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load {model_id}: {first}") from None
        if getattr(network.generation_config, "no_timestamps_token_id", None) is None:
            raise ModelError(f"{model_id}: its generation_config.json has no "
                             "no_timestamps_token_id, so it cannot give timestamps")
        if quant == "int8":
            _quantize_int8(network, getattr(torch, dt), sorted(folder.glob("*.safetensors")))
        network.to(dev).eval()
        return cls(id=model_id, revision=revision, path=folder, device=dev, dtype=dt,
                   quantization=quant, network=network, feature_extractor=features,
                   tokenizer=tokenizer)

    def info(self) -> dict[str, Any]:
        """What produced a transcript (for a result's provenance)."""
        return {"id": self.id, "revision": self.revision, "device": self.device,
                "dtype": self.dtype, "quantization": self.quantization}

    def cues(self, path: str | os.PathLike[str], *, info: VideoInfo | None = None,
             language: str | None = None, **generation: Any) -> Iterator[Cue]:
        """The speech of ``path`` as cues on the frames' clock, window by window, as they come.

        ``info``: a probe already made (else the video is probed, for its first frame's time).
        ``language``: a Whisper language (``en``, ``french``...); None detects it per window.
        ``generation``: more ``generate`` arguments (benchmarks fix ``max_new_tokens``). A video
        with no audio track gives no cue and logs one warning.
        """
        language = self.language_code(language)
        info = info or probe(path)
        audio = open_audio(path, info.start_s)
        if audio is None:
            log.warning("%s: no audio track: nothing to transcribe", path)
            return
        window = _Window(audio.chunks, self.window_samples)
        while True:
            samples = window.fill()
            if not len(samples):
                return
            heard_s = len(samples) / SAMPLE_RATE
            segments, closed_s = self._window(samples, language, generation)
            offset_s = audio.start_s + window.start / SAMPLE_RATE
            for seg in segments:
                start_s, end_s = max(0.0, offset_s + seg.start_s), offset_s + min(seg.end_s,
                                                                                 heard_s)
                if seg.text and seg.start_s < heard_s and end_s > start_s:
                    yield Cue(start_s=round(start_s, 3), end_s=round(end_s, 3), text=seg.text)
            if closed_s is not None and MIN_ADVANCE_S <= closed_s < heard_s:
                window.advance(round(closed_s * SAMPLE_RATE))  # the cut-off line, again
            elif window.last:
                return
            else:
                window.advance(len(samples))

    def language_code(self, language: str | None) -> str | None:
        """``language`` as Whisper's code (``fr`` for ``French`` too); a language this model
        does not know is one line, before any work."""
        if language is None:
            return None
        from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

        code = language.strip().lower()
        code = TO_LANGUAGE_CODE.get(code, code)
        known = getattr(self.network.generation_config, "lang_to_id", None) or {}
        if code not in LANGUAGES or f"<|{code}|>" not in known:
            raise VideoVLMError(f"unknown speech language {language!r}: give a Whisper language "
                                "code such as en, fr, de, es, ja or zh (or its English name)")
        return code

    def transcribe(self, path: str | os.PathLike[str], *, info: VideoInfo | None = None,
                   language: str | None = None, **generation: Any) -> list[Cue]:
        """:meth:`cues`, all of them, in time order."""
        return list(self.cues(path, info=info, language=language, **generation))

    def _window(self, samples: np.ndarray, language: str | None,
                generation: dict[str, Any]) -> tuple[list[_Segment], float | None]:
        """One window through Whisper with timestamps: its segments, and where the next window
        should start when the last line was cut off by the window's end (None: it was not)."""
        import torch

        features = self.feature_extractor(samples, sampling_rate=SAMPLE_RATE,
                                          return_tensors="pt").input_features
        # transformers runs the encoder once more for the no-speech probability, and once more
        # to detect the language when none is given; handing it encoder_outputs instead of
        # features breaks its no-speech detector (transformers 5.24), so it gets the features
        with torch.inference_mode(), _transformers_errors_only():
            out = self.network.generate(
                input_features=features.to(self.device, getattr(torch, self.dtype)),
                return_timestamps=True, return_segments=True, force_unique_generate_call=True,
                task="transcribe", language=language, no_speech_threshold=NO_SPEECH_THRESHOLD,
                logprob_threshold=LOGPROB_THRESHOLD, temperature=0.0, **generation)
        found = out["segments"][0] if out.get("segments") else []
        segments = [_Segment(float(s["start"]), float(s["end"]),
                             self.tokenizer.decode(s["tokens"], skip_special_tokens=True).strip())
                    for s in found]
        closed = None
        if found:
            tokens = found[-1]["tokens"].tolist()
            # transformers ends a cut-off window's last segment with its closing timestamp pair
            if len(tokens) >= 2 and min(tokens[-2:]) >= self.timestamp_begin:
                closed = segments[-1].end_s
        return segments, closed


@contextlib.contextmanager
def _transformers_errors_only() -> Iterator[None]:
    """transformers' warnings off for a while: Whisper's ``generate`` warns about arguments it
    passes to itself (a deprecation in its own code), which is no news for our users."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def transcribe(path: str | os.PathLike[str], model: SpeechModel | str | None = None, *,
               info: VideoInfo | None = None, language: str | None = None,
               device: str | None = None, dtype: str | None = None,
               quantize: str | None = None) -> list[Cue]:
    """The speech of ``path`` as :class:`Cue` on the frames' clock: the one-call form.

    ``model``: a loaded :class:`SpeechModel` (reuse one across videos), or an ``ID|PATH`` to
    load (default :func:`default_asr_model_id`). No audio track: no cues, one warning.
    """
    if not isinstance(model, SpeechModel):
        model = SpeechModel.load(model, device=device, dtype=dtype, quantize=quantize)
    return model.transcribe(path, info=info, language=language)


_loaded: dict[str, SpeechModel] = {}
"""The speech models this process has loaded, by ``ID|PATH``: a batch's CPU stage transcribes
video after video with one model, loaded on first use."""


def shared_model(model: str | None = None) -> SpeechModel:
    """The speech-recognition model ``model`` (``ID|PATH``; None: the default), loaded once per
    process with the CPU stage's defaults (device, dtype, int8 on the CPU)."""
    key = model or default_asr_model_id()
    if key not in _loaded:
        _loaded[key] = SpeechModel.load(model)
    return _loaded[key]


def speech_dialogue(path: str | os.PathLike[str], info: VideoInfo,
                    settings: DialogueSettings) -> Dialogue:
    """``--transcribe``: the audio track's speech as the video's dialogue (the cues subtitles
    would give, from :meth:`SpeechModel.transcribe`), with where it came from. The source
    keeps every cue (``transcript``) so the outputs can write ``<name>.transcript.srt``; speech
    after the last frame is cut at the video's end, like every time on the frames' clock. A
    video without audio has a dialogue of no cues (one warning said)."""
    model = shared_model(settings.asr_model)
    end = info.duration_s  # sound after the last frame (an audio track's padding) is cut there
    cues = [Cue(c.start_s, min(c.end_s, end), text) for c in model.transcribe(
        path, info=info, language=settings.asr_language)
        if (text := clean_text(c.text)) and c.start_s < end]
    log.info("%s: %d cues of speech from %s", Path(path).name, len(cues), model.id)
    return Dialogue(cues, {"kind": "speech", "model": model.id, "revision": model.revision,
                           "language": settings.asr_language,
                           "transcript": [c.to_dict() for c in cues]})
