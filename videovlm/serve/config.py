"""``videovlm serve``'s settings and request limits, declared once: the CLI's options and the
server's checks both read them from here."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServeConfig:
    """How the server runs and what one request may ask for (beyond a limit: a 400)."""

    media_roots: tuple[str, ...] = ()
    host: str = DEFAULT_HOST  # where it listens: on loopback, only loopback Host headers pass
    frames: int | None = None  # the frame budget of requests that name none (None: recipes')
    subtitles: str | None = None  # auto | none for requests that name none (None: recipes')
    subtitle_lang: str | None = None
    api_key: str | None = None
    max_queue: int = 16  # requests waiting for the model behind the one generating
    max_upload_mb: float = 512.0
    cache_mb: float = 2048.0  # warm videos: prefixes (KV caches) and prepared frames
    workers: int = 2  # decode threads beside the model
    max_frames: int = 128  # a request's frame budget (n)
    max_new_tokens: int = 1024  # max_tokens / max_new_tokens
    max_questions: int = 16  # questions in one ask
    max_images: int = 16  # image_url parts in one chat turn
    max_text: int = 20_000  # characters of one question or chat text

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        """A JSON body may carry a data: video (base64: 4 bytes per 3) and its text."""
        return self.max_upload_bytes * 4 // 3 + 2**20

    @property
    def body_budget_bytes(self) -> int:
        """The bytes of JSON bodies the server holds at once, all requests together: two of the
        largest (or many small ones). A body is read and parsed in memory (a ``data:`` video
        decoded), so without a budget many clients at once could exhaust it; beyond: 503."""
        return 2 * self.max_body_bytes
