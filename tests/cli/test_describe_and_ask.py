"""`videovlm describe` and `videovlm ask` end to end, with both tiny checkpoint families.

Run in-process through the real entry point (``videovlm.cli.main``: the same error handling and
exit codes as the console script), except the no-hub case, which runs the installed command in a
fresh process so the environment and the absence of a traceback are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import srt
import webvtt
from PIL import Image

from tests.conftest import SAMPLES
from tests.helpers import run_cli_output as run
from videovlm.probe import probe

BIKES = str(SAMPLES / "bikes.mp4")
WORLD = str(SAMPLES / "world.mp4")


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Built-in recipes with short answers (random weights never stop on their own)."""
    tmp = tmp_path_factory.mktemp("cli_recipes")
    out = {}
    for name in ("describe", "timeline", "qa", "mcq"):
        path = tmp / f"{name}.toml"
        path.write_text(f'extends = "{name}"\n[generation]\nmax_new_tokens = 6\n')
        out[name] = str(path)
    return out


def _check_result(d: dict, *, requested: int = 50) -> None:
    info = probe(d["video"]["path"])
    frames = d["sampling"]["frames"]
    assert 1 <= len(frames) <= requested == d["sampling"]["requested"]
    assert all(0 <= f["time_s"] < info.duration_s for f in frames)
    assert 0 < d["prompt"]["tokens"] <= d["prompt"]["budget"]
    assert d["model"]["context"] - d["generation"]["max_new_tokens"] == d["prompt"]["budget"]
    for s in d["segments"]:
        assert 0 <= s["start_s"] < s["end_s"] <= info.duration_s + 1e-6
        assert isinstance(s["text"], str)


@pytest.mark.parametrize(("family", "mode"), [("idefics3", "scenes"), ("smolvlm", "timeline")])
def test_describe_writes_files_that_agree(capsys, tmp_path, recipes, request, family, mode):
    ckpt = str(request.getfixturevalue(f"tiny_{family}"))
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "describe", BIKES, "--model", ckpt, "--mode", mode,
                            "--recipe", recipes["describe" if mode == "scenes" else "timeline"],
                            "-o", str(out), "-f", "json,srt,vtt,md,html", "-n", "12")
    assert code == 0, err
    assert stdout == ""  # files were asked for: nothing on stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bikes.html", "bikes.json", "bikes.md", "bikes.srt", "bikes.vtt",
                     "bikes_sheet.jpg"]
    d = json.loads((out / "bikes.json").read_text())
    _check_result(d, requested=12)
    assert d["mode"] == mode and d["model"]["family"] == family
    segs = [round(t * 1000) for s in d["segments"] for t in (s["start_s"], s["end_s"])]
    cues = list(srt.parse((out / "bikes.srt").read_text(encoding="utf-8")))
    assert [round(t.total_seconds() * 1000) for c in cues for t in (c.start, c.end)] == segs
    vtt = webvtt.read(str(out / "bikes.vtt")).captions
    assert [t.in_milliseconds() for c in vtt for t in (c.start_time, c.end_time)] == segs
    if mode == "scenes":
        assert len(segs) > 1 and d["summary"] is not None


def test_describe_prints_json_and_logs_only_on_stderr(capsys, tiny_idefics3, recipes):
    code, stdout, err = run(capsys, "describe", BIKES, "--model", str(tiny_idefics3),
                            "--recipe", recipes["timeline"], "-n", "6")
    assert code == 0, err
    d = json.loads(stdout)  # the whole of stdout is one JSON document
    _check_result(d, requested=6)
    assert len(d["sampling"]["frames"]) == 6
    assert "loaded" in err


def test_describe_several_videos_one_line_each_and_one_model(capsys, tiny_smolvlm, recipes):
    code, stdout, err = run(capsys, "describe", BIKES, WORLD, "--model", str(tiny_smolvlm),
                            "--recipe", recipes["timeline"], "-n", "4", "--quiet")
    assert code == 0, err
    lines = stdout.splitlines()
    assert len(lines) == 2
    paths = [json.loads(line)["video"]["path"] for line in lines]
    assert paths == [BIKES, WORLD]
    assert "loaded" not in err  # --quiet


@pytest.mark.allow_error_logs  # among several videos, one that fails is logged as an ERROR
def test_describe_several_videos_logs_a_failure_and_runs_the_others(capsys, tiny_smolvlm,
                                                                     recipes, bad_inputs):
    bad = str(bad_inputs["text"])  # a file named .mp4: it exists, so it fails only when read
    code, stdout, err = run(capsys, "describe", BIKES, bad, WORLD, "--model", str(tiny_smolvlm),
                            "--recipe", recipes["timeline"], "-n", "4", "--quiet")
    assert code == 1
    assert [json.loads(line)["video"]["path"] for line in stdout.splitlines()] == [BIKES, WORLD]
    errors = [ln for ln in err.splitlines() if ln.startswith("videovlm: ERROR: ")]
    assert len(errors) == 2 and bad in errors[0]
    assert errors[1] == "videovlm: ERROR: 1 of 3 videos failed"
    assert "Traceback" not in err


def test_describe_sheet(capsys, tmp_path, tiny_idefics3, recipes):
    sheet = tmp_path / "s.png"
    code, stdout, err = run(capsys, "describe", BIKES, "--model", str(tiny_idefics3),
                            "--recipe", recipes["timeline"], "-n", "9", "--sheet", str(sheet))
    assert code == 0, err
    assert Image.open(sheet).format == "PNG"
    assert len(json.loads(stdout)["sampling"]["frames"]) == 9


def test_budget_path_reduces_frames_and_warns(capsys, tmp_path, recipes):
    from videovlm.testing import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "ctx2k", "smolvlm", "tiny", context=2048)
    code, stdout, err = run(capsys, "describe", BIKES, "--model", str(ckpt), "--mode",
                            "timeline", "--recipe", recipes["timeline"], "-n", "200")
    assert code == 0, err
    d = json.loads(stdout)
    k = len(d["sampling"]["frames"])
    assert 1 < k < 200 and d["sampling"]["requested"] == 200
    assert d["prompt"]["tokens"] <= d["prompt"]["budget"]
    warning = [ln for ln in err.splitlines() if "WARNING" in ln and "re-planned" in ln]
    assert len(warning) == 1 and f"with {k} frames" in warning[0]
    assert d["warnings"] and f"with {k} frames" in d["warnings"][0]


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_ask_one_answer_per_question(capsys, recipes, request, family):
    ckpt = str(request.getfixturevalue(f"tiny_{family}"))
    code, stdout, err = run(capsys, "ask", BIKES, "-q", "What happens?", "-q", "Who is there?",
                            "--model", ckpt, "-n", "8", "--recipe", recipes["qa"], "--json")
    assert code == 0, err
    d = json.loads(stdout)
    assert [a["question"] for a in d["answers"]] == ["What happens?", "Who is there?"]
    assert all(isinstance(a["answer"], str) and a["choice"] is None for a in d["answers"])
    _check_result(d, requested=8)


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_ask_multiple_choice_gives_a_valid_letter(capsys, recipes, request, family):
    ckpt = str(request.getfixturevalue(f"tiny_{family}"))
    code, stdout, err = run(capsys, "ask", BIKES, "-q", "What is in the video?",
                            "--choices", "cyclists", "--choices", "a boat",
                            "--choices", "an empty room", "--model", ckpt, "-n", "8",
                            "--recipe", recipes["mcq"])
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == "Q: What is in the video?"
    assert lines[1].startswith("A: ")
    choice = [ln for ln in lines if ln.startswith("Choice: ")]
    assert len(choice) == 1
    letter, text = choice[0][len("Choice: "):].split(". ", 1)
    assert (letter, text) in [("A", "cyclists"), ("B", "a boat"), ("C", "an empty room")]


@pytest.mark.parametrize(("args", "message"), [
    (["describe", "nope.mp4", "-o", "{out}"], "nope.mp4"),
    (["describe", BIKES, "-f", "json"], "needs an output folder"),
    (["describe", BIKES, "-o", "{out}", "-f", "json,docx"], "unknown output format 'docx'"),
    (["describe", BIKES, "--sheet", "{out}/s.gif"], "s.gif"),
    (["describe", BIKES, "--recipe", "qa"], "videovlm ask"),
    (["ask", BIKES, "-q", "Q?", "--choices", "only one"], "at least two --choices"),
    (["ask", BIKES, "-q", " "], "empty"),
])
def test_user_mistakes_are_one_line_exit_2_nothing_written(capsys, tmp_path, tiny_idefics3,
                                                           args, message):
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in args] + ["--model", str(tiny_idefics3)]
    code, stdout, err = run(capsys, *argv)
    assert code == 2
    assert stdout == ""
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0]
    assert errors[0].startswith("videovlm: error: ") and message in errors[0]
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_bad_option_value_is_a_usage_error(capsys):
    code, _, err = run(capsys, "describe", BIKES, "--mode", "chapters")
    assert code == 2 and "chapters" in err


def test_no_hub_access_is_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VIDEOVLM_MODEL"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), NO_COLOR="1")
    exe = Path(sys.executable).with_name("videovlm")
    proc = subprocess.run([str(exe), "describe", BIKES], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "HuggingFaceTB/SmolVLM-Instruct" in lines[0] and "--model PATH" in lines[0]
    assert "Traceback" not in proc.stderr


def test_output_stems_never_repeat() -> None:
    from videovlm.cli.common import stems

    got = stems(["a/x.mp4", "b/x.mp4", "x-2.mp4", "c/x.mkv"])
    assert len(set(got)) == len(got)
    assert got[:2] == ["x", "x-2"]
