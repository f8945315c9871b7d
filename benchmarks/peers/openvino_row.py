"""One engines.py row on OpenVINO (optimum-intel), run with the peer venv's Python.

    python openvino_row.py EXPORTED_DIR INPUTS_DIR NEW_TOKENS

``INPUTS_DIR`` holds the workload's ``input_ids.npy`` and ``pixel_values.npy``, made by
videovlm from the same frames and prompt as the other rows (so every row sees identical
inputs). Prints one JSON line: vision s, prefill s, decode tok/s, answer s, load s, peak RSS.
Imports nothing of videovlm: this venv has its own transformers (optimum-intel 2.2 exports only
with transformers <= 4.57.6).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import torch
from optimum.intel import OVModelForVisualCausalLM
from timing import FirstToken  # beside this file
from transformers import LogitsProcessorList


def main() -> None:
    exported, inputs_dir, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.perf_counter()
    model = OVModelForVisualCausalLM.from_pretrained(exported, device="CPU")
    load_s = time.perf_counter() - t0
    ids = torch.from_numpy(np.load(f"{inputs_dir}/input_ids.npy"))
    pixels = torch.from_numpy(np.load(f"{inputs_dir}/pixel_values.npy"))
    vision = [0.0]
    original = model.get_vision_embeddings

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            vision[0] += time.perf_counter() - start

    model.get_vision_embeddings = timed
    first = FirstToken()
    t0 = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                   pixel_attention_mask=torch.ones(pixels.shape[0], pixels.shape[1],
                                                   pixels.shape[3], pixels.shape[4],
                                                   dtype=torch.bool),
                   max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   logits_processor=LogitsProcessorList([first]))
    end = time.perf_counter()
    assert first.at is not None
    print(json.dumps({
        "vision": vision[0], "prefill": first.at - t0 - vision[0],
        "decode_tps": (new_tokens - 1) / max(1e-9, end - first.at), "answer": end - t0,
        "load": load_s, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
