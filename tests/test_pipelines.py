"""Recipes load with their defaults, and every mistake in one is a clear one-line RecipeError."""

from __future__ import annotations

from pathlib import Path

import pytest

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


QA_PROMPTS = '[prompts]\nintro = "{n_frames} frames"\nquestion = "{question}"\n'


def test_builtins_one_per_task_with_defaults_filled() -> None:
    assert recipe_names() == ["describe", "eval_cinepile", "eval_videomme", "mcq", "qa", "timeline"]
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


def test_extends_with_another_task(tmp_path: Path) -> None:
    path = write(tmp_path, 'extends = "describe"\ntask = "timeline"\n'
                 '[prompts]\ntask = "List the events as MM:SS - MM:SS: text lines."\n')
    r = load_recipe(path)
    assert r.task == "timeline" and r.scenes == {}
    # the describe summary carries over: a timeline may have one (optional)
    assert set(r.prompts) == {"intro", "task", "summary"}
    assert r.prompts["intro"] == load_recipe("describe").prompts["intro"]
    assert r.prompts["summary"] == load_recipe("describe").prompts["summary"]
    # a prompt no task of this kind uses is still dropped
    path = write(tmp_path, 'extends = "describe"\ntask = "qa"\n'
                 '[prompts]\nquestion = "{question}"\n', "qa_from_describe.toml")
    assert set(load_recipe(path).prompts) == {"intro", "question"}


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
    names = "describe, eval_cinepile, eval_videomme, mcq, qa, timeline"
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


# -- the CLI: `videovlm pipelines` and `videovlm run` ----------------------------------------


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the real console entry point in-process; (exit code, stdout, stderr)."""
    from videovlm.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_pipelines_lists_and_shows(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["pipelines"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == recipe_names()
    assert all(load_recipe(line.split()[0]).description in line for line in lines)
    code, out, _ = cli(["pipelines", "--show", "mcq"], capsys)
    assert code == 0 and out == (REPO_PIPELINES / "mcq.toml").read_text(encoding="utf-8")
    code, out, _ = cli(["pipelines", "--json"], capsys)
    assert code == 0 and {r["name"] for r in __import__("json").loads(out)} == set(recipe_names())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "descibe", "v.mp4"], "did you mean 'describe'"),
        (["run", "qa", "v.mp4"], "add -q QUESTION"),
        (["run", "describe", "v.mp4", "-q", "why?"], "takes no questions"),
        (["run", "qa", "v.mp4", "-q", "why?", "--choices", "a", "--choices", "b"], "run mcq"),
        (["run", "mcq", "v.mp4", "-q", "why?", "--choices", "a"], "at least two --choices"),
        (["run", "describe", "v.mp4", "-n", "5000"], "option n must be between 1 and 1000"),
        (["run", "describe", "v.mp4", "-f", "json,pdf", "-o", "x"], "unknown output format"),
        (["run", "describe", "v.mp4", "-f", "json"], "needs an output folder"),
        (["run", "describe", "{folder}"], "add -o OUTDIR"),
        (["run", "{bad}", "v.mp4"], "unknown key sampling.nn"),
        (["run", "describe", "{folder}/v.mp4"], "v.mp4: no such file or folder"),
    ],
)
def test_run_mistakes_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    bad = write(tmp_path, f'task = "qa"\n[sampling]\nnn = 8\n{QA_PROMPTS}', "bad.toml")
    args = [a.format(folder=tmp_path, bad=bad) for a in args]
    code, out, err = cli(args, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) in (1, 3) and expected in err  # ours: one line; click's usage: 3 lines
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # nothing written


@pytest.mark.slow
def test_run_describe_and_a_folder_with_a_tiny_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_idefics3: Path
) -> None:
    import json

    from tests.test_scenes import make_shots
    from videovlm.probe import probe
    from videovlm.scenes import detect_scenes

    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    video = make_shots(clips / "a.mp4", [0, 30], 60)
    make_shots(clips / "sub" / "b.mp4", [0, 25], 50)
    model = ["--model", str(tiny_idefics3), "--max-new-tokens", "2", "--quiet"]

    out = tmp_path / "out"
    code, _, _ = cli(["run", "describe", str(video), "-o", str(out), "-n", "4",
                      "-f", "json,srt", *model], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.srt"]
    result = json.loads((out / "a.json").read_text())
    scenes = detect_scenes(probe(video), **load_recipe("describe").scenes)
    assert [(s["start_s"], s["end_s"]) for s in result["segments"]] == scenes
    assert len(scenes) == 2 and result["sampling"]["requested"] == 4
    assert result["generation"]["max_new_tokens"] == 2
    assert result["prompt"]["recipe"] == "describe"

    batch = tmp_path / "batch"
    args = ["run", "qa", str(clips), "-o", str(batch), "-q", "What colour?", "-n", "2", *model]
    code, _, _ = cli(args, capsys)
    assert code == 0
    records = [json.loads(line) for line in (batch / "results.jsonl").read_text().splitlines()]
    assert sorted(r["input"] for r in records) == ["a.mp4", "sub/b.mp4"]
    assert all(r["error"] is None and r["answers"][0]["question"] == "What colour?"
               for r in records)
    code, _, err = cli(args, capsys)  # resumed: nothing redone, still one record each
    assert code == 0 and "2 skipped" in err
    assert len((batch / "results.jsonl").read_text().splitlines()) == 2
