"""One engines.py row on llama.cpp (xllamacpp), run with the peer venv's Python.

    python llamacpp_row.py MODEL_GGUF MMPROJ_GGUF INPUTS_DIR NEW_TOKENS

``INPUTS_DIR`` holds the workload's frames as ``NNN.png`` and ``prompt.json``: videovlm's chat
text (the same frames, timestamps and question as every other row) cut at its image
placeholders, so ``len(parts) == frames + 1``. It goes to xllamacpp's in-process server as one
multimodal chat message, text and image parts in turn, with a chat template that writes the
parts out as they are: the text llama.cpp tokenizes is videovlm's, character for character
(the checkpoint's own template writes a part only if its type is ``text`` or ``image``, and
llama.cpp hands it each image as a ``media_marker`` part). llama.cpp's SmolVLM path then
preprocesses each image itself and wraps it in the model's image tokens. Greedy (``top_k`` 1),
``NEW_TOKENS`` forced (``ignore_eos``), no prompt cache, streamed so the first token's arrival
is timed. Prints one JSON line: time to first token (vision + prefill: llama.cpp reports them
together), decode tok/s, answer s, load s, the prompt's tokens as llama.cpp counts them, peak
RSS, and llama.cpp's own timings.
Imports nothing of videovlm (this venv has none of it).
"""

from __future__ import annotations

import base64
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import xllamacpp

# Each text part as it is, images' parts too (llama.cpp has made them its media marker).
VERBATIM = ("{%- for message in messages -%}{%- if message['content'] is string -%}"
            "{{ message['content'] }}{%- else -%}{%- for part in message['content'] -%}"
            "{{ part['text'] }}{%- endfor -%}{%- endif -%}{%- endfor -%}")


def content(folder: Path) -> list[dict[str, Any]]:
    """The message: the prompt's text parts with the frames between them."""
    parts = json.loads((folder / "prompt.json").read_text())["parts"]
    frames = sorted(folder.glob("*.png"))
    assert len(parts) == len(frames) + 1, (len(parts), len(frames))
    out: list[dict[str, Any]] = []
    for i, text in enumerate(parts):
        if text:
            out.append({"type": "text", "text": text})
        if i < len(frames):
            url = "data:image/png;base64," + base64.b64encode(frames[i].read_bytes()).decode()
            out.append({"type": "image_url", "image_url": {"url": url}})
    return out


def main() -> None:
    model, mmproj, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    new_tokens = int(sys.argv[4])
    message = {"role": "user", "content": content(folder)}
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.mmproj.path = mmproj
    params.chat_template = VERBATIM
    params.n_ctx = 0  # the model's own context: 50 frames' prompt needs most of its 8,192
    params.n_parallel = 1
    params.cache_ram_mib = 0  # one question: no prompt cache kept for a next request
    params.cpuparams.n_threads = os.cpu_count() or 1
    params.cpuparams_batch.n_threads = os.cpu_count() or 1
    t0 = time.perf_counter()
    server = xllamacpp.Server(params)
    load_s = time.perf_counter() - t0

    chunks: list[tuple[float, dict[str, Any]]] = []
    request = {"messages": [message], "max_tokens": new_tokens, "ignore_eos": True,
               "temperature": 0.0, "top_k": 1, "cache_prompt": False, "stream": True}
    t0 = time.perf_counter()
    server.handle_chat_completions(request, lambda c: chunks.append((time.perf_counter(), c)))
    end = time.perf_counter()
    errors = [c["error"] for _, c in chunks if "error" in c]
    timings = next((c["timings"] for _, c in reversed(chunks) if "timings" in c), None)
    if errors or timings is None:
        raise SystemExit(f"llama.cpp: {errors[0] if errors else 'no timings in the reply'}")
    if timings["predicted_n"] != new_tokens:
        raise SystemExit(f"llama.cpp made {timings['predicted_n']} tokens, not {new_tokens}")
    first = chunks[0][0]  # the first chunk comes with the first token (after the prompt)
    print(json.dumps({
        "first_token": first - t0, "decode_tps": (new_tokens - 1) / max(1e-9, end - first),
        "answer": end - t0, "load": load_s,
        "tokens": timings["prompt_n"] + timings.get("cache_n", 0), "llama_timings": timings,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
