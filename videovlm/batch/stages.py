"""The real stages of a batch: :func:`videovlm.api.load_video` on the CPU side, and
:func:`videovlm.api.run_model` with the questions each video is asked on the model side."""

from __future__ import annotations

from dataclasses import dataclass

from videovlm.api import VideoInputs, load_video, run_model
from videovlm.batch.inputs import Job
from videovlm.batch.questions import Questions
from videovlm.model import Model
from videovlm.pipelines import Recipe
from videovlm.result import Result
from videovlm.run import Asker


@dataclass
class VideoStages:
    """The real stages of a batch, picklable so Ray can ship them: ``cpu`` is
    :func:`videovlm.api.load_video`, ``model`` is one :func:`videovlm.api.run_model` per video
    with all its questions, open ones under ``recipe`` and those with choices under
    ``choice_recipe``, so the video is encoded once and the record holds every answer with its
    own settings."""

    recipe: Recipe  # describing, or asking open questions
    image_size: int
    n: int | None = None
    backend: str | None = None
    questions: Questions | None = None
    choice_recipe: Recipe | None = None  # for questions with choices; defaults to ``recipe``

    def cpu(self, job: Job) -> VideoInputs:
        return load_video(job.path, self.recipe, n=self.n, image_size=self.image_size,
                          backend=self.backend)

    def model(self, model: Model, job: Job, inputs: VideoInputs, asker: Asker | None = None
              ) -> Result:
        asked = self.questions.for_input(job.input) if self.questions is not None else []
        if not asked:
            return run_model(model, inputs, self.recipe, asker=asker)
        return run_model(model, inputs, self.recipe, questions=[q.question for q in asked],
                         question_choices=[list(q.choices) if q.choices else None
                                           for q in asked],
                         choice_recipe=self.choice_recipe, asker=asker)
