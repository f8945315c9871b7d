"""``videovlm transcribe``: a video's speech as subtitles, with the speech-recognition model.

The same cues ``--transcribe`` puts beside the frames, on their own: ``-o DIR`` writes
``DIR/<video name>.transcript.<format>``, else the SubRip goes to stdout (so
``videovlm transcribe talk.mp4 > talk.srt`` works). The model is loaded once, after the videos
were checked, so a bad path fails in milliseconds and a missing model in seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from videovlm.cli import cli
from videovlm.cli.common import (
    asr_options,
    device_option,
    dtype_option,
    load_speech_model,
    output_option,
    quantize_option,
    quiet_option,
    setup_logging,
    stems,
)
from videovlm.errors import VideoVLMError
from videovlm.probe import probe
from videovlm.writers import (
    TRANSCRIPT_FORMATS,
    srt_bytes,
    transcript_formats,
    write_transcript,
)


@cli.command()
@click.argument("videos", nargs=-1, required=True)
@output_option("Write DIR/<video name>.transcript.<format> files instead of printing SubRip.")
@click.option("-f", "--format", "formats", default=None,
              metavar=",".join(TRANSCRIPT_FORMATS),
              help="Transcript formats, comma-separated (needs -o) [default: srt].")
@asr_options
@device_option
@dtype_option
@quantize_option
@quiet_option
def transcribe(videos: tuple[str, ...], out_dir: Path | None, formats: str | None,
               asr_model_id: str | None, asr_language: str | None, device: str | None,
               dtype: str | None, quantize: str | None, quiet: bool) -> None:
    """Write what is said in each VIDEO as timed subtitles (speech recognition, Whisper).

    Times are on the frames' clock (seconds from the first frame), as every other output's.
    A video without an audio track gets an empty transcript and a warning.
    """
    setup_logging(quiet)
    log = logging.getLogger("videovlm")
    if formats is not None and out_dir is None:
        raise VideoVLMError("-f/--format needs an output folder: add -o DIR")
    if out_dir is None and len(videos) > 1:
        raise VideoVLMError("several videos need an output folder for their transcripts: "
                            "add -o DIR")
    names = transcript_formats(formats or "srt")
    infos = [probe(v) for v in videos]  # every input checked before the model loads
    model = load_speech_model(asr_model_id, device, dtype, quiet, quantize)
    for info, stem in zip(infos, stems(list(videos)), strict=True):
        began = time.perf_counter()
        cues = model.transcribe(info.path, info=info, language=asr_language)
        log.info("%s: %d lines in %.1f s", info.path, len(cues), time.perf_counter() - began)
        if out_dir is None:
            sys.stdout.write(srt_bytes(cues).decode())
            continue
        about = {"video": info.to_dict(), "model": model.info()}
        for path in write_transcript(cues, out_dir, names, stem, about):
            log.info("wrote %s", path)
