"""The frame cache: encoded frames on disk, found again by the next command, never trusted when
damaged or foreign, bounded, and off with --no-cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import EncodedFrames, run_cli
from videovlm.api import ask, describe, load_video
from videovlm.cache import FrameCache, cache_dir, pixels_key
from videovlm.model import Model
from videovlm.pipelines import load_recipe

BIKES = Path(__file__).resolve().parent.parent / "samples" / "bikes.mp4"


@pytest.fixture()
def cache_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("VIDEOVLM_CACHE", str(folder))
    return folder


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("frames/*/*.frame"))


# -- the store on its own ------------------------------------------------------------------------


def test_location_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VIDEOVLM_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("VIDEOVLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "videovlm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path("~/.cache/videovlm").expanduser()


def test_an_entry_is_read_back_only_when_whole_and_its_own(tmp_path) -> None:
    store = FrameCache(tmp_path, "model-a")
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    key = store.key(pixels_key(np.zeros((4, 4, 3), np.uint8)))
    store.put(key, array.tobytes(), (3, 4), "float32")
    assert store.get(key, (3, 4), "float32") == array.tobytes()
    assert store.get(key, (4, 3), "float32") is None  # another shape: not trusted, dropped
    assert not list(tmp_path.glob("*/*.frame"))
    store.put(key, array.tobytes(), (3, 4), "float32")
    (path,) = tmp_path.glob("*/*.frame")

    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the payload
    path.write_bytes(bytes(data))
    assert store.get(key, (3, 4), "float32") is None and not path.exists()  # dropped, redone

    store.put(key, array.tobytes(), (3, 4), "float32")
    path.write_bytes(path.read_bytes()[:-5])  # cut short
    assert store.get(key, (3, 4), "float32") is None

    other = store.key(pixels_key(np.ones((4, 4, 3), np.uint8)))
    store.put(other, array.tobytes(), (3, 4), "float32")
    os.replace(store._path(other), store._path(key))  # another frame's entry under this name
    assert store.get(key, (3, 4), "float32") is None
    assert FrameCache(tmp_path, "model-b").key("x") != store.key("x")  # settings are in the key
    assert store.stats.rejected == 4 and store.stats.hits == 1


def test_the_bound_reads_the_environment_and_trim_clears_what_killed_writers_left(
        tmp_path, monkeypatch) -> None:
    from videovlm.cache import cache_limit_bytes

    monkeypatch.setenv("VIDEOVLM_CACHE_MB", "inf")
    assert cache_limit_bytes() > 2**60  # no bound, not a crash
    monkeypatch.setenv("VIDEOVLM_CACHE_MB", "1.5")
    assert cache_limit_bytes() == int(1.5 * 2**20)
    store = FrameCache(tmp_path, "m")
    store.put(store.key("a"), bytes(10), (10,), "uint8")
    (entry,) = tmp_path.glob("*/*.frame")
    left = entry.parent / f".{entry.name}.0123456789ab.tmp"  # a writer killed mid-write
    left.write_bytes(b"half")
    fresh = entry.parent / f".{entry.name}.ba9876543210.tmp"  # a writer at work right now
    fresh.write_bytes(b"half")
    os.utime(left, (0, 0))
    store.trim()
    assert not left.exists() and fresh.exists() and entry.exists()


def test_the_folder_stays_within_its_bound_least_recently_used_first(tmp_path) -> None:
    payload = bytes(10_000)
    store = FrameCache(tmp_path, "m", limit_bytes=35_000)
    keys = [store.key(str(i)) for i in range(5)]
    for i, key in enumerate(keys[:3]):
        store.put(key, payload, (10_000,), "uint8")
        os.utime(store._path(key), ns=(i * 10**9, i * 10**9))  # oldest first
    assert store.get(keys[0], (10_000,), "uint8") is not None  # used again: now the newest
    for key in keys[3:]:
        store.put(key, payload, (10_000,), "uint8")
    store.trim()
    left = {p.stem for p in tmp_path.glob("*/*.frame")}
    assert sum(p.stat().st_size for p in tmp_path.glob("*/*.frame")) <= 35_000
    assert keys[0] in left and keys[1] not in left  # the least recently used went first
    # later writes of this process are counted, so the bound holds without a walk per call
    for i in range(5, 9):
        store.put(store.key(str(i)), payload, (10_000,), "uint8")
        store.trim()
        assert sum(p.stat().st_size for p in tmp_path.glob("*/*.frame")) <= 35_000


# -- with the real model -------------------------------------------------------------------------


def test_a_second_command_skips_the_vision_tower_for_frames_already_encoded(
        tiny_idefics3, cache_folder) -> None:
    first = Model.load(str(tiny_idefics3))
    with EncodedFrames(first) as cold:
        timeline = describe(BIKES, model=first, mode="timeline", n=6)
    n = len(timeline.sampling["frames"])
    assert cold.frames == n
    assert timeline.cache == {"hits": 0, "encoded": n, "rejected": 0, "unstored": 0}
    assert len(entries(cache_folder)) == n

    again = Model.load(str(tiny_idefics3))  # the next command: a new process's model
    with EncodedFrames(again) as warm:
        answered = ask(BIKES, ["What moves?"], model=again, n=6)
    assert warm.frames == 0
    assert answered.cache == {"hits": n, "encoded": 0, "rejected": 0, "unstored": 0}
    assert answered.sampling["frames"] == timeline.sampling["frames"]

    uncached = Model.load(str(tiny_idefics3), cache=False)
    fresh = ask(BIKES, ["What moves?"], model=uncached, n=6)
    assert [a.answer for a in fresh.answers] == [a.answer for a in answered.answers]
    assert fresh.cache is None

    # a damaged entry is recomputed, and only that one
    victim = entries(cache_folder)[0]
    victim.write_bytes(victim.read_bytes()[:100])
    with EncodedFrames(again) as repaired:
        r = ask(BIKES, ["Where?"], model=again, n=6)
    assert repaired.frames == 1
    assert r.cache == {"hits": n - 1, "encoded": 1, "rejected": 1, "unstored": 0}

    # the checkpoint's image preprocessing is part of the key: changed, nothing is reused
    config = tiny_idefics3 / "preprocessor_config.json"
    original = config.read_text()
    try:
        settings = json.loads(original)
        settings["image_mean"] = [0.4, 0.5, 0.6]
        config.write_text(json.dumps(settings))
        r = ask(BIKES, ["Where?"], model=Model.load(str(tiny_idefics3)), n=6)
        assert r.cache["hits"] == 0 and r.cache["encoded"] == n
    finally:
        config.write_text(original)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_cached_features_are_the_vision_towers(tiny_smolvlm, cache_folder, quantize) -> None:
    """What the cache gives back is, bit for bit, the vision tower's encoding of that frame
    alone; unquantized, it also equals encoding all the frames in one batch (int8 scales its
    activations per call, which is why frames are encoded one at a time)."""
    model = Model.load(str(tiny_smolvlm), quantize=quantize)
    inputs = load_video(BIKES, load_recipe("qa"), n=3, image_size=model.image_size)
    computed = model.image_features(inputs.images)
    read = Model.load(str(tiny_smolvlm), quantize=quantize).image_features(inputs.images)
    with torch.inference_mode():
        alone = [torch.cat(model.network.get_image_features(
            pixel_values=model._pixels([image])).pooler_output) for image in inputs.images]
        batch = torch.cat(model.network.get_image_features(
            pixel_values=model._pixels(inputs.images)).pooler_output)
    for a, b, c, d in zip(computed, read, alone, batch.reshape(len(computed), *computed[0].shape),
                          strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
        if quantize == "none":
            assert torch.allclose(a, d, atol=1e-5)


def test_identical_frames_are_encoded_once(tiny_idefics3, cache_folder) -> None:
    model = Model.load(str(tiny_idefics3), cache=False)
    rng = np.random.default_rng(0)
    still = rng.integers(0, 255, (model.image_size, model.image_size, 3), dtype=np.uint8)
    other = rng.integers(0, 255, still.shape, dtype=np.uint8)
    with EncodedFrames(model) as seen:
        feats = model.image_features([still, still.copy(), other, still])
    assert seen.frames == 2
    assert torch.equal(feats[0], feats[1]) and torch.equal(feats[0], feats[3])
    assert not torch.equal(feats[0], feats[2])


def test_no_cache_neither_reads_nor_writes(tiny_idefics3, cache_folder, tmp_path, capsys) -> None:
    args = ["ask", str(BIKES), "-q", "What moves?", "-n", "3", "--model", str(tiny_idefics3),
            "--json", "--quiet"]
    assert run_cli([*args, "--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["cache"] is None
    assert not entries(cache_folder)
    assert run_cli(args) == 0
    assert json.loads(capsys.readouterr().out)["cache"]["encoded"] == 3
    assert len(entries(cache_folder)) == 3
