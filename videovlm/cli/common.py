"""What the commands that run the model share: their options, logging, model loading, how a
questions file's problems are said, and the loop that runs videos one by one and puts each result
where the user asked.

Declared once here so that ``describe``, ``ask``, ``run`` and ``batch`` cannot drift apart: the
same option reads the same in every ``--help``, and a failure is reported the same way whichever
command met it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm

from videovlm.batch.log import RETRY_FAILED
from videovlm.cache import cache_dir
from videovlm.dialogue import AUTO, NONE, read_subtitle_file
from videovlm.errors import DiskFullError, VideoVLMError
from videovlm.files import check_output_folder
from videovlm.interrupts import Interrupts, exit_code, signum_of
from videovlm.model import QUANTIZATIONS, Model
from videovlm.pack import timestamp_text
from videovlm.pipelines import KEY_SECTION, SCHEMA
from videovlm.questions import QuestionsFileError
from videovlm.sheet import contact_sheet
from videovlm.speech import DEFAULT_ASR_MODEL, SpeechModel, shared_model
from videovlm.windows import Span, progress_path
from videovlm.writers import parse_formats, write

if TYPE_CHECKING:
    from videovlm.result import Result

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


# -- options ------------------------------------------------------------------------------------


def _stack(*options: Decorator) -> Decorator:
    """Apply click options so they show in ``--help`` in the order given."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


device_option = click.option("--device", default=None, metavar="auto|cuda|cuda:N|mps|cpu",
                             help="Where the model runs [default: cuda > mps > cpu].")
dtype_option = click.option("--dtype", default=None, metavar="auto|bfloat16|float16|float32",
                            help="Model weights' type [default: bfloat16 on GPU, float32 on CPU].")
quantize_option = click.option(
    "--quantize", type=click.Choice(QUANTIZATIONS), default=None,
    help="int8: dynamic int8 Linear layers (CPU; ~2x faster); none: the weights as loaded "
         "[default: auto, int8 on the CPU, none on a GPU].")


def model_options_for(frames_help: str) -> Decorator:
    """The model options, with ``-n``'s help saying what the command's frame budget covers (the
    whole video, each window of a long one, or each window of ``find``)."""
    return _stack(
        click.option("--model", "model_id", metavar="ID|PATH", default=None,
                     help="Hub id or local checkpoint folder [default: $VIDEOVLM_MODEL or "
                          "HuggingFaceTB/SmolVLM-Instruct]."),
        device_option,
        dtype_option,
        click.option("-n", "--frames", "n", type=click.IntRange(min=1), default=None,
                     help=frames_help),
        quantize_option,
        click.option("--no-cache", "no_cache", is_flag=True,
                     help="Neither read nor store encoded frames in the frame cache "
                          "[default: $VIDEOVLM_CACHE, $XDG_CACHE_HOME/videovlm or "
                          "~/.cache/videovlm]."),
    )


model_options = model_options_for("Frame budget for the whole video, or each window of a long "
                                  "one [default: the recipe's, 50].")
"""The options every command that runs the model shares: --model, --device, --dtype, -n,
--quantize, --no-cache."""


_METAVARS = {"subtitles": "auto|none|FILE", "subtitle_lang": "LANG"}
asr_options = _stack(
    click.option("--asr-model", "asr_model_id", metavar="ID|PATH", default=None,
                 help=f"Speech-recognition model: a Whisper hub id or local checkpoint folder "
                      f"[default: $VIDEOVLM_ASR_MODEL or {DEFAULT_ASR_MODEL}]."),
    click.option("--asr-language", metavar="CODE", default=None,
                 help="The language spoken (en, fr, ...) [default: detected per 30 s window]."),
)
"""The speech-recognition options (--asr-model, --asr-language): ``transcribe``'s, and those of
every command that takes ``--transcribe``."""


def schema_options(*keys: str) -> Decorator:
    """Click options for recipe keys, derived from the schema (``--max-new-tokens`` ...).

    Derived rather than written out so that an option's choices, bounds and help are the ones a
    recipe file is checked against. Defaults are ``None`` ("the recipe's value"); the schema's
    default is shown in the help.
    """
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for key in reversed(keys):
            opt = SCHEMA[KEY_SECTION[key]][key]
            kind: Any
            if opt.choices is not None:
                kind = click.Choice(opt.choices)
            elif opt.type is int:
                kind = click.IntRange(min=opt.min, max=opt.max)
            elif opt.type is float:
                kind = click.FloatRange(min=opt.min, max=opt.max)
            else:
                kind = opt.type
            shown = "" if opt.default is None else f", {opt.default}"
            f = click.option(f"--{key.replace('_', '-')}", key, type=kind, default=None,
                             metavar=_METAVARS.get(key),
                             help=f"{opt.help[:1].upper()}{opt.help[1:]} [default: the "
                                  f"recipe's{shown}].")(f)
        return f

    return decorate


backend_option = schema_options("backend")
"""``--backend``: the decoder, a recipe override like any other."""

_DIALOGUE_KEYS = ("subtitles", "subtitle_lang", "transcribe", "asr_model_id", "asr_language")


def resume_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--resume/--no-resume`` (``what`` it skips) and ``--retry-failed``, for the commands
    that fill an OUTDIR/results.jsonl; the command receives one ``resume``: True, False or
    :data:`~videovlm.batch.RETRY_FAILED` (see :func:`videovlm.batch.prepare_run`)."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            retry = kwargs.pop("retry_failed")
            kwargs["resume"] = RETRY_FAILED if retry and kwargs["resume"] else kwargs["resume"]
            return f(*args, **kwargs)

        return _stack(
            click.option("--resume/--no-resume", default=True, show_default=True,
                         help=f"Skip {what} already recorded in OUTDIR/results.jsonl; "
                              "--no-resume redoes all."),
            click.option("--retry-failed", is_flag=True,
                         help="Also redo the videos whose record is an error (a crash or a "
                              "missing file since fixed); the others stay skipped."),
        )(command)

    return decorate


def dialogue_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--subtitles auto|none|FILE``, ``--subtitle-lang``, ``--transcribe`` and the speech
    model's options: the dialogue every command that runs the model shows it. The command
    receives them as one ``dialogue`` mapping, for :func:`dialogue_overrides`."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        kwargs["dialogue"] = {k: kwargs.pop(k) for k in _DIALOGUE_KEYS}
        return f(*args, **kwargs)

    return _stack(
        schema_options("subtitles", "subtitle_lang"),
        click.option("--transcribe", is_flag=True, default=None,
                     help="Speech recognition (Whisper) on the audio track: its timed text is "
                          "the dialogue, instead of subtitles; also written as "
                          "<name>.transcript.srt."),
        asr_options,
    )(command)


def dialogue_overrides(dialogue: dict[str, Any], *, one_video: bool = True) -> dict[str, Any]:
    """The recipe overrides of :func:`dialogue_options`, checked now: a subtitle FILE read (a
    missing or garbled one fails before the model loads; one video's, so refused for a folder
    or a server), and with ``--transcribe`` the speech model loaded (a missing one is one
    line before any work)."""
    subtitles, lang = dialogue["subtitles"], dialogue["subtitle_lang"]
    if subtitles is not None and subtitles.strip().lower() in (AUTO, NONE):
        subtitles = subtitles.strip().lower()
    elif subtitles is not None:
        if not one_video:
            raise VideoVLMError(f"--subtitles {subtitles}: a subtitle file belongs to one "
                                "video; for many, use auto (clip.srt, clip.en.vtt... next to "
                                "each video, or a stream inside it) or none")
        read_subtitle_file(subtitles)
    transcribe = dialogue["transcribe"] or None
    asr_model, asr_language = dialogue["asr_model_id"], dialogue["asr_language"]
    if (asr_model or asr_language) and not transcribe:
        raise VideoVLMError("--asr-model and --asr-language choose how --transcribe hears the "
                            "audio: add --transcribe")
    if transcribe:
        _hub_bars(False)  # no "Loading weights" bar in a log (a terminal still shows it)
        speech = shared_model(asr_model)
        speech.language_code(asr_language)
    return {"subtitles": subtitles, "subtitle_lang": lang, "transcribe": transcribe,
            "asr_model": asr_model, "asr_language": asr_language}

batch_size_option = click.option(
    "--batch-size", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
    help="Videos whose prompts decode together in one batched call (a GPU runs 8-32 for the "
         "price of one; on a CPU it pays little). Not with an int8 model: it runs one at a "
         "time (--quantize none batches).")

quiet_option = click.option(
    "--quiet", is_flag=True,
    help="No progress or notes on stderr (warnings, errors and a batch's summary stay).")

window_option = click.option(
    "--window", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
    help="Cut a video longer than SECONDS into windows of SECONDS, each described from its own "
         "-n frames, then summarise them (0: never) [default: the recipe's, 300 s windows for "
         "videos over 600 s].")

stream_option = click.option(
    "--stream", is_flag=True,
    help="Print each segment on stdout as a JSON line as soon as it is made (a long video's "
         "window by window); without -o the result follows as one JSON line.")

formats_option = click.option(
    "-f", "--format", "formats", default=None, metavar="json,srt,vtt,md,html",
    help="Output formats, comma-separated, or all [default: the recipe's outputs].")


def output_option(help: str, *, required: bool = False) -> Decorator:
    """``-o/--output DIR``; the help differs by command (optional folder or required one).

    The one place every command's output folder is checked: one that cannot be made or
    written (read-only, under a file, no permission) is refused in one line as the options are
    read, before a model loads or a frame is decoded."""
    return click.option("-o", "--output", "out_dir", required=required, metavar="DIR",
                        type=click.Path(path_type=Path), default=None, help=help,
                        callback=_writable_folder)


def _writable_folder(ctx: click.Context, param: click.Parameter, value: Path | None
                     ) -> Path | None:
    return None if value is None else check_output_folder(value)


def recipe_option(default: str) -> Decorator:
    """``--recipe NAME|FILE.toml``; ``default`` says which recipe runs without it."""
    return click.option("--recipe", default=None, metavar="NAME|FILE.toml",
                        help=f"Recipe to run [default: {default}].")


# -- logging, model, progress -------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (a test's capture, a redirected stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("videovlm: %(levelname)s: %(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(quiet: bool) -> None:
    """Warnings (and, unless quiet, progress notes) on stderr, one line each; never stdout."""
    logger = logging.getLogger("videovlm")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


_SHOWN_PROBLEMS = 20  # a wholly wrong file says enough to be fixed without flooding the terminal


def say_problems(exc: QuestionsFileError) -> None:
    """Each problem of a questions file on its own error line (the first twenty, then how many
    more), for a command that checks the whole file before it loads a model."""
    for problem in exc.problems[:_SHOWN_PROBLEMS]:
        click.echo(f"videovlm: error: {problem}", err=True)
    if len(exc.problems) > _SHOWN_PROBLEMS:
        click.echo(f"videovlm: error: ... and {len(exc.problems) - _SHOWN_PROBLEMS} more "
                   "problems", err=True)


def load_model(model_id: str | None, device: str | None, dtype: str | None,
               quiet: bool = False, no_cache: bool = False,
               quantize: str | None = None) -> Model:
    """Load the model once per command, saying which one and where (unless quiet)."""
    _hub_bars(quiet)
    model = Model.load(model_id, device=device, dtype=dtype, quantize=quantize,
                       cache=not no_cache)
    logging.getLogger("videovlm").info("loaded %s on %s (%s, quantization %s)", model.id,
                                       model.device, model.dtype, model.quantization)
    return model


def load_speech_model(model_id: str | None, device: str | None, dtype: str | None,
                      quiet: bool = False, quantize: str | None = None) -> SpeechModel:
    """Load the speech-recognition model once per command, saying which one (unless quiet)."""
    _hub_bars(quiet)
    model = SpeechModel.load(model_id, device=device, dtype=dtype, quantize=quantize)
    logging.getLogger("videovlm").info("loaded %s on %s (%s, quantization %s)", model.id,
                                       model.device, model.dtype, model.quantization)
    return model


def _hub_bars(quiet: bool) -> None:
    """Hugging Face's own "Loading weights" bar off when nobody watches a terminal or
    ``--quiet`` was given: in a log it is noise between our lines."""
    if quiet or not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def stems(videos: Sequence[str]) -> list[str]:
    """Output names from the videos' names, made unique (``x``, ``x-2``) so none overwrites."""
    used: set[str] = set()
    out = []
    for v in videos:
        base = Path(v).stem or "video"
        stem, k = base, 1
        while stem in used:  # "x-2" may be a video's own name: count on until a free one
            k += 1
            stem = f"{base}-{k}"
        used.add(stem)
        out.append(stem)
    return out


def progress(items: Sequence[Any], quiet: bool, desc: str) -> Any:
    """A per-video bar on stderr, only for several videos and only when a person watches."""
    return tqdm(items, desc=desc, unit="video", file=sys.stderr,
                disable=quiet or len(items) < 2 or not sys.stderr.isatty())


# -- running video files ------------------------------------------------------------------------


def output_formats(formats: str | None, out_dir: Path | None, default: Sequence[str]) -> list[str]:
    """The formats to write: ``-f``'s, else ``default`` (the recipe's); ``-f`` without ``-o``
    is refused, since there would be nowhere to write them."""
    if formats is not None and out_dir is None:
        raise VideoVLMError("-f/--format needs an output folder: add -o DIR")
    return parse_formats(formats if formats is not None else default)


@dataclass
class Watch:
    """What one video's run is given by :func:`run_videos`: where its progress file lives and
    who is told of its windows (the bar on stderr, the ``--stream`` lines on stdout). Passed on
    as :func:`videovlm.api.run_recipe`'s keywords (``**watch.kwargs()``)."""

    video: str
    progress_file: Path
    quiet: bool
    stream: bool
    several: bool
    streamed: int = 0
    windows: int = 0  # a long video's windows, and how many are done (kept in the progress file)
    windows_done: int = 0
    _bar: Any = None

    def kwargs(self) -> dict[str, Any]:
        return {"progress_file": self.progress_file, "on_start": self.start,
                "on_window": self.window}

    def start(self, spans: Sequence[Span]) -> None:
        self.windows = len(spans)
        total = spans[-1][1]
        self._bar = tqdm(total=round(total, 3), file=sys.stderr, dynamic_ncols=True,
                         position=1 if self.several else 0, leave=not self.several,
                         desc=self._done_text(0.0, total),
                         bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
                         disable=self.quiet or not sys.stderr.isatty())

    def window(self, i: int, span: Span, record: dict[str, Any]) -> None:
        self.windows_done = i + 1
        for seg in record["segments"]:
            self.segment(seg)
        if self._bar is not None:
            self._say_done(span[1])
            self._bar.update(round(span[1] - span[0], 3))

    def _say_done(self, done_s: float) -> None:
        assert self._bar is not None
        self._bar.set_description_str(self._done_text(done_s, self._bar.total), refresh=False)

    def _done_text(self, done_s: float, total_s: float) -> str:
        return f"{Path(self.video).name} {timestamp_text(done_s)} / {timestamp_text(total_s)}"

    def segment(self, seg: dict[str, Any]) -> None:
        if self.stream:
            click.echo(json.dumps({"video": self.video, **seg}, ensure_ascii=False))
            self.streamed += 1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_file(video: str, out_dir: Path | None, stem: str) -> Path:
    """Where a long video's finished windows are kept until its outputs exist: beside them
    (``out_dir/<stem>.progress.json``), or, for results printed on stdout, in the cache folder
    under a name made from the video's absolute path."""
    if out_dir is not None:
        return progress_path(out_dir, stem)
    digest = hashlib.sha256(os.path.abspath(video).encode("utf-8")).hexdigest()[:16]
    return progress_path(cache_dir() / "progress", f"{stem}-{digest}")


def run_videos(
    videos: Sequence[str],
    run_one: Callable[[str, Watch], Result],
    *,
    desc: str,
    quiet: bool,
    out_dir: Path | None = None,
    formats: Sequence[str] = (),
    sheet: Path | None = None,
    show: Callable[[Result], None] | None = None,
    stream: bool = False,
) -> int:
    """Run ``run_one`` on each video in turn and put each result where the user asked; the exit
    code (0, 1 when some video failed, 130/143 when stopped by Ctrl-C/SIGTERM).

    With ``out_dir`` the results are files ``out_dir/<stem>.<format>``, else they go to stdout:
    through ``show``, or as JSON (indented for one video, one line each for several, so several
    results stay one JSON Lines stream). One video's error is raised, becoming one line and exit
    code 2; among several, a failure is logged and the others still run, since the user asked
    for all of them (a full disk is no video's failure: it stops them all). ``sheet`` also
    writes each video's contact sheet (``sheet_<stem>`` when there are several). ``run_one``
    gets each video's :class:`Watch`: a long video's run keeps its finished windows in the
    watch's progress file, removed here once the result is out (so a killed run, started
    again, resumes), and with ``stream`` every segment is printed as one JSON line as soon as
    it is made; the result then follows as one line too. A first Ctrl-C or SIGTERM finishes the
    video in hand (a long one's window in hand) and stops with one line saying what is kept; a
    second stops at once.
    """
    log = logging.getLogger("videovlm")
    videos = list(videos)
    failed = done = 0
    def say(text: str) -> None:  # even when quiet: how the command ended
        click.echo(f"videovlm: {text}", err=True)

    interrupts = Interrupts(say, "video (a long one's window)")
    with interrupts:
        for video, stem in zip(progress(videos, quiet, desc), stems(videos), strict=True):
            if interrupts.stop:
                break
            watch = Watch(video, progress_file(video, out_dir, stem), quiet, stream,
                          len(videos) > 1)
            try:
                result = run_one(video, watch)
            except DiskFullError:
                raise
            except VideoVLMError as exc:
                if len(videos) == 1:
                    raise
                failed += 1
                log.error("%s", exc if video in str(exc) else f"{video}: {exc}")
                continue
            except KeyboardInterrupt as exc:
                say(_stopped(videos, done + failed, watch))
                return interrupts.exit_code if interrupts.stop else exit_code(signum_of(exc))
            finally:
                watch.close()
            with interrupts.commit():
                _put(result, watch, stem, several=len(videos) > 1, out_dir=out_dir,
                     formats=formats, sheet=sheet, show=show)
            done += 1
    if interrupts.stop and done + failed < len(videos):
        say(_stopped(videos, done + failed, None))
        return interrupts.exit_code
    if failed:
        log.error("%d of %d videos failed", failed, len(videos))
    return 1 if failed else 0


def _put(result: Result, watch: Watch, stem: str, *, several: bool, out_dir: Path | None,
         formats: Sequence[str], sheet: Path | None, show: Callable[[Result], None] | None
         ) -> None:
    """One video's result where the user asked (:func:`run_videos`), then its progress file
    removed: the result is out."""
    log = logging.getLogger("videovlm")
    if watch.stream and not watch.streamed:  # a short video: its segments came all at once
        for seg in result.to_dict()["segments"]:
            watch.segment(seg)
    if sheet is not None:
        target = sheet.with_name(f"{sheet.stem}_{stem}{sheet.suffix}") if several else sheet
        contact_sheet(result.frames, target)
        log.info("wrote %s", target)
    if out_dir is not None:
        for path in write(result, out_dir, formats, stem):
            log.info("wrote %s", path)
    elif show is not None:
        show(result)
    else:
        indent = None if several or watch.stream else 2
        click.echo(json.dumps(result.to_dict(), indent=indent, ensure_ascii=False))
    watch.progress_file.unlink(missing_ok=True)


def _stopped(videos: Sequence[str], finished: int, watch: Watch | None) -> str:
    """The one line a stopped :func:`run_videos` ends with: what is finished, what is kept (a
    long video's finished windows, which the same command picks up) and how to go on."""
    kept = (f"{watch.windows_done} of {watch.windows} windows of {watch.video} are kept in "
            f"{watch.progress_file}" if watch is not None and watch.windows_done else "")
    if len(videos) == 1:
        return (f"stopped: {kept}; run the same command again to go on from there" if kept
                else "stopped before the result was out: run the same command again")
    return (f"stopped: {finished} of {len(videos)} videos finished{'; ' + kept if kept else ''}"
            f"; run the command again with the others, from {videos[finished]} on")
