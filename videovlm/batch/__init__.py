"""Batch runs over a folder: every video in it, one record each, resumable after any crash.

What lives where:

- :mod:`~videovlm.batch.inputs`: which files are videos (by content), each one's key, and
  where its outputs go inside the output folder.
- :mod:`~videovlm.batch.log`: the output folder as the record of what is done:
  ``results.jsonl``, ``batch.json``'s settings, the folder's lock, and the preparation of a run.
- :mod:`~videovlm.batch.engine`: the local engine (decoding overlapped with generation) and what
  the Ray engine (:mod:`videovlm.batch_ray`) shares with it: the commit step, the report, Ctrl-C
  handling, the progress bar.
- :mod:`~videovlm.batch.questions`: a questions file resolved against the inputs.
- :mod:`~videovlm.batch.stages`: the real stages (``api.load_video``, ``api.run_model``).
- :mod:`~videovlm.batch.together`: several videos' model stages run together, their prompts
  decoded in batched calls (``--batch-size``).

Crash safety rests on one rule: a video is done when, and only when, ``results.jsonl`` holds a
complete line for it. Per-video files are written first (atomically, by the writers), then the
record is appended with a single ``os.write`` of the whole line followed by ``fsync``. A SIGKILL
or power loss can leave at most one torn last line; :meth:`ResultsLog.load` repairs it (the video
is then simply done again). Resuming skips every input that has a complete record, so after any
number of kills and reruns each input ends with exactly one record.
"""

from __future__ import annotations

from videovlm.batch.engine import (
    BatchReport,
    Interrupts,
    ModelBatch,
    Recorder,
    WriteFiles,
    error_result,
    progress_bar,
    run_local,
)
from videovlm.batch.inputs import (
    VIDEO_EXTENSIONS,
    Found,
    Job,
    ensure_inside,
    find_videos,
    output_location,
    sniff_video,
)
from videovlm.batch.log import (
    LOCK_NAME,
    RESULTS_NAME,
    RETRY_FAILED,
    SETTINGS_NAME,
    Prepared,
    ResultsLog,
    prepare_run,
    settings_digest,
)
from videovlm.batch.questions import Question, Questions, load_questions
from videovlm.batch.stages import VideoStages
from videovlm.batch.together import batch_size_for, batched

__all__ = [
    "LOCK_NAME",
    "RESULTS_NAME",
    "RETRY_FAILED",
    "SETTINGS_NAME",
    "VIDEO_EXTENSIONS",
    "BatchReport",
    "Found",
    "Interrupts",
    "Job",
    "ModelBatch",
    "Prepared",
    "Question",
    "Questions",
    "Recorder",
    "ResultsLog",
    "VideoStages",
    "WriteFiles",
    "batch_size_for",
    "batched",
    "ensure_inside",
    "error_result",
    "find_videos",
    "load_questions",
    "output_location",
    "prepare_run",
    "progress_bar",
    "run_local",
    "settings_digest",
    "sniff_video",
]
