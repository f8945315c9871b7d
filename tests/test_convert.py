"""`videovlm eval-convert` on hand-made files in the benchmarks' exact published schemas
(CinePile's and Video-MME's Hugging Face parquet, written here with pyarrow; the same rows as
JSON and JSON Lines), then the converted files run end to end through `videovlm eval` with the
tiny checkpoint on generated clips, under each protocol, with the prompts read back: the
subtitles a protocol shows are in them, the ones it must not show are not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import media
from tests.helpers import lines, run_cli_output
from videovlm.convert import SUBTITLE_FIELD
from videovlm.evaluate import PREDICTIONS_NAME
from videovlm.model import Model

# -- the schemas, column for column (types as the datasets' cards give them) --------------------

CINEPILE_SCHEMA = pa.schema([
    ("movie_name", pa.string()), ("year", pa.int64()), ("genre", pa.list_(pa.string())),
    ("yt_clip_title", pa.string()), ("yt_clip_link", pa.string()), ("movie_scene", pa.string()),
    ("subtitles", pa.string()), ("question", pa.string()), ("choices", pa.list_(pa.string())),
    ("answer_key", pa.string()), ("answer_key_position", pa.int64()),
    ("question_category", pa.string()), ("hard_split", pa.string()),
    ("visual_reliance", pa.string()),
])
VIDEOMME_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("duration", pa.string()), ("domain", pa.string()),
    ("sub_category", pa.string()), ("url", pa.string()), ("videoID", pa.string()),
    ("question_id", pa.string()), ("task_type", pa.string()), ("question", pa.string()),
    ("options", pa.list_(pa.string())), ("answer", pa.string()),
])

SCENE_LINES = "Where were you last night?\nOut by the docks, with the boat."


def cinepile_row(clip: str, question: str, position: int, *, category: str = "Temporal",
                 subtitles: str = SCENE_LINES) -> dict:
    choices = ["The docks", "A diner", "The airport", "A rooftop", "The station"]
    return {"movie_name": "Harbour Lights", "year": 1999, "genre": ["Drama", "Crime"],
            "yt_clip_title": "Harbour Lights (1999) - The Docks Scene (3/10)",
            "yt_clip_link": f"https://www.youtube.com/watch?v={clip}", "movie_scene": "docks",
            "subtitles": subtitles, "question": question, "choices": choices,
            "answer_key": choices[position], "answer_key_position": position,
            "question_category": category, "hard_split": "False",
            "visual_reliance": "True"}


CINEPILE_ROWS = [
    cinepile_row("clipAAAA001", "Where does the first speaker say he was?", 0),
    cinepile_row("clipAAAA001", "What colour dominates the scene?", 3,
                 category="Setting and Technical Analysis"),
    cinepile_row("clipBBBB002", "Who speaks first?", 1, subtitles="Nobody move.",
                 category="Character and Relationship Dynamics"),
]


def videomme_row(video_id: str, yt: str, k: int, answer: str, duration: str = "short") -> dict:
    return {"video_id": video_id, "duration": duration, "domain": "Knowledge",
            "sub_category": "Humanity & History", "url": f"https://www.youtube.com/watch?v={yt}",
            "videoID": yt, "question_id": f"{video_id}-{k}", "task_type": "Counting Problem",
            "question": f"Question {k} about video {video_id}?",
            "options": ["A. one", "B. two", "C. three", "D. four"], "answer": answer}


VIDEOMME_ROWS = [
    videomme_row("001", "ytSubbed001", 1, "C"),
    videomme_row("001", "ytSubbed001", 2, "A"),
    videomme_row("002", "ytNoSubs002", 1, "D", duration="medium"),
]


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def convert(capsys, *args: str) -> tuple[int, str]:
    code, out, err = run_cli_output(capsys, "eval-convert", *args)
    assert out == ""
    return code, err


# -- conversion ---------------------------------------------------------------------------------


def test_cinepile_parquet_to_questions_keeping_its_columns(tmp_path, capsys):
    src = write_parquet(tmp_path / "cinepile" / "test-00000-of-00001.parquet", CINEPILE_ROWS,
                        CINEPILE_SCHEMA)
    out = tmp_path / "cinepile.jsonl"
    code, err = convert(capsys, "cinepile", str(src), "-o", str(out))
    assert code == 0
    assert err.strip() == f"videovlm: eval-convert: 3 questions about 2 videos -> {out}"
    got = lines(out)
    assert [(q["id"], q["video"], q["answer"]) for q in got] == [
        ("clipAAAA001-0", "clipAAAA001.mp4", "A"), ("clipAAAA001-1", "clipAAAA001.mp4", "D"),
        ("clipBBBB002-0", "clipBBBB002.mp4", "B")]
    assert got[0]["choices"] == CINEPILE_ROWS[0]["choices"]
    assert got[0]["question"] == CINEPILE_ROWS[0]["question"]
    # every other column is kept, under its own name and type
    for q, row in zip(got, CINEPILE_ROWS, strict=True):
        assert {k: q[k] for k in row if k not in ("question", "choices")} == {
            k: v for k, v in row.items() if k not in ("question", "choices")}
    assert got[1]["question_category"] == "Setting and Technical Analysis"
    assert got[2]["subtitles"] == "Nobody move."


def test_cinepile_video_id_column_and_extension(tmp_path, capsys):
    rows = [{**CINEPILE_ROWS[0], "videoID": "abc_-123XYZ", "yt_clip_link": "not a link"}]
    schema = CINEPILE_SCHEMA.append(pa.field("videoID", pa.string()))
    src = write_parquet(tmp_path / "c.parquet", rows, schema)
    out = tmp_path / "q.jsonl"
    assert convert(capsys, "cinepile", str(src), "-o", str(out), "--ext", "mkv")[0] == 0
    assert lines(out)[0]["video"] == "abc_-123XYZ.mkv"  # what lmms-eval opens: videoID


def test_videomme_parquet_folder_json_and_jsonl_agree(tmp_path, capsys):
    folder = tmp_path / "videomme"
    write_parquet(folder / "test-00000-of-00001.parquet", VIDEOMME_ROWS, VIDEOMME_SCHEMA)
    as_json = tmp_path / "videomme.json"
    as_json.write_text(json.dumps(VIDEOMME_ROWS))
    as_jsonl = tmp_path / "videomme.jsonl"
    as_jsonl.write_text("".join(json.dumps(r) + "\n" for r in VIDEOMME_ROWS))
    outs = []
    for src in (folder, as_json, as_jsonl):
        out = tmp_path / f"q-{src.name}.jsonl"
        assert convert(capsys, "videomme", str(src), "-o", str(out))[0] == 0
        outs.append(lines(out))
    assert outs[0] == outs[1] == outs[2]
    got = outs[0]
    assert [(q["id"], q["video"], q["answer"], q["duration"]) for q in got] == [
        ("001-1", "ytSubbed001.mp4", "C", "short"), ("001-2", "ytSubbed001.mp4", "A", "short"),
        ("002-1", "ytNoSubs002.mp4", "D", "medium")]
    assert got[0]["choices"] == ["one", "two", "three", "four"]  # "A. " labels are ours again
    assert {k: got[0][k] for k in ("video_id", "domain", "sub_category", "task_type",
                                   "videoID", "url")} == {
        k: VIDEOMME_ROWS[0][k] for k in ("video_id", "domain", "sub_category", "task_type",
                                         "videoID", "url")}
    assert SUBTITLE_FIELD not in got[0]


def test_videomme_subtitle_dir_names_the_files_that_exist(tmp_path, capsys):
    src = write_parquet(tmp_path / "v.parquet", VIDEOMME_ROWS, VIDEOMME_SCHEMA)
    subs = tmp_path / "subtitle"
    subs.mkdir()
    (subs / "ytSubbed001.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    out = tmp_path / "q.jsonl"
    code, err = convert(capsys, "videomme", str(src), "-o", str(out), "--subtitle-dir",
                        str(subs))
    assert code == 0 and "3 questions about 2 videos, 2 with a subtitle file" in err
    got = lines(out)
    assert [q.get(SUBTITLE_FIELD) for q in got] == [str(subs / "ytSubbed001.srt")] * 2 + [None]


def test_a_folder_of_several_splits_needs_split(tmp_path, capsys):
    folder = tmp_path / "v2"
    write_parquet(folder / "test-00000-of-00001.parquet", CINEPILE_ROWS[:1], CINEPILE_SCHEMA)
    write_parquet(folder / "train-00000-of-00002.parquet", CINEPILE_ROWS[1:2], CINEPILE_SCHEMA)
    write_parquet(folder / "train-00001-of-00002.parquet", CINEPILE_ROWS[2:], CINEPILE_SCHEMA)
    out = tmp_path / "q.jsonl"
    code, err = convert(capsys, "cinepile", str(folder), "-o", str(out))
    assert code == 2 and not out.exists()
    assert err.strip() == (f"videovlm: error: {folder}: holds the shards of several splits "
                           "(test, train): pick one with --split")
    assert convert(capsys, "cinepile", str(folder), "-o", str(out), "--split", "train")[0] == 0
    assert [q["id"] for q in lines(out)] == ["clipAAAA001-0", "clipBBBB002-0"]  # shards in order


def error_line(capsys, *args: str) -> str:
    """The one error line of a conversion that must fail with exit 2 and write nothing."""
    out = Path(args[args.index("-o") + 1])
    code, err = convert(capsys, *args)
    assert code == 2 and not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("videovlm: error: ")
    return err.strip()


def test_bad_sources_are_one_line_exit_2_nothing_written(tmp_path, capsys):
    cine = write_parquet(tmp_path / "cine.parquet", CINEPILE_ROWS, CINEPILE_SCHEMA)
    out = str(tmp_path / "q.jsonl")
    # the other benchmark's file: names what it lacks
    err = error_line(capsys, "videomme", str(cine), "-o", out)
    assert "not a Video-MME question file: no column videoID, question_id, options, answer" in err
    # a CinePile table without its subtitles
    no_subs = write_parquet(tmp_path / "nosubs.parquet",
                            [{k: v for k, v in r.items() if k != "subtitles"}
                             for r in CINEPILE_ROWS],
                            pa.schema([f for f in CINEPILE_SCHEMA if f.name != "subtitles"]))
    assert "no column subtitles" in error_line(capsys, "cinepile", str(no_subs), "-o", out)
    # not parquet at all, though named so
    fake = media.make_random(tmp_path / "fake.parquet")
    assert "not a readable parquet file" in error_line(capsys, "cinepile", str(fake), "-o", out)
    # not JSON
    garbled = tmp_path / "bad.json"
    garbled.write_text("[{\"question\": ")
    assert "not a JSON list of rows nor JSON Lines" in error_line(capsys, "videomme",
                                                                  str(garbled), "-o", out)
    # nothing there, an empty folder, a file of another kind
    assert "no such file or folder" in error_line(capsys, "videomme", str(tmp_path / "nope"),
                                                  "-o", out)
    (tmp_path / "empty").mkdir()
    assert "no .parquet, .json, .jsonl files" in error_line(
        capsys, "videomme", str(tmp_path / "empty"), "-o", out)
    # a place the questions file cannot go
    assert "cannot write" in error_line(capsys, "cinepile", str(cine), "-o",
                                        str(tmp_path / "no-such-folder" / "q.jsonl"))
    csv = tmp_path / "v.csv"
    csv.write_text("a,b\n")
    assert "not a .parquet, .json, .jsonl file" in error_line(capsys, "videomme", str(csv),
                                                              "-o", out)


def test_rows_that_do_not_convert_are_each_said(tmp_path, capsys):
    rows = [dict(CINEPILE_ROWS[0]), dict(CINEPILE_ROWS[1]), dict(CINEPILE_ROWS[2])]
    rows[0]["answer_key_position"] = 7
    rows[2]["yt_clip_link"] = "https://example.com/clip"
    src = write_parquet(tmp_path / "c.parquet", rows, CINEPILE_SCHEMA)
    out = tmp_path / "q.jsonl"
    code, err = convert(capsys, "cinepile", str(src), "-o", str(out))
    assert code == 2 and not out.exists()
    assert err.strip().splitlines() == [
        f"videovlm: error: {src} row 1: answer_key_position must be 0 to 4, got 7",
        f"videovlm: error: {src} row 3: yt_clip_link 'https://example.com/clip' is not a "
        "YouTube video link, and the row has no videoID"]
    vrows = [dict(r) for r in VIDEOMME_ROWS]
    vrows[1]["answer"] = "E"
    vrows[2]["question_id"] = "001-1"
    vsrc = write_parquet(tmp_path / "v.parquet", vrows, VIDEOMME_SCHEMA)
    code, err = convert(capsys, "videomme", str(vsrc), "-o", str(out))
    assert code == 2 and not out.exists()
    assert [line.split(": ", 2)[2] for line in err.strip().splitlines()] == [
        f"{vsrc} row 2: answer 'E' is not an option letter (A-D)",
        f"{vsrc} row 3: question_id '001-1' repeats"]


def test_without_pyarrow_one_line_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    src = write_parquet(tmp_path / "c.parquet", CINEPILE_ROWS, CINEPILE_SCHEMA)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    err = error_line(capsys, "cinepile", str(src), "-o", str(tmp_path / "q.jsonl"))
    assert err == ("videovlm: error: reading parquet needs pyarrow: pip install "
                   "'videovlm[eval]'")


# -- end to end: converted files through `videovlm eval`, prompts read back ---------------------

# 8 frames at 10 fps; with -n 4 the selection rule takes frames 1, 3, 5, 7 (0.1, 0.3, 0.5, 0.7 s)
SRT = """1
00:00:00,050 --> 00:00:00,150
<font color="white" size=".72c">alpha at the first frame</font>

2
00:00:00,160 --> 00:00:00,280
<font color="white" size=".72c">bravo between frames</font>

3
00:00:00,450 --> 00:00:00,550
<font color="white" size=".72c">charlie at the third frame</font>

4
00:00:00,720 --> 00:00:00,790
<font color="white" size=".72c">delta after the last frame</font>
"""
AT_FRAMES = "alpha at the first frame\ncharlie at the third frame"


class Prompts:
    """What the model is given, recorded on the way to the real calls: each prompt head (the
    frames and what goes after them) and each question's tail."""

    def __init__(self, monkeypatch) -> None:
        self.heads: list[str] = []
        self.tails: list[str] = []
        encode, answer = Model.encode_prefix, Model.answer_one

        def encode_prefix(model, text, features):
            self.heads.append(text)
            return encode(model, text, features)

        def answer_one(model, ask, **generation):
            # the question's own text: after the blank line that follows the last frame, up
            # to the end of the user's turn
            self.tails.extend(t.lstrip("\n").split("<end_of_utterance>")[0] for t in ask.tails)
            return answer(model, ask, **generation)

        monkeypatch.setattr(Model, "encode_prefix", encode_prefix)
        monkeypatch.setattr(Model, "answer_one", answer_one)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict[str, Path]:
    """Both benchmarks' tables, their clips (named as eval-convert names them) and Video-MME's
    subtitle folder, holding an .srt for one of its two videos."""
    root = tmp_path_factory.mktemp("bench")
    videos = root / "videos"
    videos.mkdir()
    for name in ("clipAAAA001", "clipBBBB002", "ytSubbed001", "ytNoSubs002"):
        media.make_video(videos / f"{name}.mp4", n_frames=8, fps=10)
    subs = root / "subtitle"
    subs.mkdir()
    (subs / "ytSubbed001.srt").write_text(SRT)
    return {"videos": videos, "subtitle": subs,
            "cinepile": write_parquet(root / "cinepile.parquet", CINEPILE_ROWS,
                                      CINEPILE_SCHEMA),
            "videomme": write_parquet(root / "videomme.parquet", VIDEOMME_ROWS,
                                      VIDEOMME_SCHEMA)}


def run_eval(capsys, qfile: Path, videos: Path, out: Path, protocol: str, model: Path,
             *extra: str) -> list[dict]:
    code, _, err = run_cli_output(capsys, "eval", str(qfile), "--videos", str(videos), "-o",
                                  str(out), "--protocol", protocol, "--model", str(model),
                                  "-n", "4", "--workers", "0", "--quiet", *extra)
    assert code == 0, err
    return lines(out / PREDICTIONS_NAME)


def test_cinepile_converted_and_run_shows_each_scenes_subtitles(bench, tiny_idefics3, tmp_path,
                                                                capsys, monkeypatch):
    qfile = tmp_path / "cinepile.jsonl"
    assert convert(capsys, "cinepile", str(bench["cinepile"]), "-o", str(qfile))[0] == 0
    prompts = Prompts(monkeypatch)
    preds = run_eval(capsys, qfile, bench["videos"], tmp_path / "out", "cinepile",
                     tiny_idefics3)
    assert [p["id"] for p in preds] == ["clipAAAA001-0", "clipAAAA001-1", "clipBBBB002-0"]
    assert [p["answer"] for p in preds] == ["A", "D", "B"]
    assert len(prompts.heads) == 2 and len(prompts.tails) == 3  # one encoding per clip
    for tail, row in zip(prompts.tails, CINEPILE_ROWS, strict=True):
        # lmms-eval's layout: instruction, the scene's subtitles, question, "- A) text" options
        assert f"**Subtitles:**\n{row['subtitles']}\n\n{row['question']}\n- A) The docks\n" \
               f"- B) A diner\n" in tail
        assert "- E) The station\n\nNote: Follow the output format strictly." in tail
    assert SCENE_LINES not in prompts.tails[2] and "Nobody move." not in prompts.tails[0]
    assert not any("Dialogue:" in h for h in prompts.heads)  # nothing after the frames


def test_videomme_protocols_subtitles_at_the_sampled_frames_only(bench, tiny_idefics3,
                                                                 tmp_path, capsys, monkeypatch):
    qfile = tmp_path / "videomme.jsonl"
    assert convert(capsys, "videomme", str(bench["videomme"]), "-o", str(qfile),
                   "--subtitle-dir", str(bench["subtitle"]))[0] == 0
    words = ["alpha", "bravo", "charlie", "delta", "subtitles"]

    # frames only: no subtitle anywhere, though the question names its .srt
    frames_only = Prompts(monkeypatch)
    preds = run_eval(capsys, qfile, bench["videos"], tmp_path / "plain", "videomme",
                     tiny_idefics3)
    assert [p["id"] for p in preds] == ["001-1", "001-2", "002-1"]
    assert len(frames_only.tails) == 3
    assert not any(w in text for w in words
                   for text in [*frames_only.heads, *frames_only.tails])
    assert frames_only.tails[0].startswith(
        "Select the best answer to the following multiple-choice question based on the video. ")

    # with subtitles: the lines on screen at frames 1, 3, 5, 7; not those between or after
    monkeypatch.undo()
    subbed = Prompts(monkeypatch)
    run_eval(capsys, qfile, bench["videos"], tmp_path / "subs", "videomme_subtitles",
             tiny_idefics3)
    lead = "This video's subtitles are listed below: \n"
    assert subbed.tails[0].startswith(
        f"{lead}{AT_FRAMES}\nSelect the best answer to the following multiple-choice question "
        "based on the video and the subtitles.")
    assert subbed.tails[0].endswith("\nQuestion 1 about video 001?\nA. one\nB. two\nC. three\n"
                                    "D. four\nThe best answer is:")
    assert subbed.tails[1].startswith(f"{lead}{AT_FRAMES}\n")
    assert subbed.tails[2].startswith(f"{lead}No subtitles available\n")  # no .srt
    assert not any(w in t for w in ("bravo", "delta") for t in subbed.tails)
    assert not any(w in h for w in words for h in subbed.heads)  # none after the frames
    # and the record says how many cues the prompts showed
    recs = {r["input"]: r for r in lines(tmp_path / "subs" / "results.jsonl")}
    said = recs["ytSubbed001.mp4"]["dialogue"]
    assert (said["kind"], said["path"]) == ("file", str(bench["subtitle"] / "ytSubbed001.srt"))
    assert (said["cues"], said["in_prompt"]) == (4, 2)
    assert recs["ytNoSubs002.mp4"]["dialogue"] is None

    # the same .srt as a sidecar next to the video, without subtitle_file: found as describe
    # finds one
    monkeypatch.undo()
    sidecar = Prompts(monkeypatch)
    bare = tmp_path / "bare.jsonl"
    assert convert(capsys, "videomme", str(bench["videomme"]), "-o", str(bare))[0] == 0
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("ytSubbed001", "ytNoSubs002"):
        (videos / f"{name}.mp4").symlink_to(bench["videos"] / f"{name}.mp4")
    (videos / "ytSubbed001.srt").write_text(SRT)
    run_eval(capsys, bare, videos, tmp_path / "side", "videomme_subtitles", tiny_idefics3)
    assert sidecar.tails == subbed.tails
