"""``videovlm serve``: the model loaded once, behind the web page and the HTTP API
(:mod:`videovlm.serve`), until SIGTERM or Ctrl-C.

The socket is bound here, before the model loads, so a port in use is one line in a second;
binding to a port 0 picks a free one, and the line that says where the server listens names it.
SIGTERM (and Ctrl-C) stop new work at once (503s), let the request generating finish, then exit.
"""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import click

from videovlm.cli import cli
from videovlm.cli.common import (
    dialogue_options,
    dialogue_overrides,
    load_model,
    model_options,
    quiet_option,
    setup_logging,
)
from videovlm.errors import VideoVLMError
from videovlm.serve.config import DEFAULT_HOST, DEFAULT_PORT, LOOPBACK, ServeConfig

_DEFAULTS = ServeConfig()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise VideoVLMError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose "
                            "another --port or --host") from None
    sock.listen(128)
    return sock


@cli.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on (anything but loopback without --api-key warns).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: a free one, printed).")
@click.option("--media-root", "media_roots", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder whose videos requests may name as file:// URLs (repeatable); "
                   "nothing outside it, symlinks and .. resolved first.")
@click.option("--api-key", envvar="VIDEOVLM_API_KEY", default=None,
              help="Every request must send 'Authorization: Bearer KEY' (the page: open "
                   "/?api_key=KEY once) [env: VIDEOVLM_API_KEY].")
@click.option("--max-queue", type=click.IntRange(min=0), default=_DEFAULTS.max_queue,
              show_default=True, help="Requests that may wait for the model behind the one "
                                      "generating; the next gets 503.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True),
              default=_DEFAULTS.max_upload_mb, show_default=True,
              help="Largest upload or data: video.")
@click.option("--cache-mb", type=click.FloatRange(min=0), default=_DEFAULTS.cache_mb,
              show_default=True, help="Memory for warm videos (their encoded prefixes and "
                                      "prepared frames), least recently used dropped first.")
@click.option("--workers", type=click.IntRange(min=1), default=_DEFAULTS.workers,
              show_default=True, help="Threads decoding and preparing videos beside the model.")
@click.option("--max-frames", type=click.IntRange(min=1), default=_DEFAULTS.max_frames,
              show_default=True, help="Most frames one request may ask for.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=_DEFAULTS.max_new_tokens,
              show_default=True, help="Most tokens one answer may be asked for.")
@click.option("--max-questions", type=click.IntRange(min=1), default=_DEFAULTS.max_questions,
              show_default=True, help="Most questions in one ask request.")
@dialogue_options
@quiet_option
@model_options
def serve(host: str, port: int, media_roots: tuple[Path, ...], api_key: str | None,
          max_queue: int, max_upload_mb: float, cache_mb: float, workers: int,
          max_frames: int, max_new_tokens: int, max_questions: int,
          subtitles: str | None, subtitle_lang: str | None, quiet: bool,
          model_id: str | None, device: str | None, dtype: str | None, n: int | None,
          quantize: str | None, no_cache: bool) -> None:
    """Serve the model: a web page at / and an OpenAI-compatible API under /v1.

    Each video's encoded frames stay warm in memory (--cache-mb), so a follow-up question
    about it costs only the question. Subtitles found with a video (a sidecar next to it under
    its media root, or a stream inside it) go with its frames unless --subtitles none; a
    request may say so itself (videovlm.subtitles, videovlm.subtitle_lang).
    """
    setup_logging(quiet)
    dialogue = dialogue_overrides(subtitles, subtitle_lang, one_video=False)
    try:
        import uvicorn

        from videovlm.serve import create_app
    except ImportError as exc:
        raise VideoVLMError(f"videovlm serve needs its extra ({exc.name} is missing): "
                            "pip install 'videovlm[serve]'") from None
    log = logging.getLogger("videovlm")
    if n is not None and n > max_frames:
        raise VideoVLMError(f"-n {n} is over --max-frames {max_frames}: raise --max-frames")
    if host not in LOOPBACK and not api_key:
        log.warning("listening on %s without --api-key: anyone who can reach this machine can "
                    "use the model and read the videos under the media roots", host)
    sock = _listen(host, port)
    config = ServeConfig(media_roots=tuple(str(r) for r in media_roots), host=host, frames=n,
                         subtitles=dialogue["subtitles"],
                         subtitle_lang=dialogue["subtitle_lang"],
                         api_key=api_key, max_queue=max_queue, max_upload_mb=max_upload_mb,
                         cache_mb=cache_mb, workers=workers, max_frames=max_frames,
                         max_new_tokens=max_new_tokens, max_questions=max_questions)
    model = load_model(model_id, device, dtype, quiet, no_cache, quantize)
    app = create_app(model, config)
    engine = app.state.server.engine

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            if not engine.draining:
                log.info("stopping: finishing the request in flight, refusing new ones")
            engine.drain()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            captured = getattr(self, "_captured_signals", [])
            if sig == signal.SIGTERM and sig in captured:
                # uvicorn re-raises it after the graceful shutdown (a kill, status 143): the
                # shutdown is finished by then, so the command exits 0 instead
                captured.remove(sig)

    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    log.info("serving %s on http://%s:%d/ (the page; the API under /v1)", model.id, shown,
             bound_port)
    server = Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                   lifespan="on", timeout_graceful_shutdown=None))
    server.run(sockets=[sock])
    log.info("stopped")
