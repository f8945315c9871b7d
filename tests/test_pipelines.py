"""Recipes load with their defaults, and every mistake in one is a clear one-line RecipeError."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import QA_PROMPTS
from videovlm.errors import RecipeError
from videovlm.pipelines import (
    SCHEMA,
    default,
    list_recipes,
    load_recipe,
    recipe_names,
)
from videovlm.scenes import SceneSettings
from videovlm.tasks import TASKS

REPO_PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path_or_name: str | Path) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path_or_name)
    message = str(info.value)
    assert "\n" not in message, "a recipe error must be one line"
    return message


def test_builtins_one_per_task_with_defaults_filled() -> None:
    assert recipe_names() == ["describe", "eval_cinepile", "eval_videomme",
                              "eval_videomme_subtitles", "find", "mcq", "qa",
                              "timeline"]
    recipes = {r.name: r for r in list_recipes()}
    assert {r.task for r in recipes.values()} == set(TASKS)
    for r in recipes.values():
        assert r.description and "\n" not in r.description
        # the built-ins ship every prompt their task can use, optional ones included
        task = TASKS[r.task]
        assert set(r.prompts) == {*task.prompts, *task.optional_prompts}
        assert set(r.sampling) == set(SCHEMA["sampling"])
        assert 1 <= r.sampling["n"] <= 1000
        assert r.generation["do_sample"] is False
        assert r.outputs and "json" in r.outputs
        assert Path(r.path).is_file()
    describe = recipes["describe"]
    SceneSettings(**describe.scenes)  # the [scenes] table feeds detect_scenes as is
    assert describe.scenes["detector"] == "adaptive"
    assert recipes["qa"].scenes == {}
    assert recipes["qa"].windows == {} and set(recipes["find"].windows) == set(SCHEMA["windows"])
    # one [windows] table: its length_s is the describing tasks' window and find's
    assert describe.windows["length_s"] == 300.0 and recipes["find"].windows["length_s"] == 10.0
    # in this editable checkout the built-ins are the repo's own files
    assert Path(describe.path).resolve() == (REPO_PIPELINES / "describe.toml").resolve()


def test_prompts_fill_their_placeholders() -> None:
    timeline = load_recipe("timeline")
    text = timeline.prompt("task", duration="00:30")
    assert "MM:SS - MM:SS:" in text and "00:30" in text and "{" not in text
    mcq = load_recipe("mcq")
    text = mcq.prompt("question", question="What colour?", options="A. red\nB. blue")
    assert "What colour?" in text and "B. blue" in text and "letter" in text
    summary = load_recipe("describe").prompt("summary", descriptions="00:00 - 00:05: a dog",
                                             duration="00:05")
    assert "00:00 - 00:05: a dog" in summary
    with pytest.raises(RecipeError, match=r"no prompts\.scene"):
        mcq.prompt("scene")


def test_user_recipe_by_path_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, f'task = "qa"\n[sampling]\nn = 8\n{QA_PROMPTS}')
    r = load_recipe(path)
    assert r.name == "mine" and r.task == "qa" and r.path == str(path)
    assert r.sampling == {"n": 8, "backend": "auto", "seek": "exact", "fit": "squash"}
    assert r.generation["max_new_tokens"] == default("max_new_tokens")
    assert "temperature" not in r.generation  # unset optional generation keys stay out
    assert r.outputs == ["json"]


def test_extends_a_builtin(tmp_path: Path) -> None:
    path = write(tmp_path, 'extends = "describe"\ndescription = "mine"\n[sampling]\nn = 12\n'
                 '[prompts]\nscene = "What happens from {start} to {end}?"\n')
    r = load_recipe(path)
    base = load_recipe("describe")
    assert r.name == "mine" and r.task == "describe" and r.extends == "describe"
    assert r.sampling["n"] == 12 and r.sampling["seek"] == base.sampling["seek"]
    assert r.prompts["scene"] == "What happens from {start} to {end}?"
    assert r.prompts["summary"] == base.prompts["summary"]
    assert r.scenes == base.scenes and r.generation == base.generation


def test_family_prompts_and_what_a_recipe_built_on_one_keeps(tmp_path: Path) -> None:
    """The built-ins give SmolVLM2 its own intro; a recipe that rewrites the intro gets its own
    text shown to every family (the parent's family text for that prompt goes), unless it
    writes a family table itself; prompts it leaves alone keep the parent's family texts."""
    base = load_recipe("qa")
    assert "You are provided" in base.prompt("intro", family="smolvlm", n_frames=3,
                                             frames_in_words="three", duration_hms="0:00:10")
    assert base.prompt("intro", family="idefics3", n_frames=3).startswith("These 3 frames")
    mine = load_recipe(write(tmp_path, 'extends = "qa"\n[prompts]\nintro = "My {n_frames}."\n'))
    assert mine.prompt("intro", family="smolvlm", n_frames=3) == "My 3."
    assert "smolvlm" not in mine.family_prompts
    kept = load_recipe(write(tmp_path, 'extends = "qa"\nname = "k"\n[prompts]\n'
                             'question = "{question}?"\n'))
    assert kept.family_prompts == base.family_prompts
    own = load_recipe(write(tmp_path, 'extends = "qa"\nname = "o"\n[prompts]\nintro = "Mine."\n'
                            '[prompts.smolvlm]\nintro = "Yours, {frames_in_words}."\n'))
    assert own.prompt("intro", family="smolvlm", frames_in_words="two") == "Yours, two."
    with pytest.raises(RecipeError, match=r"prompts\.smolvlm\.scene"):
        load_recipe(write(tmp_path, 'extends = "qa"\nname = "b"\n[prompts.smolvlm]\n'
                          'scene = "x"\n'))


def test_extends_with_another_task(tmp_path: Path) -> None:
    path = write(tmp_path, 'extends = "describe"\ntask = "timeline"\n'
                 '[prompts]\ntask = "List the events as MM:SS - MM:SS: text lines."\n')
    r = load_recipe(path)
    assert r.task == "timeline" and r.scenes == {}
    # the describe summary carries over: a timeline may have one (optional)
    assert set(r.prompts) == {"intro", "task", "summary", "dialogue"}
    assert r.prompts["intro"] == load_recipe("describe").prompts["intro"]
    assert r.prompts["summary"] == load_recipe("describe").prompts["summary"]
    # a prompt no task of this kind uses is still dropped
    path = write(tmp_path, 'extends = "describe"\ntask = "qa"\n'
                 '[prompts]\nquestion = "{question}"\n', "qa_from_describe.toml")
    assert set(load_recipe(path).prompts) == {"intro", "question", "dialogue"}


def test_timeline_summary_is_optional(tmp_path: Path) -> None:
    timeline = load_recipe("timeline")
    assert "{descriptions}" in timeline.prompts["summary"]
    text = timeline.prompt("summary", descriptions="00:00-00:04: a dog runs", duration="00:04")
    assert "00:00-00:04: a dog runs" in text and "{" not in text
    bare = write(tmp_path, 'task = "timeline"\n[prompts]\nintro = "{n_frames} frames"\n'
                 'task = "List MM:SS - MM:SS: text lines."\n')
    assert set(load_recipe(bare).prompts) == {"intro", "task"}


def test_extends_a_relative_file_and_loops(tmp_path: Path) -> None:
    write(tmp_path, 'extends = "qa"\n[generation]\nmax_new_tokens = 20\n', "base.toml")
    r = load_recipe(write(tmp_path, 'extends = "base.toml"\n[sampling]\nn = 3\n'))
    assert (r.task, r.sampling["n"], r.generation["max_new_tokens"]) == ("qa", 3, 20)
    write(tmp_path, 'extends = "b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\n', "b.toml")
    assert "loops" in error_of(tmp_path / "a.toml")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('task = "qa"\n[sampling]\nnn = 8\n' + QA_PROMPTS,
         "unknown key sampling.nn — did you mean 'n'"),
        ('task = "qa"\n[sampleing]\nn = 8\n' + QA_PROMPTS, "did you mean 'sampling'"),
        ('task = "qa"\n[generation]\nmax_tokens = 8\n' + QA_PROMPTS,
         "did you mean 'max_new_tokens'"),
        ('task = "qa"\n[sampling]\nn = "50"\n' + QA_PROMPTS, "sampling.n must be an integer"),
        ('task = "qa"\n[sampling]\nn = true\n' + QA_PROMPTS, "sampling.n must be an integer"),
        ('task = "qa"\n[sampling]\nn = 0\n' + QA_PROMPTS, "sampling.n must be between 1 and 1000"),
        ('task = "qa"\n[sampling]\nn = 1001\n' + QA_PROMPTS, "between 1 and 1000, got 1001"),
        ('task = "qa"\n[sampling]\nbackend = "ffmpeg"\n' + QA_PROMPTS,
         "'ffmpeg' is not one of auto, av"),
        ('task = "qa"\n[generation]\ndo_sample = "no"\n' + QA_PROMPTS, "true or false"),
        ('task = "qa"\n[outputs]\nformats = ["json", "pdf"]\n' + QA_PROMPTS, "'pdf' is not one"),
        ('task = "qa"\n[outputs]\nformats = "json"\n' + QA_PROMPTS, "list of strings"),
        ('task = "quiz"\n' + QA_PROMPTS, "'quiz' is not one of describe, timeline, qa, mcq"),
        ('[sampling]\nn = 8\n' + QA_PROMPTS, 'missing `task = "..."`'),
        ('task = "qa"\nsampling = 3\n' + QA_PROMPTS, "sampling must be a table"),
        ('task = "qa"\n[prompts]\nintro = "x"\n',
         "task 'qa' needs prompts.question (with {question})"),
        ('task = "qa"\n[prompts]\nintro = "x"\nquestion = "Answer it."\n',
         "prompts.question must contain {question}"),
        ('task = "mcq"\n' + QA_PROMPTS, "must contain {options}"),
        ('extends = "timeline"\n[prompts]\nsummary = "Summarise it."\n',
         "prompts.summary must contain {descriptions}"),
        ('extends = "timeline"\n[prompts]\nsummary = " "\n',
         "prompts.summary is empty: write one (with {descriptions}) or remove the key"),
        ('extends = "timeline"\n[prompts]\nsumary = "{descriptions}"\n',
         "did you mean 'summary'"),
        ('task = "describe"\n[prompts]\nintro = "x"\nsummary = "{descriptions}"\n'
         'scene = "From {strat} to {end}"\n', "unknown placeholder {strat} — did you mean {start}"),
        ('task = "qa"\n[prompts]\nintro = "x {"\nquestion = "{question}"\n', "literal brace"),
        ('task = "qa"\n[prompts]\nintroduction = "x"\nquestion = "{question}"\n',
         "did you mean 'intro'"),
        ('task = "qa"\n[scenes]\ndetector = "content"\n' + QA_PROMPTS,
         '[scenes] only applies to task "describe"'),
        ('extends = "describe"\n[scenes]\ndetector = "magic"\n', "'magic' is not one of adaptive"),
        ('extends = "describe"\n[scenes]\nmin_scene_s = 5.0\nmax_scene_s = 8.0\n',
         "twice min_scene_s"),
        ('task = "qa"\n[sampling\nn = 8\n', "is not valid TOML"),
        ('extends = "descibe"\n', "unknown recipe 'descibe' — did you mean 'describe'"),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    message = error_of(path)
    assert expected in message
    assert str(path) in message or "descibe" in message  # says which file


def test_unknown_names_and_missing_files(tmp_path: Path) -> None:
    assert "did you mean 'timeline'" in error_of("timelne")
    names = ("describe, eval_cinepile, eval_videomme, eval_videomme_subtitles, find, mcq, qa, "
             "timeline")
    assert names in error_of("nothing-like-it")
    assert "not found" in error_of(tmp_path / "absent.toml")


def test_overrides_are_checked_by_the_same_schema() -> None:
    r = load_recipe("describe")
    o = r.with_overrides(n=8, backend=None, formats="srt, json", max_new_tokens=64, threshold=2)
    assert o.sampling["n"] == 8 and o.sampling["backend"] == r.sampling["backend"]
    assert o.outputs == ["srt", "json"] and o.generation["max_new_tokens"] == 64
    assert o.scenes["threshold"] == 2.0
    assert r.sampling["n"] == 50  # the original is untouched
    with pytest.raises(RecipeError, match="between 1 and 1000"):
        r.with_overrides(n=5000)
    with pytest.raises(RecipeError, match="did you mean 'seek'"):
        r.with_overrides(seeek="exact")
    with pytest.raises(RecipeError, match="twice min_scene_s"):
        r.with_overrides(max_scene_s=1.5)


def test_readme_documents_every_key() -> None:
    """pipelines/README.md is the reference for recipe authors: no key may go undocumented."""
    from videovlm.pipelines import PROMPT_KEYS, TOP_KEYS

    readme = (REPO_PIPELINES / "README.md").read_text(encoding="utf-8")
    keys = [*TOP_KEYS, *PROMPT_KEYS, *(k for keys in SCHEMA.values() for k in keys)]
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert not missing, f"document these keys in pipelines/README.md: {missing}"
    assert all(f"`{name}`" in readme for name in recipe_names())


def test_windows_table_belongs_to_describing_tasks_and_find(tmp_path: Path) -> None:
    for task in ("describe", "timeline", "find"):
        path = tmp_path / f"{task}.toml"
        path.write_text(f'extends = "{task}"\n[windows]\nlength_s = 5\n')
        assert load_recipe(str(path)).windows["length_s"] == 5.0
    path = tmp_path / "qa.toml"
    path.write_text('extends = "qa"\n[windows]\nlength_s = 5\n')
    with pytest.raises(RecipeError, match=r'\[windows\] only applies to task "describe" or '
                                          r'"timeline" or "find", not \'qa\''):
        load_recipe(str(path))
    with pytest.raises(RecipeError, match="is not run in windows"):
        load_recipe("mcq").with_overrides(length_s=5.0)
