"""One asr.py row on faster-whisper (CTranslate2), run with the peer venv's Python.

    python faster_whisper_row.py CT2_DIR AUDIO COMPUTE_TYPE TOKENS RUNS

The same work as videovlm's row: one 30 s window of ``AUDIO`` (read with faster-whisper's own
PyAV decoder), its log-mel features (faster-whisper's extractor), then CTranslate2's Whisper
``generate`` with timestamps, English, greedy, ``TOKENS`` new tokens forced (end of text
suppressed, ``max_length`` = prompt + TOKENS): the encoder and the decoder steps that
``SpeechModel._window`` runs. 2 CPU threads. Prints one JSON line (best of RUNS):
``features_s``, ``window_s`` (features + encode + decode) and its CPU seconds
``window_cpu_s``, ``tokens`` (as generated).
Imports nothing of videovlm (this venv has none of it).
"""

from __future__ import annotations

import json
import sys
import time

import ctranslate2
from faster_whisper import WhisperModel, decode_audio
from faster_whisper.audio import pad_or_trim


def main() -> None:
    folder, audio, compute_type, tokens, runs = sys.argv[1:6]
    model = WhisperModel(folder, device="cpu", compute_type=compute_type, cpu_threads=2)
    window = decode_audio(audio, sampling_rate=16000)[: 30 * 16000]
    tok = model.hf_tokenizer
    eot = tok.token_to_id("<|endoftext|>")
    prompt = [tok.token_to_id(t) for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>")]
    best_features, best_window, best_cpu, made = float("inf"), float("inf"), float("inf"), 0
    for _ in range(int(runs)):
        start, cpu = time.perf_counter(), time.process_time()
        features = pad_or_trim(model.feature_extractor(window))  # 3000 frames, as transcribe
        best_features = min(best_features, time.perf_counter() - start)
        encoded = model.encode(features)
        out = model.model.generate(encoded, [prompt], beam_size=1,
                                   max_length=len(prompt) + int(tokens),
                                   suppress_tokens=[eot], suppress_blank=False,
                                   return_scores=True, return_no_speech_prob=True)
        best_window = min(best_window, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        made = len(out[0].sequences_ids[0])
    print(json.dumps({"features_s": best_features, "window_s": best_window,
                      "window_cpu_s": best_cpu, "tokens": made,
                      "ctranslate2": ctranslate2.__version__}))


if __name__ == "__main__":
    main()
