"""`videovlm pipelines` lists and shows the recipes; `videovlm run` refuses mistakes in one line
and runs a recipe on a video or a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import QA_PROMPTS
from videovlm.pipelines import load_recipe, recipe_names

REPO_PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


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
    bad = tmp_path / "bad.toml"
    bad.write_text(f'task = "qa"\n[sampling]\nnn = 8\n{QA_PROMPTS}', encoding="utf-8")
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

    from tests.media import make_shots
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
