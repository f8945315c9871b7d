"""The real stages of a batch: :func:`videovlm.api.stage_video` on the CPU side (a short
video's frames, or a long one's windows, found once), and :func:`videovlm.api.run_model` with the
questions each video is asked on the model side (a long video's windows decoded one at a time
there, each finished one kept in its progress file beside its outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videovlm.api import VideoInputs, WindowedVideo, run_model, stage_video
from videovlm.batch.inputs import Job, output_location
from videovlm.batch.questions import Questions
from videovlm.model import Model
from videovlm.pipelines import Recipe
from videovlm.result import Result
from videovlm.run import Asker
from videovlm.windows import progress_path


@dataclass
class VideoStages:
    """The real stages of a batch, picklable so Ray can ship them: ``cpu`` is
    :func:`videovlm.api.stage_video`, ``model`` is one :func:`videovlm.api.run_model` per video
    with all its questions, open ones under ``recipe`` and those with choices under
    ``choice_recipe``, so the video is encoded once and the record holds every answer with its
    own settings.

    With ``out_dir`` a long video's finished windows are kept in ``<its outputs>.progress.json``
    (:func:`progress_file`), so a batch killed in the middle of a one-hour video resumes at its
    window; the :class:`~videovlm.batch.Recorder` removes the file once the record is written.
    ``resume=False`` (``--no-resume``) starts every video's windows over.
    """

    recipe: Recipe  # describing, or asking open questions
    image_size: int
    n: int | None = None
    backend: str | None = None
    questions: Questions | None = None
    choice_recipe: Recipe | None = None  # for questions with choices; defaults to ``recipe``
    out_dir: Path | None = None
    resume: bool = True

    def cpu(self, job: Job) -> VideoInputs | WindowedVideo:
        return stage_video(job.path, self.recipe, n=self.n, image_size=self.image_size,
                           backend=self.backend)

    def model(self, model: Model, job: Job, inputs: VideoInputs | WindowedVideo,
              asker: Asker | None = None) -> Result:
        asked = self.questions.for_input(job.input) if self.questions is not None else []
        if isinstance(inputs, WindowedVideo):
            where = progress_file(self.out_dir, job) if self.out_dir is not None else None
            if where is not None and not self.resume:
                where.unlink(missing_ok=True)
            return run_model(model, inputs, self.recipe, asker=asker, progress_file=where)
        if not asked:
            return run_model(model, inputs, self.recipe, asker=asker)
        return run_model(model, inputs, self.recipe, questions=[q.question for q in asked],
                         question_choices=[list(q.choices) if q.choices else None
                                           for q in asked],
                         choice_recipe=self.choice_recipe, asker=asker)


def progress_file(out_dir: Path, job: Job) -> Path:
    """Where a long video's finished windows wait, beside the outputs they become."""
    folder, stem = output_location(out_dir, job.input)
    return progress_path(folder, stem)
