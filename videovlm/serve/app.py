"""The HTTP surface of ``videovlm serve``: routes, the API key, errors, streams (Starlette).

Routes (every one behind ``--api-key`` when it is set):

```
GET  /                              the web page (page.html: self-contained, CSP, no requests
                                    leave the server)
GET  /v1/models                     the one model served
POST /v1/chat/completions           OpenAI's shape (videovlm.serve.chat); stream=true: SSE chunks
GET  /v1/media                      the videos under the --media-root folders
POST /v1/videos                     register a video: a JSON {"url": file:// or data:} body, or
                                    the file's bytes as the body (an upload)
                                    -> {id, name, video (probe facts), sampling (planned frames)}
GET  /v1/videos/{id}                the same
GET  /v1/videos/{id}/file           the video itself (range requests: the page's player)
GET  /v1/videos/{id}/frames         thumbnails of frames by index (?indices=0,15,...) or plan (?n=)
POST /v1/videos/{id}/describe       the describe task's Result JSON ({"stream": true}: SSE)
POST /v1/videos/{id}/ask            answers with their choice letters ({"stream": true}: SSE)
GET  /v1/results/{rid}.{format}     a result's report file: json, srt, vtt or html
GET  /v1/health                     queue, warm cache and counters
```

Every refusal is an OpenAI-shaped JSON error with one clear line (:mod:`videovlm.serve.errors`):
4xx for the client's mistakes (a :class:`~videovlm.errors.VideoVLMError` from the library is
one: an unreadable video, a bad option), 401 without the key, 503 when a queue (the model's, the
thumbnails') or the budget for request bodies is full, 500
only for a bug, which is logged and leaves the server running. The native streams are
server-sent events: ``frames`` (what the model sees), ``delta`` (text as generated), ``result``
and, if the run fails once started, ``error``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import mimetypes
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import videovlm.serve.chat as chat
from videovlm.batch.inputs import VIDEO_EXTENSIONS
from videovlm.decode import decode_with_backend
from videovlm.errors import VideoVLMError
from videovlm.model import Model
from videovlm.pipelines import Recipe, load_recipe
from videovlm.plan import FrameRef, plan
from videovlm.prepare import prepare_image
from videovlm.result import Result
from videovlm.serve.config import LOOPBACK, ServeConfig
from videovlm.serve.engine import KEPT_RESULTS, Cancelled, Engine, TokenSink, stream_events
from videovlm.serve.errors import APIError
from videovlm.serve.media import Library, MediaRoots, Uploads, Video
from videovlm.tasks import DEFAULT_TASK, DESCRIBE_MODES, TASKS, for_mode, for_questions
from videovlm.writers import WRITERS, thumbnail_uri

log = logging.getLogger("videovlm")
T = TypeVar("T")

REPORT_FORMATS = ("json", "srt", "vtt", "html")
_MEDIA_TYPES = {"json": "application/json", "srt": "application/x-subrip",
                "vtt": "text/vtt; charset=utf-8", "html": "text/html; charset=utf-8"}
COOKIE = "videovlm_key"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _page() -> tuple[str, str]:
    """The page and its Content-Security-Policy: nothing may load from anywhere but this
    server, and only the page's own inline script and style run (by hash, so no injected
    script can)."""
    text = resources.files("videovlm.serve").joinpath("page.html").read_text(encoding="utf-8")

    def digest(tag: str) -> str:
        body = text.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
        return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"

    csp = ("default-src 'none'; "
           f"script-src {digest('script')}; style-src {digest('style')}; "
           "img-src 'self' data:; media-src 'self'; connect-src 'self'; "
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return text, csp


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _error(exc: APIError) -> JSONResponse:
    return _json(exc.body(), exc.status)


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _problem(exc: BaseException) -> APIError:
    """What a failure inside a run is answered with: the user's mistake as a 400, the rest as a
    500 whose details go to the log."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, Cancelled):  # nobody reads the answer: nginx's "client closed request"
        return APIError(499, "the client closed the connection before the answer")
    if isinstance(exc, VideoVLMError):
        return APIError(400, str(exc))
    log.error("a request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return APIError(500, f"internal error ({type(exc).__name__}): the server's log has the "
                         "details; the server keeps running")


async def _unless_gone(request: Request, sink: TokenSink, work: Awaitable[T]) -> T:
    """``work`` (a request's model stage, not streamed), stopped at its next token, or before
    it starts, if the client disconnects meanwhile: ASGI's ``http.disconnect`` comes once the
    body is read and the connection closes (a stream learns it from its writes instead)."""
    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        sink.cancelled.set()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    finally:
        watcher.cancel()


class KeyCheck:
    """Every request must carry the API key: ``Authorization: Bearer KEY`` (OpenAI's clients),
    or the cookie that opening ``/?api_key=KEY`` once sets (the page and its video player)."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.key = key

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.key.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if self._ok(bearer) or self._ok(request.cookies.get(COOKIE)):
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/" and self._ok(request.query_params.get("api_key")):
            response: Response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, self.key, httponly=True, samesite="strict")
        else:
            response = _error(APIError(401, "missing or wrong API key: send "
                                            "'Authorization: Bearer KEY' (or open the page as "
                                            "/?api_key=KEY)"))
        await response(scope, receive, send)


class SameOrigin:
    """Refuses what a web page elsewhere could make a visitor's browser send: a request whose
    ``Origin`` is another site (a cross-site form or fetch runs even when its answer cannot be
    read), and, on a loopback server without a key, a ``Host`` that is not loopback (DNS
    rebinding: a site whose name resolves to 127.0.0.1 would otherwise read the media roots).
    Clients that are not browsers send no ``Origin`` and a loopback ``Host``."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.loopback_only = config.host in LOOPBACK and not config.api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Request(scope).headers
        host = headers.get("host", "").lower()
        origin = headers.get("origin")
        message = None
        if self.loopback_only and urllib.parse.urlsplit(f"//{host}").hostname not in (
                *LOOPBACK, None):
            message = (f"Host {host!r} is not this loopback server: open it as "
                       "http://127.0.0.1:PORT/ (or serve with --api-key)")
        elif origin is not None and urllib.parse.urlsplit(origin.lower()).netloc != host:
            message = f"cross-origin requests are refused (Origin {origin!r})"
        if message is None:
            await self.app(scope, receive, send)
            return
        await _error(APIError(403, message))(scope, receive, send)


class BodyBudget:
    """The bytes of request bodies being read and parsed, server-wide, kept within
    :attr:`ServeConfig.body_budget_bytes`: a body's declared length is taken before the first
    byte is read (a chunked body's as it comes), and the whole request's share is given back
    when its handler returns, so a body that does not fit is refused with 503 at once instead
    of joining the others in memory. (Uploads stream to disk and take none.)"""

    KEY = "videovlm.body_bytes"  # where a request's share is noted, in its ASGI scope

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # only the event loop's thread touches it

    def take(self, request: Request, size: int) -> None:
        if self.used + size > self.limit:
            raise APIError(503, f"the server is busy reading {self.used / 2**20:.1f} MB of "
                                f"other request bodies (its budget: {self.limit / 2**20:.1f} MB, "
                                "twice the largest body --max-upload-mb allows): retry in a "
                                "moment")
        self.used += size
        request.scope[self.KEY] = request.scope.get(self.KEY, 0) + size

    def release(self, request: Request) -> None:
        self.used -= request.scope.pop(self.KEY, 0)


class Server:
    """The routes' shared state: the engine, the videos, the page; built by :func:`create_app`."""

    def __init__(self, model: Model, config: ServeConfig) -> None:
        self.model = model
        self.config = config
        self.engine = Engine(model, max_queue=config.max_queue,
                             cache_bytes=int(config.cache_mb * 2**20), workers=config.workers)
        self.roots = MediaRoots(config.media_roots)
        self.uploads = Uploads(config.max_upload_bytes)
        self.library = Library(self.roots, self.uploads)
        self.bodies = BodyBudget(config.body_budget_bytes)
        self.recipes = {t.recipe: load_recipe(t.recipe).with_overrides(
            n=config.frames, subtitles=config.subtitles, subtitle_lang=config.subtitle_lang,
            transcribe=config.transcribe, asr_model=config.asr_model,
            asr_language=config.asr_language)
                        for t in TASKS.values()}
        self.page, self.csp = _page()
        self.started = int(time.time())

    # -- reading requests ----------------------------------------------------------------------

    async def body(self, request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"the request body is {int(declared) / 2**20:.1f} MB, over this "
                                f"server's limit of {limit / 2**20:.1f} MB")
        reserved = int(declared) if declared and declared.isdigit() else 0
        self.bodies.take(request, reserved)
        chunks, size = [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise APIError(413, f"the request body is over this server's limit of "
                                    f"{limit / 2**20:.1f} MB")
            if size > reserved:
                self.bodies.take(request, size - reserved)
                reserved = size
            chunks.append(piece)
        return b"".join(chunks)

    async def json_body(self, request: Request) -> Any:
        raw = await self.body(request, self.config.max_body_bytes)
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the body is not valid JSON ({exc})") from None

    async def register(self, path: Path, name: str | None = None) -> Video:
        """``library.register`` (its probe) on one of the engine's probe threads (see there)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.engine.probes, self.library.register, path, name)

    async def video_for(self, url: str, param: str) -> Video:
        """The video a URL names: a media-root file, a data: URL's bytes, or a known id."""
        if url.startswith("file://"):
            path = self.roots.resolve(url, param)
            return await self.register(path)
        if url.startswith("data:"):
            path = await run_in_threadpool(self.uploads.from_data_url, url, param)
            return await self.register(path)
        if "://" in url:
            raise APIError(400, f"{url.split('://')[0]}:// URLs are not fetched: use file:// "
                                "under a media root, a data: URL, or upload the video "
                                "(POST /v1/videos) and use its id", param)
        return self.library.get(url)

    def read_media_file(self, url: str, param: str) -> bytes:
        return self.roots.resolve(url, param).read_bytes()

    def recipe(self, name: str, sampling: dict[str, Any], generation: dict[str, Any],
               param: str | None = None) -> Recipe:
        try:
            return self.recipes[name].with_overrides(**sampling, **generation)
        except VideoVLMError as exc:
            raise APIError(400, str(exc), param) from None

    # -- output --------------------------------------------------------------------------------

    def video_json(self, video: Video, n: int | None = None) -> dict[str, Any]:
        """A video's id, probe facts and the frames the qa recipe would show the model."""
        qa = self.recipes[for_questions(False).recipe]
        n = n or qa.sampling["n"]
        refs = plan(video.info, n, seek=qa.sampling["seek"])
        return {"id": video.id, "name": video.name, "file": f"/v1/videos/{video.id}/file",
                "video": {**video.info.to_dict(), "path": video.name},
                "sampling": {"requested": n, "seek": qa.sampling["seek"],
                             "image_size": self.model.image_size, "fit": qa.sampling["fit"],
                             "frames": [{"index": r.index, "time_s": round(r.time_s, 6)}
                                        for r in refs]}}

    def finished(self, video: Video, result: Result, warm: bool) -> dict[str, Any]:
        """A native run's answer: the Result JSON, the id of its report files, warm or not."""
        rid = secrets.token_hex(8)
        result.video["path"] = video.name  # the server's paths are not the client's business
        _hide_paths(result)
        self.engine.keep(rid, result)
        return {"id": rid, "warm": warm, "video_id": video.id,
                "files": {f: f"/v1/results/{rid}.{f}" for f in REPORT_FORMATS},
                "result": result.to_dict()}


def _hide_paths(result: Result) -> Result:
    """The dialogue's source named by file name only, as the video is."""
    if result.dialogue and result.dialogue.get("path"):
        result.dialogue["path"] = Path(result.dialogue["path"]).name
    return result


def _warm(result: Result) -> bool:
    """Whether a run's prefixes were all warm: it encoded no frames (no ``vision`` stage)."""
    return "vision" not in result.timing_s


def _int_param(request: Request, key: str, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(key)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:
        raise APIError(400, f"{key} must be an integer from {lo} to {hi}, got {raw!r}", key)
    return int(raw)


def create_app(model: Model, config: ServeConfig) -> Starlette:
    """The ASGI application serving ``model``; the upload folder goes when it shuts down."""
    s = Server(model, config)

    async def page(request: Request) -> Response:
        return HTMLResponse(s.page, headers={"content-security-policy": s.csp,
                                             "x-content-type-options": "nosniff",
                                             "referrer-policy": "no-referrer"})

    async def models(request: Request) -> Response:
        return _json({"object": "list", "data": [
            {"id": model.id, "object": "model", "created": s.started, "owned_by": "videovlm",
             "videovlm": model.info()}]})

    async def health(request: Request) -> Response:
        return _json({"status": "draining" if s.engine.draining else "ok",
                      "model": model.id, "pending": s.engine.pending,
                      "max_queue": config.max_queue, "served": s.engine.served,
                      "frames_pending": s.engine.frames_pending,
                      "warm": {**s.engine.warm.stats.to_dict(),
                               "budget": s.engine.warm.budget}})

    async def media(request: Request) -> Response:
        listing = await run_in_threadpool(s.roots.listing)
        return _json({"roots": [str(r) for r in s.roots.roots], "data": listing})

    async def register(request: Request) -> Response:
        n = _int_param(request, "n", 1, config.max_frames)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            body = await s.json_body(request)
            url = body.get("url") if isinstance(body, dict) else None
            if not isinstance(url, str) or not url:
                raise APIError(400, "send {\"url\": \"file:///...\"} (a file under a media "
                                    "root) or the video's bytes as the body", "url")
            video = await s.video_for(url, "url")
        else:
            video = await _upload(request)
        return _json(s.video_json(video, n))

    async def _upload(request: Request) -> Video:
        name = Path(urllib.parse.unquote(request.headers.get("x-filename") or "upload")
                    ).name[:200] or "upload"
        writer = s.uploads.writer()
        try:
            async for piece in request.stream():
                writer.write(piece)
        except BaseException:
            writer.abort()
            raise
        suffix = Path(name).suffix.lower()
        path = writer.finish(suffix if suffix in VIDEO_EXTENSIONS else "")
        return await s.register(path, name)

    async def video_info(request: Request) -> Response:
        video = s.library.get(request.path_params["vid"])
        return _json(s.video_json(video, _int_param(request, "n", 1, config.max_frames)))

    async def video_file(request: Request) -> Response:
        video = s.library.get(request.path_params["vid"])
        # a video type only: an upload's name is the client's, and "x.html" served as HTML
        # from this origin would run whatever script its bytes hold
        kind = next((k for k in (mimetypes.guess_type(n)[0] for n in (video.path.name,
                                                                         video.name))
                     if k and k.startswith("video/")), "video/mp4")
        return FileResponse(video.path, media_type=kind, headers={
            "x-content-type-options": "nosniff",
            "content-security-policy": "default-src 'none'; sandbox"})

    async def frames(request: Request) -> Response:
        video = s.library.get(request.path_params["vid"])
        info = video.info
        raw = request.query_params.get("indices")
        if raw is not None:
            try:
                wanted = sorted({int(i) for i in raw.split(",") if i.strip()})
            except ValueError:
                raise APIError(400, "indices must be frame numbers separated by commas",
                               "indices") from None
            if not wanted or wanted[0] < 0 or wanted[-1] >= info.frame_count:
                raise APIError(400, f"frame indices run from 0 to {info.frame_count - 1}",
                               "indices")
            if len(wanted) > config.max_frames:
                raise APIError(400, f"at most {config.max_frames} frames per request",
                               "indices")
            refs = [FrameRef(i, int(info.timeline.pts[i]), info.timeline.time_s(i))
                    for i in wanted]
        else:
            n = _int_param(request, "n", 1, config.max_frames) or 50
            refs = plan(info, n)
        ticket = s.engine.admit_frames()
        try:
            decoded, _ = await asyncio.get_running_loop().run_in_executor(
                s.engine.decoders, decode_with_backend, info, refs, "auto")
            thumbs = await run_in_threadpool(lambda: [thumbnail_uri(f) for f in decoded])
        finally:
            ticket.release()
        return _json({"video_id": video.id, "frames": [
            {"index": f.index, "time_s": round(f.time_s, 6), "thumbnail": t}
            for f, t in zip(decoded, thumbs, strict=True)]})

    async def native(request: Request, describe: bool) -> Response:
        video = s.library.get(request.path_params["vid"])
        body = await s.json_body(request)
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object")
        known = {"n", "fit", "seek", *chat.DIALOGUE_KEYS, "max_new_tokens", "stream",
                 *(("mode",) if describe else ("questions", "question", "choices"))}
        unknown = sorted(set(body) - known)
        if unknown:
            raise APIError(400, f"unknown key(s) {', '.join(unknown)}: use "
                                f"{', '.join(sorted(known))}", unknown[0])
        sampling, _ = chat.extension({k: body[k] for k in ("n", "fit", "seek",
                                                           *chat.DIALOGUE_KEYS) if k in body},
                                     config, "body")
        generation = {}
        if body.get("max_new_tokens") is not None:
            generation["max_new_tokens"] = chat.number(body, "max_new_tokens", int, 1,
                                                        config.max_new_tokens)
        questions: list[str] | None = None
        choices = None
        if describe:
            mode = body.get("mode") or TASKS[DEFAULT_TASK].mode
            if mode not in DESCRIBE_MODES:
                raise APIError(400, f"mode must be one of {', '.join(DESCRIBE_MODES)}", "mode")
            name = for_mode(mode).recipe
        else:
            raw = body.get("questions", [body["question"]] if "question" in body else None)
            if (not isinstance(raw, list) or not raw
                    or not all(isinstance(q, str) and q.strip() for q in raw)):
                raise APIError(400, "give \"questions\": a list of non-empty strings (or one "
                                    "\"question\")", "questions")
            if len(raw) > config.max_questions:
                raise APIError(400, f"{len(raw)} questions, over this server's limit of "
                                    f"{config.max_questions} (--max-questions)", "questions")
            if any(len(q) > config.max_text for q in raw):
                raise APIError(400, f"a question is over {config.max_text} characters",
                               "questions")
            questions = [q.strip() for q in raw]
            choices = chat.check_choices(body.get("choices"), "choices")
            name = for_questions(bool(choices)).recipe
        recipe = s.recipe(name, sampling, generation)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise APIError(400, "stream must be true or false", "stream")
        if stream and questions and len(questions) > 1:
            raise APIError(400, "stream one question at a time (without stream, several "
                                "questions share one encoding of the video)", "stream")
        ticket = s.engine.admit()
        try:
            entry = await s.engine.warm_video(video, recipe)
        except BaseException:
            ticket.release()
            raise

        def job(sink: TokenSink) -> Result:
            return s.engine.run_video(entry, recipe, sink, questions=questions,
                                      choices=choices)

        if not stream:
            sink = TokenSink(model, None)
            result = await _unless_gone(request, sink, s.engine.on_model(
                lambda: job(sink), ticket, cancelled=sink.cancelled))
            return _json(s.finished(video, result, _warm(result)))
        return StreamingResponse(_native_stream(video, entry, recipe, job, ticket, describe),
                                 media_type="text/event-stream", headers=_SSE_HEADERS)

    async def _native_stream(video: Video, entry: Any, recipe: Recipe,
                             job: Callable[[TokenSink], Result], ticket: Any,
                             describe: bool) -> AsyncIterator[bytes]:
        inputs = entry.inputs
        parts = _parts(recipe, inputs) if describe else [{"part": "answer", "index": 0}]
        yield _sse("frames", {"video_id": video.id, "mode": inputs.mode,
                              "frames": [{"index": f.index, "time_s": round(f.time_s, 6)}
                                         for f in inputs.frames],
                              "parts": parts})
        sinks: list[TokenSink] = []

        async def run(emit: Callable[[dict[str, Any]], None]) -> Result:
            sink = TokenSink(model, emit)
            sinks.append(sink)
            return await s.engine.on_model(lambda: job(sink), ticket, cancelled=sink.cancelled)

        try:
            async for event in stream_events(run):
                if "done" in event:
                    result = event["done"]
                    yield _sse("result", s.finished(video, result, _warm(result)))
                elif "delta" in event:
                    k = event["call"]
                    where = parts[k] if k < len(parts) else {"part": "text", "index": k}
                    yield _sse("delta", {**where, "text": event["delta"]})
        except Exception as exc:  # headers are sent: the error travels as an event
            yield _sse("error", _problem(exc).body())
        finally:
            for sink in sinks:
                sink.cancelled.set()  # a client that left stops its generation

    async def describe_route(request: Request) -> Response:
        return await native(request, True)

    async def ask_route(request: Request) -> Response:
        return await native(request, False)

    async def report(request: Request) -> Response:
        rid, fmt = request.path_params["rid"], request.path_params["fmt"]
        if fmt not in REPORT_FORMATS:
            raise APIError(404, f"no {fmt!r} report: use {', '.join(REPORT_FORMATS)}", "format")
        result = s.engine.results.get(rid)
        if result is None:
            raise APIError(404, f"no result {rid!r} (the server keeps the latest "
                                f"{KEPT_RESULTS}): run it again", "id")
        stem = Path(str(result.video.get("path") or "video")).stem or "video"
        files = await run_in_threadpool(WRITERS[fmt].render, result, stem)
        data = files[f"{stem}.{fmt}"]
        return Response(data, media_type=_MEDIA_TYPES[fmt], headers={
            "content-disposition": f'attachment; filename="{_ascii_name(stem)}.{fmt}"'})

    async def completions(request: Request) -> Response:
        req = chat.parse_chat(await s.json_body(request), config)
        if req.model is not None and req.model != model.id:
            raise APIError(404, f"model {req.model!r} is not served here: use {model.id!r} "
                                "(GET /v1/models)", "model", code="model_not_found")
        cid = chat.completion_id()
        # what can be refused is refused before the queue: a bad path is a 400, never a 503
        video = await s.video_for(*req.video) if req.video is not None else None
        ticket = s.engine.admit()
        try:
            run = await _prepare_chat(req, video)
        except BaseException:
            ticket.release()
            raise
        # the body's budget is given back when this returns: a stream keeps no data: URL
        req = dataclasses.replace(req, video=None, images=[], content=[])
        if not req.stream:
            sink = TokenSink(model, None)
            text, extra = await _unless_gone(request, sink, s.engine.on_model(
                lambda: run(sink), ticket, seed=req.seed, cancelled=sink.cancelled))
            return _json(chat.completion(cid, model.id, text, sink.calls[-1], extra))
        return StreamingResponse(_chat_stream(req, cid, run, ticket),
                                 media_type="text/event-stream", headers=_SSE_HEADERS)

    async def _prepare_chat(req: chat.ChatRequest, video: Video | None
                            ) -> Callable[[TokenSink], tuple[str, dict[str, Any]]]:
        """The chat's CPU stage, done now (decoding in the pool); returns its model stage,
        which keeps none of the request's ``data:`` URLs."""
        question, choices = req.question, req.choices
        if video is not None:
            name = for_questions(bool(req.choices)).recipe
            recipe = s.recipe(name, req.sampling, req.generation, chat.EXTENSION)
            entry = await s.engine.warm_video(video, recipe)

            def run_video(sink: TokenSink) -> tuple[str, dict[str, Any]]:
                result = _hide_paths(s.engine.run_video(entry, recipe, sink,
                                                        questions=[question], choices=choices))
                answer = result.answers[0]
                return answer.answer, {
                    "video_id": video.id, "warm": _warm(result), "choice": answer.choice,
                    "frames": result.sampling["frames"], "dialogue": result.dialogue,
                    "timing_s": result.timing_s, "warnings": result.warnings}

            return run_video
        recipe = s.recipe(for_questions(False).recipe, {}, req.generation)
        generation = {**recipe.generation}
        fit = recipe.sampling["fit"]
        images = []
        for url, param in req.images:
            pixels = await run_in_threadpool(chat.read_image, url, param, s.read_media_file)
            images.append(await run_in_threadpool(prepare_image, pixels, model.image_size, fit))
        content = [{"type": "image"} if p["type"] == "image_url" else p for p in req.content]

        def run_images(sink: TokenSink) -> tuple[str, dict[str, Any]]:
            if images:
                text = s.engine.run_images(content, images, generation, sink)
            else:
                text = model.generate_text(question, streamer=sink, **generation)
            return text, {"images": len(images)}

        return run_images

    async def _chat_stream(req: chat.ChatRequest, cid: str,
                           run: Callable[[TokenSink], tuple[str, dict[str, Any]]],
                           ticket: Any) -> AsyncIterator[bytes]:
        sinks: list[TokenSink] = []

        async def go(emit: Callable[[dict[str, Any]], None]) -> tuple[str, dict[str, Any]]:
            sink = TokenSink(model, emit)
            sinks.append(sink)
            return await s.engine.on_model(lambda: run(sink), ticket, seed=req.seed,
                                           cancelled=sink.cancelled)

        yield _sse(None, chat.chunk(cid, model.id, {"role": "assistant", "content": ""}))
        try:
            async for event in stream_events(go):
                if "delta" in event:
                    yield _sse(None, chat.chunk(cid, model.id, {"content": event["delta"]}))
                elif "done" in event:
                    _, extra = event["done"]
                    call = sinks[0].calls[-1]
                    yield _sse(None, chat.chunk(cid, model.id, {}, call["finish_reason"],
                                                **{chat.EXTENSION: extra}))
                    if req.include_usage:
                        yield _sse(None, {**chat.chunk(cid, model.id, {}), "choices": [],
                                          "usage": chat.usage(call)})
        except Exception as exc:
            yield _sse(None, _problem(exc).body())
        finally:
            for sink in sinks:
                sink.cancelled.set()
        yield b"data: [DONE]\n\n"

    def guarded(handler: Callable[[Request], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return _error(_problem(exc))
            finally:
                s.bodies.release(request)  # its body is parsed and its video decoded by now
        return run

    routes = [
        Route("/", guarded(page), methods=["GET"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/health", guarded(health), methods=["GET"]),
        Route("/v1/chat/completions", guarded(completions), methods=["POST"]),
        Route("/v1/media", guarded(media), methods=["GET"]),
        Route("/v1/videos", guarded(register), methods=["POST"]),
        Route("/v1/videos/{vid}", guarded(video_info), methods=["GET"]),
        Route("/v1/videos/{vid}/file", guarded(video_file), methods=["GET"]),
        Route("/v1/videos/{vid}/frames", guarded(frames), methods=["GET"]),
        Route("/v1/videos/{vid}/describe", guarded(describe_route), methods=["POST"]),
        Route("/v1/videos/{vid}/ask", guarded(ask_route), methods=["POST"]),
        Route("/v1/results/{rid}.{fmt}", guarded(report), methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        what = {404: f"no such endpoint: {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}"}
        return _error(APIError(exc.status_code, what.get(exc.status_code, str(exc.detail))))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            s.engine.close()
            s.uploads.close()

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error},
                    lifespan=lifespan)
    app.state.server = s
    app.add_middleware(KeyCheck, key=config.api_key)
    app.add_middleware(SameOrigin, config=config)
    return app


def _parts(recipe: Recipe, inputs: Any) -> list[dict[str, Any]]:
    """What each model call of a describe run writes, in call order (the runners'
    :mod:`videovlm.tasks` order): one per scene, or the timeline, then the summary."""
    if inputs.mode == "scenes":
        parts = [{"part": "scene", "index": i, "start_s": g.start_s, "end_s": g.end_s}
                 for i, g in enumerate(inputs.groups)]
    else:
        parts = [{"part": inputs.mode, "index": 0, "start_s": 0.0,
                  "end_s": inputs.info.duration_s}]
    if recipe.has_prompt("summary"):
        parts.append({"part": "summary", "index": 0})
    return parts


def _ascii_name(stem: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in stem)
