"""The OpenAI chat-completions shape: a request read into what videovlm runs, and the
response and stream chunks written back as OpenAI's clients parse them.

What a request may hold, and what it becomes:

- ``messages``: the question is the text of the last ``user`` message, after the text of any
  ``system`` message; earlier turns are accepted and not sent to the model (each question
  continues from the video's warm prefix, not from a transcript). Content is a string or a list
  of parts: ``text``, ``video_url`` (at most one video) or ``image_url`` (up to
  ``--max-images``; not with a video). A video is run through the ``qa`` recipe's frames and
  prompt (``mcq`` with ``choices``); images go into one chat turn in the order given, one
  model-size image each; text alone is a text-only turn.
- URLs: ``file:///path`` under a ``--media-root``, ``data:video/...;base64,...`` (or
  ``data:image/...`` for images), or the ``id`` ``POST /v1/videos`` returned. The server fetches
  nothing from the network.
- ``max_tokens`` (or ``max_completion_tokens``), ``temperature`` (0 or absent: greedy; above 0:
  sampling), ``top_p``, ``seed``, ``stream``, ``stream_options.include_usage``.
- The extension field ``videovlm``: ``{"n": frames, "fit": "squash"|"crop"|"pad",
  "seek": "exact"|"keyframe", "choices": ["option", ...], "subtitles": "auto"|"none",
  "subtitle_lang": "en"}`` (subtitles: a sidecar next to the video or a text stream in it, shown
  after the frames they are said during; the server's ``--subtitles`` when absent; a client
  never names a file). The response carries a
  ``videovlm`` object too: the frames used, the choice letter, whether the video was warm, and
  the timings.

Refused with a 400 (they would change the answer and are not supported): ``n`` other than 1,
``stop``, ``tools``/``functions``, ``logprobs``, a ``response_format`` other than text.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from videovlm.serve.config import ServeConfig
from videovlm.serve.errors import APIError
from videovlm.text import MAX_CHOICES

EXTENSION = "videovlm"
_SAMPLING_KEYS = ("n", "fit", "seek")
DIALOGUE_KEYS = ("subtitles", "subtitle_lang")
_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call")


@dataclass
class ChatRequest:
    """A chat-completions request, checked: what to run and how."""

    model: str | None
    question: str
    video: tuple[str, str] | None = None  # (url, param)
    images: list[tuple[str, str]] = field(default_factory=list)
    content: list[dict[str, Any]] = field(default_factory=list)  # text and image parts, in order
    generation: dict[str, Any] = field(default_factory=dict)  # recipe overrides
    sampling: dict[str, Any] = field(default_factory=dict)  # n, fit, seek
    choices: list[str] | None = None
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False


def number(body: Mapping[str, Any], key: str, kind: type, lo: float, hi: float) -> Any:
    """``body[key]`` checked to be a ``kind`` number within ``[lo, hi]`` (None when absent)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise APIError(400, f"{key} must be {'a number' if kind is float else 'an integer'}, "
                            f"got {value!r}", key)
    if not lo <= value <= hi:
        raise APIError(400, f"{key} must be between {lo:g} and {hi:g}, got {value}", key)
    return value


def _url(part: Mapping[str, Any], kind: str, param: str) -> str:
    inner = part.get(kind)
    url = inner.get("url") if isinstance(inner, dict) else inner
    if not isinstance(url, str) or not url.strip():
        raise APIError(400, f"a {kind} part needs {{\"{kind}\": {{\"url\": ...}}}}: file://, "
                            "data: or an uploaded video's id", f"{param}.{kind}")
    return url.strip()


def parse_chat(body: Any, config: ServeConfig) -> ChatRequest:
    """The request read and checked; every problem is a 400 naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object with \"messages\"")
    for key in _UNSUPPORTED:
        if body.get(key):
            raise APIError(400, f"{key} is not supported by videovlm serve", key)
    if body.get("n") not in (None, 1):
        raise APIError(400, "n must be 1: one answer per request", "n")
    if body.get("stop"):
        raise APIError(400, "stop sequences are not supported by videovlm serve", "stop")
    if body.get("logprobs"):
        raise APIError(400, "logprobs are not supported by videovlm serve", "logprobs")
    fmt = body.get("response_format")
    if fmt and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise APIError(400, "response_format must be text", "response_format")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, "model must be a string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content}", "messages")

    req = ChatRequest(model=model, question="")
    system_texts: list[str] = []
    last_user: int | None = None
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in (
                "system", "developer", "user", "assistant"):
            raise APIError(400, f"{where} must be an object with role system, user or "
                                "assistant", where)
        if message["role"] == "user":
            last_user = i
    if last_user is None:
        raise APIError(400, "messages hold no user message: ask in a {\"role\": \"user\"} "
                            "message", "messages")
    for i, message in enumerate(messages):
        role = message["role"]
        if role in ("system", "developer"):
            system_texts += [p["text"] for p in _parts(message, f"messages[{i}]", config)
                             if p["type"] == "text"]
        elif role == "user":
            parts = _parts(message, f"messages[{i}]", config)
            for p in parts:
                if p["type"] == "video_url":
                    if req.video is not None and req.video != (p["url"], p["param"]):
                        raise APIError(400, "one video per request: ask about each video in "
                                            "its own request", p["param"])
                    req.video = (p["url"], p["param"])
            if i == last_user:
                req.content = [p for p in parts if p["type"] != "video_url"]
    req.images = [(p["url"], p["param"]) for p in req.content if p["type"] == "image_url"]
    texts = [p["text"] for p in req.content if p["type"] == "text"]
    req.question = "\n".join(t for t in [*system_texts, *texts] if t.strip()).strip()
    if system_texts:  # the system text leads the turn, images and text keep their order
        req.content.insert(0, {"type": "text", "text": "\n".join(system_texts) + "\n"})
    if not req.question:
        raise APIError(400, f"messages[{last_user}] has no text: ask a question", "messages")
    if len(req.question) > config.max_text:
        raise APIError(400, f"the question is {len(req.question)} characters, over this "
                            f"server's limit of {config.max_text}", "messages")
    if req.video and req.images:
        raise APIError(400, "a request holds a video or images, not both", "messages")
    if len(req.images) > config.max_images:
        raise APIError(400, f"{len(req.images)} images, over this server's limit of "
                            f"{config.max_images} (--max-images)", "messages")

    max_tokens = number(body, "max_completion_tokens", int, 1, config.max_new_tokens)
    if max_tokens is None:
        max_tokens = number(body, "max_tokens", int, 1, config.max_new_tokens)
    temperature = number(body, "temperature", float, 0, 5)
    top_p = number(body, "top_p", float, 0, 1)
    req.seed = number(body, "seed", int, -(2**63), 2**64 - 1)
    if max_tokens is not None:
        req.generation["max_new_tokens"] = max_tokens
    if temperature is not None:
        req.generation["do_sample"] = temperature > 0
        if temperature > 0:
            req.generation["temperature"] = float(temperature)
    if top_p is not None and req.generation.get("do_sample"):
        req.generation["top_p"] = float(top_p)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "stream must be true or false", "stream")
    req.stream = stream
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "stream_options must be an object", "stream_options")
    req.include_usage = bool(options.get("include_usage"))
    req.sampling, req.choices = extension(body.get(EXTENSION), config, EXTENSION)
    if (req.sampling or req.choices) and not req.video:
        raise APIError(400, f"{EXTENSION}.n, fit, seek, choices and subtitles apply to a "
                            "video: add a video_url part", EXTENSION)
    return req


def extension(ext: Any, config: ServeConfig, param: str
              ) -> tuple[dict[str, Any], list[str] | None]:
    """The ``videovlm`` extension (also the native endpoints' body): sampling overrides and
    multiple-choice options, checked against the server's limits."""
    if ext is None:
        return {}, None
    if not isinstance(ext, dict):
        raise APIError(400, f"{param} must be an object {{n, fit, seek, choices, subtitles, "
                            "subtitle_lang}", param)
    unknown = sorted(set(ext) - {*_SAMPLING_KEYS, *DIALOGUE_KEYS, "choices"})
    if unknown:
        raise APIError(400, f"unknown {param} key(s) {', '.join(unknown)}: use n, fit, seek, "
                            "choices, subtitles, subtitle_lang", param)
    sampling = {k: ext[k] for k in (*_SAMPLING_KEYS, *DIALOGUE_KEYS) if ext.get(k) is not None}
    if sampling.get("subtitles") not in (None, "auto", "none"):
        raise APIError(400, f"{param}.subtitles must be \"auto\" or \"none\" (the server reads "
                            "no subtitle file a request names)", f"{param}.subtitles")
    n = sampling.get("n")
    if n is not None and not isinstance(n, bool) and isinstance(n, int) and n > config.max_frames:
        raise APIError(400, f"{n} frames is over this server's limit of {config.max_frames} "
                            "(--max-frames): ask for fewer", f"{param}.n")
    return sampling, check_choices(ext.get("choices"), f"{param}.choices")


def check_choices(choices: Any, param: str) -> list[str] | None:
    if choices is None:
        return None
    if (not isinstance(choices, list) or not 2 <= len(choices) <= MAX_CHOICES
            or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise APIError(400, f"choices must be a list of 2 to {MAX_CHOICES} non-empty "
                            "strings", param)
    return [c.strip() for c in choices]


def _parts(message: Mapping[str, Any], where: str, config: ServeConfig) -> list[dict[str, Any]]:
    """A message's content as checked parts: ``{"type": "text", "text"}`` or
    ``{"type": "image_url"|"video_url", "url", "param"}``."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a string or a list of parts",
                       f"{where}.content")
    out = []
    for j, part in enumerate(content):
        param = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise APIError(400, f"{param} is a text part without a \"text\" string", param)
            out.append({"type": "text", "text": part["text"]})
        elif kind in ("image_url", "video_url"):
            out.append({"type": kind, "url": _url(part, kind, param), "param": param})
        else:
            raise APIError(400, f"{param}: unknown content part type {kind!r}: use text, "
                                "image_url or video_url", f"{param}.type")
    return out


def read_image(url: str, param: str, read_file: Any) -> np.ndarray:
    """An image part's pixels (RGB), from a data: URL or a file under the media root."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.startswith("data:image/") or not header.endswith(";base64"):
            raise APIError(400, "an image data: URL must read data:image/<type>;base64,...",
                           param)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "the image data: URL's base64 does not decode", param) from None
    elif url.startswith("file://"):
        data = read_file(url, param)
    else:
        raise APIError(400, "an image_url must be a data:image/... or file:// URL (the server "
                            "fetches nothing from the network)", param)
    try:
        with warnings.catch_warnings():  # a bomb is refused, not warned about on stderr
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise APIError(400, f"the image_url is over {Image.MAX_IMAGE_PIXELS} pixels: send a "
                            "smaller image", param) from None
    except (UnidentifiedImageError, OSError):
        raise APIError(400, "the image_url is not a readable image (PNG, JPEG, WebP...)",
                       param) from None


# -- responses ------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(call: Mapping[str, Any]) -> dict[str, int]:
    prompt, completion = int(call["prompt_tokens"]), int(call["completion_tokens"])
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion(cid: str, model: str, text: str, call: Mapping[str, Any],
               extra: Mapping[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` object: the answer, why it ended, the exact token counts."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": call["finish_reason"], "logprobs": None,
                         "message": {"role": "assistant", "content": text}}],
            "usage": usage(call), EXTENSION: dict(extra)}


def chunk(cid: str, model: str, delta: Mapping[str, Any], finish: str | None = None,
          **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream."""
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish,
                         "logprobs": None}], **extra}
