"""Speech recognition: the audio track read on the frames' clock, streamed, through a real
(random-weight) Whisper; transcripts as files; a missing model or track said in one line.

The tiny checkpoint's words are gibberish: these tests assert times, order, counts and files.
"""

from __future__ import annotations

import itertools
import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import srt

from tests import media
from tests.helpers import run_cli
from videovlm.dialogue import Cue
from videovlm.errors import ModelError
from videovlm.probe import probe
from videovlm.speech import SAMPLE_RATE, SpeechModel, _Window, open_audio, transcribe

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SPEECH = SAMPLES / "speech.mp4"  # scripts/make_speech_sample.py: espeak-ng's 7.05 s WAV at 1.0 s
SPEECH_FROM_S, SPEECH_TO_S = 1.0, 8.05
BIKES = SAMPLES / "bikes.mp4"  # no audio track


@pytest.fixture(scope="module")
def whisper(tiny_whisper) -> SpeechModel:
    return SpeechModel.load(str(tiny_whisper))


def _check_cues(cues: list[Cue], duration_s: float) -> None:
    assert cues, "the tiny model wrote no line on the speech clip"
    for cue in cues:
        assert 0.0 <= cue.start_s < cue.end_s <= duration_s + 1e-6, cue
        assert cue.text.strip()
    starts = [c.start_s for c in cues]
    assert starts == sorted(starts)
    for before, after in itertools.pairwise(cues):
        assert before.end_s <= after.start_s + 1e-6  # each window starts where the last closed


def test_the_audio_track_is_read_at_16k_mono_where_the_speech_is():
    audio = open_audio(SPEECH)
    samples = np.concatenate(list(audio.chunks))
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert audio.start_s == pytest.approx(0.0, abs=1e-3)
    assert len(samples) / SAMPLE_RATE == pytest.approx(10.0, abs=0.1)
    rms = np.sqrt(np.mean(samples[:10 * SAMPLE_RATE].reshape(100, -1) ** 2, axis=1))
    tenths = np.flatnonzero(rms > 0.01)  # 0.1 s steps with sound in them
    assert tenths[0] / 10 == pytest.approx(SPEECH_FROM_S, abs=0.1)
    assert SPEECH_TO_S - 1.0 < tenths[-1] / 10 < SPEECH_TO_S  # the voice's file ends in quiet


def test_transcribe_gives_timed_cues_inside_the_audio(whisper):
    info = probe(SPEECH)
    cues = whisper.transcribe(SPEECH, info=info)
    _check_cues(cues, 10.1)
    assert cues == transcribe(SPEECH, whisper)  # the one-call form, same model: same lines


@pytest.mark.slow
def test_cues_are_on_the_frames_clock_whatever_the_streams_start(whisper, tmp_path):
    """The same samples in three files: streams at 0 and 0; the picture at 7.5 s and the sound
    at 10 s (the sound 2.5 s after the first frame); the sound 1 s before the picture. Cues
    move by exactly the audio's offset from the first frame (a cue before the first frame is
    cut at 0)."""
    base = whisper.transcribe(media.shift_streams(SPEECH, tmp_path / "base.mkv", 0.0, 0.0))
    later = whisper.transcribe(media.shift_streams(SPEECH, tmp_path / "later.mkv", 7.5, 10.0))
    early = whisper.transcribe(media.shift_streams(SPEECH, tmp_path / "early.mkv", 0.0, -1.0))
    _check_cues(base, 10.1)
    _assert_moved(base, later, 2.5)
    _assert_moved(base, early, -1.0)


def _assert_moved(base: list[Cue], moved: list[Cue], by_s: float) -> None:
    """``moved`` is ``base`` ``by_s`` later, cut at the first frame (0 s)."""
    expected = [Cue(max(0.0, c.start_s + by_s), c.end_s + by_s, c.text) for c in base
                if c.end_s + by_s > 0]
    assert [c.text for c in moved] == [c.text for c in expected]
    assert [t for c in moved for t in (c.start_s, c.end_s)] == pytest.approx(
        [t for c in expected for t in (c.start_s, c.end_s)], abs=2e-3)


def test_a_video_without_audio_gives_no_cues_and_one_warning(whisper, caplog):
    with caplog.at_level(logging.WARNING, logger="videovlm"):
        assert whisper.transcribe(BIKES) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no audio track" in warnings[0].getMessage()


def _read_through(path: Path) -> tuple[int, int]:
    """Python-side peak memory (numpy buffers included) of reading ``path``'s track window by
    window as transcription does, and the number of windows."""
    tracemalloc.start()
    try:
        audio = open_audio(path)
        window = _Window(audio.chunks, 30 * SAMPLE_RATE)
        windows = 0
        while len(samples := window.fill()):
            windows += 1
            window.advance(len(samples))
        return tracemalloc.get_traced_memory()[1], windows
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_does_not_grow_with_the_tracks_length(tmp_path):
    """70 s and 250 s of 48 kHz sound: the whole 250 s track would be 16 MB at 16 kHz (48 MB
    as decoded); the reader holds the window being filled, the one before it and a frame (a
    30 s window is 1.9 MB), so both peak alike, at a few windows' worth."""
    short = media.make_video(tmp_path / "short.mkv", n_frames=70, fps=1, audio=True)
    long = media.make_video(tmp_path / "long.mkv", n_frames=250, fps=1, audio=True)
    peak_short, windows_short = _read_through(short)
    peak_long, windows_long = _read_through(long)
    assert (windows_short, windows_long) == (3, 9)
    assert peak_long < 1.1 * peak_short + 200_000, (peak_short, peak_long)
    assert peak_long < 4 * 30 * SAMPLE_RATE * 4


@pytest.mark.slow
def test_a_long_track_is_transcribed_window_after_window(whisper, tmp_path):
    """75 s of sound: three or more 30 s windows, each starting where the last one's text
    closed; every cue inside the track, in order, none overlapping."""
    clip = media.make_video(tmp_path / "tone.mkv", n_frames=75, fps=1, audio=True)
    cues = whisper.transcribe(clip)
    _check_cues(cues, 75.1)  # the tone runs to the end of its last audio frame
    assert cues[-1].end_s > 30.0  # the later windows' cues are on the track's clock too


def test_int8_is_the_cpu_default_and_keeps_the_tied_embedding(tiny_whisper):
    import torch

    model = SpeechModel.load(str(tiny_whisper))
    assert (model.device, model.dtype, model.quantization) == ("cpu", "float32", "int8")
    network = model.network
    # the output projection is quantized; the embedding table it was tied to is still there
    assert isinstance(network.proj_out, torch.ao.nn.quantized.dynamic.Linear)
    assert network.model.decoder.embed_tokens.weight.device == torch.device("cpu")
    _check_cues(model.transcribe(SPEECH), 10.1)


def test_a_missing_or_wrong_model_is_one_line(tmp_path, tiny_idefics3):
    with pytest.raises(ModelError, match="--asr-model takes a checkpoint folder"):
        SpeechModel.load(str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="takes a Whisper checkpoint"):
        SpeechModel.load(str(tiny_idefics3))


# -- videovlm transcribe ------------------------------------------------------------------------


def test_transcribe_command_writes_the_transcript(tiny_whisper, whisper, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_cli(["transcribe", str(SPEECH), str(BIKES), "-o", str(out), "-f", "srt,json",
                    "--asr-model", str(tiny_whisper), "--quiet"])
    assert code == 0
    subs = list(srt.parse((out / "speech.transcript.srt").read_text()))
    expected = whisper.transcribe(SPEECH)
    assert [t for s in subs for t in (s.start.total_seconds(), s.end.total_seconds())] == \
        pytest.approx([t for c in expected for t in (c.start_s, c.end_s)], abs=1e-3)
    data = json.loads((out / "speech.transcript.json").read_text())
    assert data["model"]["id"] == str(tiny_whisper)
    assert data["video"]["path"] == str(SPEECH)
    assert len(data["cues"]) == len(expected)
    assert (out / "bikes.transcript.srt").read_text() == ""  # no audio: an empty transcript
    assert "no audio track" in capsys.readouterr().err


def test_transcribe_command_prints_subrip_without_an_output_folder(tiny_whisper, capsys):
    assert run_cli(["transcribe", str(SPEECH), "--asr-model", str(tiny_whisper),
                    "--quiet"]) == 0
    out = capsys.readouterr().out
    assert len(list(srt.parse(out))) >= 1


@pytest.mark.parametrize(("args", "message"), [
    (["--asr-model", "/no/such/whisper"], "--asr-model takes a checkpoint folder"),
    (["-o", "OUT", "-f", "srt,docx"], "unknown transcript format 'docx'"),
    (["-f", "srt"], "-f/--format needs an output folder"),
    (["--asr-model", "TINY", "--asr-language", "klingon", "--quiet"],
     "unknown speech language 'klingon'"),
])
def test_transcribe_command_bad_input_is_one_line_exit_2(args, message, tmp_path, capsys,
                                                         tiny_whisper):
    names = {"OUT": str(tmp_path / "out"), "TINY": str(tiny_whisper)}
    args = [names.get(a, a) for a in args]
    assert run_cli(["transcribe", str(SPEECH), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("videovlm: error:")


def test_transcribe_command_on_a_missing_video_is_one_line(tmp_path, capsys):
    assert run_cli(["transcribe", str(tmp_path / "none.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"videovlm: error: {tmp_path / 'none.mp4'}: no such file"]


# -- the checkpoint -----------------------------------------------------------------------------


def test_the_tiny_whisper_is_the_real_architecture(tiny_whisper):
    from transformers import AutoTokenizer, WhisperForConditionalGeneration

    network = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    config, generation = network.config, network.generation_config
    assert (config.num_mel_bins, config.max_source_positions) == (80, 1500)
    tokenizer = AutoTokenizer.from_pretrained(tiny_whisper)
    ids = tokenizer.convert_tokens_to_ids
    assert generation.no_timestamps_token_id == ids("<|notimestamps|>") == ids("<|0.00|>") - 1
    assert ids("<|30.00|>") == ids("<|0.00|>") + 1500 == len(tokenizer) - 1
    assert config.decoder_start_token_id == ids("<|startoftranscript|>")
    assert generation.lang_to_id["<|en|>"] == ids("<|en|>") and len(generation.lang_to_id) == 99
    assert sum(p.numel() for p in network.parameters()) < 1_000_000  # tiny: fast in tests


def test_the_token_layout_is_the_hub_models():
    """openai/whisper-base's tokenizer.json: 50257 BPE entries, then these ids."""
    from videovlm.testing import _whisper_tokenizer

    tokenizer = _whisper_tokenizer(50257)
    ids = tokenizer.convert_tokens_to_ids
    assert len(tokenizer) == 51865
    assert [ids(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|su|>",
                             "<|translate|>", "<|transcribe|>", "<|startofprev|>",
                             "<|notimestamps|>", "<|0.00|>", "<|30.00|>")] == [
        50257, 50258, 50259, 50357, 50358, 50359, 50361, 50363, 50364, 51864]


# -- --transcribe: speech as the dialogue of describe and ask ------------------------------------


@pytest.mark.parametrize("windows", [[], ["--window", "3"]], ids=["whole", "windowed"])
def test_describe_transcribe_puts_speech_in_prompts_results_and_a_transcript_file(
        tiny_idefics3, tiny_whisper, tmp_path: Path, windows: list[str]) -> None:
    out = tmp_path / "out"
    code = run_cli(["describe", str(SPEECH), "--model", str(tiny_idefics3), "--quantize", "none",
                    "-n", "6", "--transcribe", "--asr-model", str(tiny_whisper), "-o", str(out),
                    "-f", "json,md", "--quiet", *windows])
    assert code == 0
    result = json.loads((out / "speech.json").read_text())
    facts = (out / "speech.md").read_text()
    assert f"speech recognition, {Path(tiny_whisper).name}: " in facts
    assert "speech None" not in facts
    assert bool(result["sampling"].get("windows")) == bool(windows)
    dialogue = result["dialogue"]
    assert dialogue["kind"] == "speech" and dialogue["model"]
    heard = dialogue["transcript"]
    assert dialogue["cues"] == len(heard)
    _check_cues([Cue(c["start_s"], c["end_s"], c["text"]) for c in heard],
                result["video"]["duration_s"])
    for seg in result["segments"]:  # each segment holds exactly the speech said during it
        assert seg["transcript"] == [c for c in heard
                                     if c["start_s"] < seg["end_s"] and c["end_s"] > seg["start_s"]]
    written = list(srt.parse((out / "speech.transcript.srt").read_text()))
    assert [(round(s.start.total_seconds(), 3), s.content) for s in written] == [
        (c["start_s"], c["text"]) for c in heard]


def test_ask_transcribe_without_audio_notes_it_and_answers(
        tiny_idefics3, tiny_whisper, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.utils import logging as hf_logging

    from videovlm import speech

    monkeypatch.setattr(speech, "_loaded", {})  # loaded by this command, as a user's would be
    hf_logging.enable_progress_bar()  # as in a fresh process: the command must turn it off
    code = run_cli(["ask", str(BIKES), "-q", "What happens?", "--model", str(tiny_idefics3),
                    "--quantize", "none", "-n", "3", "--transcribe", "--asr-model",
                    str(tiny_whisper), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)
    assert result["dialogue"]["kind"] == "speech" and result["dialogue"]["cues"] == 0
    assert "no audio track" in captured.err
    assert "Loading weights" not in captured.err  # no library bar when stderr is a log


def test_asr_options_need_transcribe_and_a_missing_model_is_one_line(
        tiny_idefics3, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["describe", str(SPEECH), "--model", str(tiny_idefics3), "--asr-language",
                    "en"])
    err = capsys.readouterr().err
    assert code == 2 and "add --transcribe" in err and len(err.strip().splitlines()) == 1
    code = run_cli(["describe", str(SPEECH), "--model", str(tiny_idefics3), "--transcribe",
                    "--asr-model", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "--asr-model" in err and "Traceback" not in err
