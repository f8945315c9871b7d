"""``videovlm serve``: one loaded model behind a local web page and an OpenAI-compatible API,
with each video's encoded prefix kept warm between questions.

What lives where:

- :mod:`~videovlm.serve.app`: the routes (Starlette), the API key, errors and streams.
- :mod:`~videovlm.serve.chat`: OpenAI's chat-completions shape, read and written.
- :mod:`~videovlm.serve.engine`: the model's queue, the decode workers beside it, streaming
  tokens.
- :mod:`~videovlm.serve.warm`: warm videos (prepared frames and encoded prefixes), an LRU
  bounded by bytes.
- :mod:`~videovlm.serve.media`: which files a request may name (media roots, uploads, ids).
- :mod:`~videovlm.serve.config`: the settings and request limits; ``page.html``: the page.

Needs the ``serve`` extra (``pip install 'videovlm[serve]'``: Starlette and uvicorn), imported
only when the app is built, so ``videovlm --help`` and the config work without it.
"""

from __future__ import annotations

from typing import Any

from videovlm.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """:func:`videovlm.serve.app.create_app` (imports Starlette on first use)."""
    from videovlm.serve.app import create_app as build

    return build(*args, **kwargs)
