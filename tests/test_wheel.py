"""The recipes ship inside the wheel: built, installed in a fresh venv, found from anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _build_wheel(out: Path) -> Path:
    """``python -m build --wheel`` (isolated, fetches hatchling); without network, a plain
    ``pip wheel`` with the build backend already installed."""
    try:
        subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
                       check=True, capture_output=True, timeout=300)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.importorskip("hatchling", reason="cannot build: no network and no hatchling")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("videovlm-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel installed (no deps); the dependencies come from this
    environment's site-packages through a .pth path line, which (unlike this environment's own
    .pth files) does not bring the editable checkout along."""
    base = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(base / "dist")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], check=True, capture_output=True,
                               text=True).stdout.strip())
    (site / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "--quiet", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    return env_dir


def _run(env_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_recipes_load_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    code = ("import json, videovlm, videovlm.pipelines as p\n"
            "r = p.load_recipe('describe')\n"
            "print(json.dumps({'file': videovlm.__file__, 'path': r.path, 'task': r.task,\n"
            "                  'names': p.recipe_names()}))")
    done = _run(installed, [str(python), "-c", code], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    package = Path(facts["file"]).parent
    assert package.is_relative_to(installed), "must import the wheel, not the checkout"
    assert Path(facts["path"]) == package / "pipelines" / "describe.toml"
    assert facts["task"] == "describe"
    # every recipe of the repo's pipelines/ folder, and only those
    assert facts["names"] == sorted(p.stem for p in (ROOT / "pipelines").glob("*.toml"))
    assert "find" in facts["names"]
    assert (package / "pipelines" / "README.md").is_file()
    assert (package / "serve" / "page.html").is_file()  # serve's page ships with the package


def test_videovlm_pipelines_and_run_from_the_wheel(
    installed: Path, tmp_path: Path, tiny_idefics3: Path
) -> None:
    exe = installed / "bin" / "videovlm"
    listed = _run(installed, [str(exe), "pipelines"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == sorted(
        p.stem for p in (ROOT / "pipelines").glob("*.toml"))

    clip = tmp_path / "bikes.mp4"
    shutil.copy(ROOT / "samples" / "bikes.mp4", clip)
    ran = _run(installed, [str(exe), "run", "timeline", clip.name, "-o", "out", "-n", "2",
                           "--max-new-tokens", "2", "--model", str(tiny_idefics3), "--quiet"],
               cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    result = json.loads((tmp_path / "out" / "bikes.json").read_text())
    assert result["prompt"]["recipe"] == "timeline"
    written = {p.suffix for p in (tmp_path / "out").iterdir()}
    assert {".json", ".md", ".srt", ".vtt"} <= written  # the recipe's outputs (md adds a sheet)
