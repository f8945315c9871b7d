"""llama.cpp's ``convert_hf_to_gguf.py`` on a benchmark checkpoint, run with the peer venv's Python.

    python llamacpp_convert.py CONVERTER CHECKPOINT [converter arguments...]

The converter names a text model's pre-tokenizer (the regex that splits text before BPE) by the
hash of its tokenization of a fixed text, which it knows only for the hub's trained tokenizers:
a random checkpoint's tokenizer is trained here, so it is known to none. This runs the converter
unchanged, except that an unknown hash of a plain byte-level tokenizer (GPT-2's regex, what
``videovlm.testing`` trains) is named ``gpt-2``, the pre-tokenizer it has; anything else still
fails as the converter fails. A real SmolVLM checkpoint converts without the fallback.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path


def main() -> None:
    converter, checkpoint = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path[:0] = [str(converter.parent), str(converter.parent / "gguf-py")]
    from conversion import base  # the converter's own package, beside it

    pre = json.loads((checkpoint / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    byte_level = pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
    known = base.TextModel.get_vocab_base_pre

    def named(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            if byte_level:
                return "gpt-2"
            raise

    base.TextModel.get_vocab_base_pre = named
    sys.argv = [str(converter), str(checkpoint), *sys.argv[3:]]
    runpy.run_path(str(converter), run_name="__main__")


if __name__ == "__main__":
    main()
