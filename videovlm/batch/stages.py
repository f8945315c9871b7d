"""The real stages of a batch: :func:`videovlm.api.load_video` on the CPU side, and
:func:`videovlm.api.run_model` with the questions each video is asked on the model side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from videovlm.batch.inputs import Job
from videovlm.batch.questions import Questions
from videovlm.result import Result


@dataclass
class VideoStages:
    """The real stages of a batch, picklable so Ray can ship them: ``cpu`` is
    :func:`videovlm.api.load_video`, ``model`` is :func:`videovlm.api.run_model` (once per
    group of questions sharing their choices, answers merged in the file's order)."""

    recipe: Any  # Recipe: describing, or asking open questions
    image_size: int
    n: int | None = None
    backend: str | None = None
    questions: Questions | None = None
    choice_recipe: Any = None  # Recipe for questions with choices (mcq); defaults to ``recipe``

    def cpu(self, job: Job) -> Any:
        from videovlm.api import load_video

        asking = self.questions is not None and bool(self.questions.for_input(job.input))
        return load_video(job.path, self.recipe, n=self.n, image_size=self.image_size,
                          backend=self.backend, mode="ask" if asking else None)

    def model(self, model: Any, job: Job, inputs: Any) -> Result:
        from videovlm.api import run_model

        asked = self.questions.for_input(job.input) if self.questions is not None else []
        if not asked:
            return run_model(model, inputs, self.recipe)
        groups: dict[tuple[str, ...] | None, list[int]] = {}
        for i, q in enumerate(asked):
            groups.setdefault(q.choices, []).append(i)
        result: Result | None = None
        answers: list[Any] = [None] * len(asked)
        generate_s = 0.0
        for choices, positions in groups.items():
            recipe = self.recipe if choices is None else (self.choice_recipe or self.recipe)
            part = run_model(model, inputs, recipe,
                             questions=[asked[i].question for i in positions],
                             choices=list(choices) if choices else None)
            for i, answer in zip(positions, part.answers, strict=True):
                answers[i] = answer
            generate_s += part.timing_s.get("generate", 0.0)
            if result is None:
                result = part
            else:
                result.warnings.extend(w for w in part.warnings if w not in result.warnings)
        assert result is not None
        result.answers = answers
        if len(groups) > 1:
            timing = dict(result.timing_s)
            timing["total"] = round(timing["total"] - timing["generate"] + generate_s, 4)
            timing["generate"] = round(generate_s, 4)
            result.timing_s = timing
        return result
