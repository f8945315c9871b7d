"""The Ray engine on a local cluster writes the same records as the local engine, and resumes
from records the local engine wrote (same results.jsonl contract)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import FAST_RECIPE, make_small_tree, records, run_cli
from videovlm.batch import RESULTS_NAME

pytest.importorskip("ray.data", reason="the ray extra is not installed: pip install videovlm[ray]")

# what differs between two runs of the same work: when and how fast it ran
_VOLATILE = ("created_at", "timing_s")


def _comparable(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in _VOLATILE}


@pytest.mark.slow
def test_ray_engine_matches_local_engine_and_resumes_its_log(tiny_idefics3, tmp_path, capsys):
    small_tree = make_small_tree(tmp_path / "videos")
    fast_recipe = tmp_path / "fast.toml"
    fast_recipe.write_text(FAST_RECIPE)
    common = [str(small_tree), "--pipeline", str(fast_recipe), "--model", str(tiny_idefics3),
              "-f", "json"]
    local, mixed = tmp_path / "local", tmp_path / "mixed"
    assert run_cli(["batch", "-o", str(local), *common]) == 1  # cut.mp4 fails in both

    assert run_cli(["batch", "-o", str(mixed), "--exclude", "b/*", *common]) == 1
    first = (mixed / RESULTS_NAME).read_bytes()
    assert run_cli(["batch", "-o", str(mixed), "--engine", "ray", *common]) == 1
    err = capsys.readouterr().err
    assert "1 done, 0 failed, 2 skipped (1 failed before: --retry-failed redoes them)" in err
    assert (mixed / RESULTS_NAME).read_bytes().startswith(first)  # resumed: appended only

    by_local = {r["input"]: _comparable(r) for r in records(local)}
    by_ray = {r["input"]: _comparable(r) for r in records(mixed)}
    assert by_ray == by_local
    ray_file = json.loads((mixed / "b" / "x.mp4.json").read_text())
    assert ray_file["segments"] == by_local["b/x.mp4"]["segments"]
