"""The task table: every task videovlm runs, what it needs, and the runner that does it.

A task is what a recipe's ``task = "..."`` names. Its entry says which built-in recipe runs it
by default, its mode (how the CPU stage picks and groups frames: ``scenes``, ``timeline`` or
``ask``), whether it takes questions and whether they are multiple choice, which prompts a
recipe for it must hold, and its runner: a function from a :class:`~videovlm.run.ModelRun` to a
:class:`~videovlm.result.Result`. The API, the CLI, batch, eval and the recipe checks look a task
up here; no other module names one, so adding a task is an entry in :data:`TASKS` and its
runner. Evaluation protocols (:data:`PROTOCOLS`) are kept beside them: each is a recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from videovlm import relevance
from videovlm.errors import VideoVLMError
from videovlm.model import Model
from videovlm.pack import text_tokens, timestamp_text
from videovlm.result import Answer, Relevance, Result, Segment
from videovlm.run import ModelRun, generation_settings
from videovlm.text import choice_letters, extract_choice, parse_segments
from videovlm.windows import window_spans

Runner = Callable[[ModelRun], Result]


@dataclass(frozen=True)
class Task:
    """One row of the task table."""

    name: str
    recipe: str  # the built-in recipe that runs it when none is named
    mode: str  # how frames are picked and grouped: "scenes" | "timeline" | "ask" | "windows"
    questions: bool  # takes questions (-q, a questions file)
    choices: bool  # its questions are multiple choice (options lettered A, B, ...)
    runner: Runner
    help: str
    # a long video runs window by window (the recipe's [windows]), each window through the
    # runner, then ``finish`` once over the combined result (a summary of every window's)
    windowed: bool = False
    finish: Callable[[ModelRun, Result], None] | None = None
    # prompts a recipe for this task must hold, each with the placeholders it must contain
    prompts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # prompts used when the recipe has them (same rule for their placeholders)
    optional_prompts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def describes(self) -> bool:
        """Whether the task describes the video (``videovlm describe``) rather than answers."""
        return not self.questions


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: the recipe whose prompt the benchmark's questions are put in."""

    name: str
    recipe: str
    help: str


# -- the runners --------------------------------------------------------------------------------


def _lines(segments: Sequence[Segment]) -> list[str]:
    return [f"{timestamp_text(s.start_s)}-{timestamp_text(s.end_s)}: {s.text}" for s in segments]


def summarise(run: ModelRun, segments: Sequence[Segment], n_frames: int) -> str | None:
    """The recipe's summary from the segments' text: text-only calls, no second pass over the
    frames. None when the recipe has no summary prompt.

    One call when every description fits one prompt with room for the answer (every short
    video: one call, as ever). Otherwise hierarchically: the descriptions are cut into
    consecutive groups that each fit, every group is summarised with the same prompt, and the
    group summaries (each labelled with its group's time range) are summarised in turn, until
    one prompt holds them all. Tokens are counted exactly, with the model's own tokenizer and
    chat template (:func:`~videovlm.pack.text_tokens`).
    """
    if not run.recipe.has_prompt("summary"):
        return None
    room = run.model.context - int(run.generation["max_new_tokens"])

    def prompt(lines: Sequence[str]) -> str:
        return run.fill("summary", n_frames, descriptions="\n".join(lines))

    def fits(lines: Sequence[str]) -> bool:
        return text_tokens(run.model, prompt(lines)) <= room

    items = [(s.start_s, s.end_s, line) for s, line in zip(segments, _lines(segments),
                                                            strict=True)]
    while len(items) > 1 and not fits([line for _, _, line in items]):
        groups: list[list[tuple[float, float, str]]] = [[]]
        for item in items:
            if groups[-1] and not fits([line for _, _, line in [*groups[-1], item]]):
                groups.append([])
            groups[-1].append(item)
        if len(groups) == len(items):
            raise VideoVLMError(
                f"the summary prompt cannot hold two descriptions within the model's context of "
                f"{run.model.context} tokens: shorten prompts.summary or lower max_new_tokens")
        items = []
        for group in groups:
            text = run.generate_text(prompt([line for _, _, line in group])).strip()
            start, end = group[0][0], group[-1][1]
            items.append((start, end, f"{timestamp_text(start)}-{timestamp_text(end)}: {text}"))
    return run.generate_text(prompt([line for _, _, line in items]))


def _summary(run: ModelRun, segments: Sequence[Segment]) -> str | None:
    """The whole video's summary, or None for one window of a longer video (its ``finish``
    summarises every window's segments at once)."""
    return None if run.windowed else summarise(run, segments, run.frames_used)


def finish_describing(run: ModelRun, result: Result) -> None:
    """What a describing task does once every window of a long video is done: the summary of
    all their segments."""
    result.summary = summarise(run, result.segments, len(result.sampling.get("frames", [])))


def describe_scenes(run: ModelRun) -> Result:
    """One prompt per scene with that scene's frames, then the summary of the scenes."""
    segments = []
    for group in run.inputs.groups:
        task = run.fill("scene", len(group.frames), start=timestamp_text(group.start_s),
                        end=timestamp_text(group.end_s))
        prompt, frames = run.prompt(group, task)
        text = run.generate(prompt).strip()
        segments.append(Segment(group.start_s, group.end_s, text, [f.index for f in frames],
                                run.transcript(group.start_s, group.end_s)))
    return run.result(segments=segments, summary=_summary(run, segments))


def describe_timeline(run: ModelRun) -> Result:
    """One prompt with every frame; the model writes the timeline, read back into segments."""
    group = run.inputs.whole()
    prompt, frames = run.prompt(group, run.fill("task", len(group.frames),
                                                start=timestamp_text(group.start_s),
                                                end=timestamp_text(group.end_s)))
    segments, parsed = parse_segments(run.generate(prompt), group.end_s, group.start_s)
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        seg.frames = [f.index for f in frames
                      if seg.start_s <= f.time_s < seg.end_s or (last and f.time_s == seg.end_s)]
        seg.transcript = run.transcript(seg.start_s, seg.end_s)
    summary = _summary(run, segments)
    if not parsed:
        run.warn("the model's timeline had no usable times: one segment holds its whole text")
    return run.result(segments=segments, segments_parsed=parsed, summary=summary)


def check_user_text(model: Model, texts: Sequence[str]) -> None:
    """Refuse questions or options that hold the model's control tokens (``<image>``,
    ``<end_of_utterance>``...): they would be read as markup, not as words."""
    special = [t for t in model.tokenizer.all_special_tokens if len(t) > 2]
    for text in texts:
        hit = next((t for t in special if t in text), None)
        if hit:
            raise VideoVLMError(f"{text!r} contains {hit}, one of the model's control tokens: "
                                "reword it without that text")


def check_takes_questions(recipe: str, task: str, questions: Sequence[str], how: str = ""
                          ) -> None:
    """Refuse questions for a recipe whose task answers none, naming the recipes that do
    (``how``: what the caller's user does first, e.g. "drop -q, or ")."""
    if questions and not get(task).questions:
        raise VideoVLMError(f"recipe {recipe!r} ({task}) takes no questions: {how}run the "
                            f"{for_questions(False).recipe} or {for_questions(True).recipe} "
                            "recipe")


def answer_questions(run: ModelRun) -> Result:
    """Every question continues from one encoding of the frames (the intro and the frames of
    the run's recipe), each with its own options and its own recipe's question prompt and
    generation settings. Questions are answered together per recipe and option count (a
    multiple-choice fallback letter must be one of theirs).

    A multiple-choice answer's ``choice`` is the letter its text commits to, else the letter
    the model scores highest at the answer's first token, from the same pass (small models
    ramble); ``choice_source`` says which. When a question ran under another recipe than the
    run's, every answer also records its recipe and generation settings.
    """
    asked = run.questions
    if not asked:
        raise VideoVLMError(f"recipe {run.recipe.name!r} asks questions: give at least one "
                            "with -q")
    check_user_text(run.model, [*(a.question for a in asked),
                                *(o for a in asked for o in a.options or [])])
    group = run.inputs.whole()

    def task(i: int) -> str:
        a = asked[i]
        opts = a.options or []
        shown = "\n".join(
            a.recipe.prompt("option", family=run.model.family, letter=ltr, text=opt)
            if a.recipe.has_prompt("option") else f"{ltr}. {opt}"
            for ltr, opt in zip(choice_letters(opts), opts, strict=True))
        return run.fill("question", len(group.frames), recipe=a.recipe, question=a.question,
                        options=shown, subtitles=run.subtitles(a, group))

    tasks = [task(i) for i in range(len(asked))]
    recipes = []  # distinct recipes, in order of first use
    for a in asked:
        if a.recipe not in recipes:
            recipes.append(a.recipe)
    settings = [generation_settings(r) for r in recipes]
    which = [recipes.index(a.recipe) for a in asked]
    # one prefix for every question: room for the longest question and the longest answer
    tokenizer = run.model.tokenizer
    longest = max(tasks, key=lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]))
    prompt, _ = run.prompt(group, longest, max_new_tokens=max(
        int(s["max_new_tokens"]) for s in settings))
    prefix = run.encode(prompt)

    batches: dict[tuple[int, int], list[int]] = {}  # (recipe, option count) -> positions
    for i, a in enumerate(asked):
        batches.setdefault((which[i], len(a.options or [])), []).append(i)
    texts: list[str] = [""] * len(asked)
    picks: list[str | None] = [None] * len(asked)
    sources: list[str | None] = [None] * len(asked)
    logits: list[str | None] = [None] * len(asked)
    for (r, count), positions in batches.items():
        letters = choice_letters(asked[positions[0]].options or []) if count else None
        out = run.answer(prefix, prompt, [tasks[i] for i in positions], settings[r], letters)
        for i, reply in zip(positions, out, strict=True):
            texts[i] = reply.text
            if count:
                said = extract_choice(reply.text, asked[i].options or [])
                picks[i], logits[i] = said or reply.choice, reply.choice
                sources[i] = "text" if said else ("logits" if reply.choice else None)
    # the answers' own recipe and settings are recorded whenever they are not the run's: two
    # recipes, or multiple-choice questions only, asked under the choice recipe
    mixed = any(r != run.recipe for r in recipes)
    answers = [Answer(question=a.question, answer=texts[i], choices=a.options, choice=picks[i],
                      choice_source=sources[i], choice_logits=logits[i],
                      recipe=a.recipe.name if mixed else None,
                      generation=dict(settings[which[i]]) if mixed else None)
               for i, a in enumerate(asked)]
    return run.result(answers=answers)


def check_query(model: Model | None, query: str) -> str:
    """``query`` stripped, or one line saying what is wrong with it (empty, or holding the
    model's control tokens: checked when ``model`` is given)."""
    text = query.strip()
    if not text:
        raise VideoVLMError('the query is empty: say what to look for, e.g. "a red car"')
    if model is not None:
        check_user_text(model, [text])
    return text


def find_ranges(run: ModelRun) -> Result:
    """Every window of the recipe's length scored for the run's one question, the query
    (:func:`videovlm.relevance.score_windows`), then the windows at or above the threshold
    merged into ranges, each with its peak window's middle frame. The ranges are also the result's
    segments (one subtitle cue each); ``relevance`` holds every window's score."""
    if len(run.questions) != 1:
        raise VideoVLMError(f"recipe {run.recipe.name!r} looks for one query at a time: give "
                            f"exactly one (got {len(run.questions)})")
    query = check_query(run.model, run.questions[0].question)
    settings = run.recipe.windows
    spans = window_spans(run.inputs.info, float(settings["length_s"]))
    windows = relevance.score_windows(run, spans, query)
    ranges = relevance.merge_ranges(windows, float(settings["score_threshold"]))
    relevance.best_frames(run, ranges)
    segments = [Segment(r.start_s, r.end_s, f"{query}: {r.peak_score:.0%} at "
                        f"{timestamp_text(r.peak_start_s)}-{timestamp_text(r.peak_end_s)}",
                        [] if r.best_frame is None else [r.best_frame]) for r in ranges]
    found = Relevance(query=query, threshold=float(settings["score_threshold"]),
                      window_s=float(settings["length_s"]),
                      frames_per_window=int(run.inputs.sampling["requested"]),
                      windows=windows, ranges=ranges)
    return run.result(segments=segments, relevance=found)


# -- the table ----------------------------------------------------------------------------------

_DIALOGUE = {"dialogue": ("text",)}
"""Every task may show the dialogue after each frame (``prompts.dialogue``, with ``{text}``)."""
_SUBTITLES = {"no_subtitles": ()}
"""A question prompt may show the subtitles in one block instead (``{subtitles}``); this is
what the block says when the video has none (Video-MME's "No subtitles available")."""

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("describe", recipe="describe", mode="scenes", questions=False, choices=False,
         runner=describe_scenes,
         help="find the cuts, describe each scene from its frames, then summarise",
         windowed=True, finish=finish_describing,
         prompts={"intro": (), "scene": (), "summary": ("descriptions",)},
         optional_prompts=_DIALOGUE),
    Task("timeline", recipe="timeline", mode="timeline", questions=False, choices=False,
         runner=describe_timeline,
         help="one prompt with every frame; the model writes the timeline",
         windowed=True, finish=finish_describing,
         prompts={"intro": (), "task": ()},
         optional_prompts={"summary": ("descriptions",), **_DIALOGUE}),
    Task("qa", recipe="qa", mode="ask", questions=True, choices=False,
         runner=answer_questions, help="free-form questions about the video",
         prompts={"intro": (), "question": ("question",)},
         optional_prompts={**_DIALOGUE, **_SUBTITLES}),
    Task("mcq", recipe="mcq", mode="ask", questions=True, choices=True,
         runner=answer_questions, help="multiple-choice questions, answered with a letter",
         prompts={"intro": (), "question": ("question", "options")},
         # how one option is shown (default "A. text"): CinePile's "- A) text"
         optional_prompts={**_DIALOGUE, **_SUBTITLES, "option": ("letter", "text")}),
    Task("find", recipe="find", mode="windows", questions=True, choices=False,
         runner=find_ranges,
         help="when is the query visible: every short window scored, the high ones as ranges",
         prompts={"intro": (), "query": ("query",)}),
)}
FIND_TASK = "find"
"""What ``videovlm find`` runs."""
DEFAULT_TASK = "describe"
"""What ``videovlm describe`` and ``videovlm batch`` run when no recipe is named."""

DESCRIBE_MODES: tuple[str, ...] = tuple(t.mode for t in TASKS.values() if t.describes)
"""``videovlm describe --mode``'s choices: each picks the describing task with that mode."""

CINEPILE, VIDEOMME = "cinepile", "videomme"
"""The benchmarks ``videovlm eval-convert`` reads (:mod:`videovlm.convert`), named as the
protocols their questions run under."""

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol(VIDEOMME, "eval_videomme", "Video-MME's own instruction, frames only"),
    Protocol("videomme_subtitles", "eval_videomme_subtitles",
             "Video-MME with the subtitle lines said at the sampled frames (the question's "
             "subtitle_file, else a sidecar .srt)"),
    Protocol(CINEPILE, "eval_cinepile",
             "CinePile's prompt with the scene's subtitles (the question's subtitles field)"),
    Protocol("plain", "mcq", "the mcq recipe"),
)}
DEFAULT_PROTOCOL = VIDEOMME


def get(name: str) -> Task:
    """The task ``name`` (a recipe's ``task``, checked when the recipe loaded)."""
    if name not in TASKS:
        raise VideoVLMError(f"unknown task {name!r}: use {', '.join(TASKS)}")
    return TASKS[name]


def for_mode(mode: str) -> Task:
    """The describing task whose mode is ``mode`` (``describe --mode``)."""
    for t in TASKS.values():
        if t.describes and t.mode == mode:
            return t
    raise VideoVLMError(f"unknown mode {mode!r}: use {' or '.join(DESCRIBE_MODES)}")


def for_questions(choices: bool) -> Task:
    """The task that answers questions with options (``choices``) or without."""
    return next(t for t in TASKS.values() if t.questions and t.choices == choices)


def protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise VideoVLMError(f"unknown protocol {name!r}: use {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
