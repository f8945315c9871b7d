"""Serve benchmark: a warm follow-up question against the first, and a bounded load test.

One command, ``python benchmarks/serve.py`` (``--only warm`` or ``--only load``; ``--seconds``
shortens the load test). Each part starts a real ``videovlm serve`` process (the CLI, on a free
port) and talks to it over HTTP as clients do:

- **warm** (the 256M shape: SmolVLM2-256M's layer sizes with random weights, so its timings
  are the real model's; ``--no-cache`` so the first question really runs the vision tower): the
  first question about ``samples/bikes.mp4`` (50 frames), then follow-up questions about the
  same video (open, and one multiple choice, which shares the prefix), each timed at the client
  from request to last byte. Target: a follow-up <= 0.1x the first.
- **load** (the tiny checkpoint): 40 concurrent clients for 60 s, each sending in turn chat
  questions (plain and streamed) about the three samples at two frame budgets, native describe
  and multiple-choice asks, and bad requests, against ``--max-queue 8`` (a client refused with
  503 waits 0.25 s before its next request, as a retrying client would). Every response must be
  right (the shape of its kind, or the 4xx a bad request deserves) or a 503 "overloaded"; the
  server's memory is sampled throughout (``/proc``) to show it stays bounded.

Results go to stdout and ``benchmarks/results/serve.md``. These machines are shared: timings
were taken with other work running, so compare the ratios, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SAMPLES = [REPO / "samples" / name for name in ("bikes.mp4", "world.mp4", "bigbuckbunny.mp4")]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from batch import checkpoint  # noqa: E402  (the shape-faithful checkpoint, built once)

from tests.helpers import ServeProcess  # noqa: E402  (the server process the tests start)


def chat_body(video: Path, question: str, n: int | None = None, max_tokens: int = 32,
              stream: bool = False, choices: list[str] | None = None) -> dict[str, Any]:
    ext: dict[str, Any] = {}
    if n:
        ext["n"] = n
    if choices:
        ext["choices"] = choices
    return {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": video.as_uri()}},
        {"type": "text", "text": question}]}],
        "max_tokens": max_tokens, "stream": stream, "videovlm": ext}


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (Linux: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- warm ---------------------------------------------------------------------------------------


def warm(model: Path, tokens: int) -> list[str]:
    server = ServeProcess(["--model", str(model), "--media-root", str(REPO / "samples"),
                           "--no-cache"])
    video = SAMPLES[0]
    rows = []
    try:
        with httpx.Client(base_url=server.url, timeout=600) as http:
            asked = [("first question", "What happens in this video, and where?", None),
                     ("follow-up 1", "What vehicles appear?", None),
                     ("follow-up 2", "Is it day or night?", None),
                     ("follow-up 3", "How many people can you see?", None),
                     ("follow-up, multiple choice", "Where is this?",
                      ["a city street", "a beach", "a forest"])]
            for label, question, choices in asked:
                t0 = time.perf_counter()
                r = http.post("/v1/chat/completions",
                              json=chat_body(video, question, max_tokens=tokens,
                                             choices=choices))
                wall = time.perf_counter() - t0
                r.raise_for_status()
                body = r.json()
                ext = body["videovlm"]
                rows.append({"label": label, "wall": wall, "usage": body["usage"],
                             "warm": ext["warm"], "timing": ext["timing_s"],
                             "choice": ext["choice"]})
                print(f"{label}: {wall:.2f} s, {body['usage']}, warm={ext['warm']}",
                      file=sys.stderr)
            health = http.get("/v1/health").json()
        rss = peak_rss_mb(server.proc.pid)
    finally:
        server.stop()
    first = rows[0]["wall"]
    follow = [r["wall"] for r in rows[1:]]
    ratio = statistics.median(follow) / first
    lines = ["## First question vs follow-ups (256M shape, 50 frames of bikes.mp4)", "",
             f"{tokens} new tokens asked per answer, greedy; wall time at the client, request "
             "to last byte; the server's own stage times from the response's `videovlm` "
             "field.", "",
             "| question | wall s | vision s | decode+prepare s | generate s | prompt tokens "
             "| new tokens | warm | / first |", "|" + " --- |" * 9]
    for r in rows:
        t = r["timing"]
        lines.append(f"| {r['label']} | {r['wall']:.2f} | {t.get('vision', 0):.2f} | "
                     f"{t.get('decode', 0) + t.get('prepare', 0):.2f} | "
                     f"{t.get('generate', 0):.2f} | {r['usage']['prompt_tokens']:,} | "
                     f"{r['usage']['completion_tokens']} | {r['warm']} | "
                     f"{r['wall'] / first:.3f}x |")
    warm_mb = health["warm"]["bytes"] / 2**20
    lines += ["", f"Median follow-up / first: **{ratio:.3f}x** (target <= 0.1x: "
              f"{'met' if ratio <= 0.1 else 'not met'}). Warm cache after the run: "
              f"{health['warm']['entries']} video(s), {warm_mb:.0f} MB (the KV cache of "
              f"{rows[0]['usage']['prompt_tokens']:,} tokens and 50 prepared frames); server "
              f"peak RSS {rss:.0f} MB.", ""]
    return lines


# -- load ---------------------------------------------------------------------------------------

BAD = [
    ("outside the root", {"json": chat_body(Path("/etc/passwd"), "?")}, 400),
    ("bad json", {"content": b"{oops"}, 400),
    ("unknown part", {"json": {"messages": [{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": "x"}}]}]}}, 400),
    ("too many frames", {"json": chat_body(SAMPLES[0], "?", n=500)}, 400),
]


BACKOFF_S = 0.25
"""A refused client waits this long before its next request, as a retrying client would."""


class Load:
    """The load test's tallies: per kind, answers that were right, 503s, and anything else."""

    def __init__(self) -> None:
        self.ok: dict[str, list[float]] = {}
        self.busy: dict[str, list[float]] = {}
        self.wrong: list[str] = []

    def note(self, kind: str, seconds: float, status: str) -> None:
        if status == "ok":
            self.ok.setdefault(kind, []).append(seconds)
        elif status == "busy":
            self.busy.setdefault(kind, []).append(seconds)
        else:
            self.wrong.append(f"{kind}: {status}")


def _check(kind: str, r: httpx.Response, text: str) -> str:
    """``ok``, ``busy`` (503 overloaded), or what is wrong with the response."""
    if r.status_code == 503:
        error = json.loads(text)["error"]
        return "busy" if error["code"] == "overloaded" else f"503 {error}"
    if kind.startswith("bad"):
        expected = next(code for name, _, code in BAD if kind == f"bad: {name}")
        ok = r.status_code == expected and json.loads(text)["error"]["message"]
        return "ok" if ok else f"{r.status_code} {text[:200]}"
    if r.status_code != 200:
        return f"{r.status_code} {text[:200]}"
    if kind == "chat stream":
        chunks = [json.loads(line[6:]) for line in text.splitlines()
                  if line.startswith("data: {")]
        good = (text.rstrip().endswith("data: [DONE]") and not any("error" in c for c in chunks)
                and any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks))
        return "ok" if good else f"bad stream {text[-300:]}"
    body = json.loads(text)
    if kind == "chat":
        good = (isinstance(body["choices"][0]["message"]["content"], str)
                and body["usage"]["prompt_tokens"] > 0)
    elif kind == "describe":
        good = bool(body["result"]["segments"])
    else:  # ask, multiple choice
        good = all(a["choice"] in "ABC" for a in body["result"]["answers"])
    return "ok" if good else f"bad body {text[:300]}"


async def _client(http: httpx.AsyncClient, k: int, deadline: float, ids: list[str],
                  tally: Load) -> None:
    i = 0
    while time.perf_counter() < deadline:
        pick = (k + i) % 10
        video = SAMPLES[(k + i) % 3]
        n = 4 if (k + i) % 2 else 8
        if pick <= 4:
            kind, call = "chat", {"json": chat_body(video, f"Question {i % 5}?", n=n,
                                                    max_tokens=16)}
            path = "/v1/chat/completions"
        elif pick == 5:
            kind, call = "chat stream", {"json": chat_body(video, "Stream it.", n=n,
                                                           max_tokens=16, stream=True)}
            path = "/v1/chat/completions"
        elif pick <= 7:
            kind, path = "describe", f"/v1/videos/{ids[(k + i) % 3]}/describe"
            call = {"json": {"n": 4, "max_new_tokens": 12}}
        elif pick == 8:
            kind, path = "ask", f"/v1/videos/{ids[(k + i) % 3]}/ask"
            call = {"json": {"question": "Which?", "choices": ["a", "b", "c"], "n": n,
                             "max_new_tokens": 4}}
        else:
            name, call, _ = BAD[(k + i) // 10 % len(BAD)]
            kind, path = f"bad: {name}", "/v1/chat/completions"
        t0 = time.perf_counter()
        try:
            r = await http.post(path, **call)
            status = _check(kind, r, r.text)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            status = f"{type(exc).__name__}: {exc}"
        tally.note(kind, time.perf_counter() - t0, status)
        if status == "busy":
            await asyncio.sleep(BACKOFF_S)
        i += 1


def load(model: Path, seconds: float, clients: int, max_queue: int) -> list[str]:
    server = ServeProcess(["--model", str(model), "--media-root", str(REPO / "samples"),
                           "--max-queue", str(max_queue)])
    pid = server.proc.pid
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.wait(0.5):
            samples.append((time.perf_counter() - t0, rss_mb(pid)))

    async def run() -> Load:
        tally = Load()
        limits = httpx.Limits(max_connections=clients + 8)
        async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as http:
            ids = []
            for video in SAMPLES:
                r = await http.post("/v1/videos", json={"url": video.as_uri()})
                ids.append(r.json()["id"])
            deadline = time.perf_counter() + seconds
            await asyncio.gather(*(_client(http, k, deadline, ids, tally)
                                   for k in range(clients)))
        return tally

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    try:
        tally = asyncio.run(run())
        wall = time.perf_counter() - t0
        alive = httpx.get(server.url + "/v1/health").json()
        peak = peak_rss_mb(pid)
    finally:
        stop.set()
        code = server.stop()
    answered = sum(len(v) for v in tally.ok.values())
    refused = sum(len(v) for v in tally.busy.values())
    total = answered + refused + len(tally.wrong)
    lines = [f"## Load: {clients} concurrent clients, {seconds:.0f} s, tiny checkpoint, "
             f"--max-queue {max_queue}", "",
             "| kind | answered right | 503 (queue full) | wrong | p50 s | p95 s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for kind in sorted(set(tally.ok) | set(tally.busy)):
        times = sorted(tally.ok.get(kind, []))
        p50 = statistics.median(times) if times else float("nan")
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))] if times else float("nan")
        wrong = sum(1 for w in tally.wrong if w.startswith(kind + ":"))
        lines.append(f"| {kind} | {len(times)} | {len(tally.busy.get(kind, []))} | {wrong} | "
                     f"{p50:.2f} | {p95:.2f} |")
    ok_times = sorted(t for v in tally.ok.values() for t in v)
    model_ok = sorted(t for k, v in tally.ok.items() if not k.startswith("bad") for t in v)
    early = max((m for t, m in samples if t <= 10), default=float("nan"))
    lines += ["", f"{total} requests in {wall:.1f} s: **{total / wall:.1f} requests/s** "
              f"({answered} answered right, {refused} refused with 503, "
              f"{len(tally.wrong)} wrong); model answers {len(model_ok) / wall:.2f}/s, "
              f"p50 {statistics.median(model_ok):.2f} s, "
              f"p95 {model_ok[int(0.95 * (len(model_ok) - 1))]:.2f} s (all right answers: "
              f"p50 {statistics.median(ok_times):.2f} s). Server peak RSS **{peak:.0f} MB** "
              f"(RSS {early:.0f} MB after 10 s, {samples[-1][1]:.0f} MB at the end); still "
              f"serving after the run ({alive['status']}, {alive['served']} model requests "
              f"served, warm cache {alive['warm']['entries']} videos, "
              f"{alive['warm']['bytes'] / 2**20:.0f} MB); exit code after SIGTERM {code}.", ""]
    if tally.wrong:
        lines += ["Wrong answers:", "", *(f"- {w}" for w in tally.wrong[:20]), ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("warm", "load"), default=None)
    parser.add_argument("--seconds", type=float, default=60.0, help="load test length")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per warm answer")
    parser.add_argument("--model", type=Path, default=None,
                        help="a checkpoint for the warm part instead of the 256M shape")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve.md")
    args = parser.parse_args(argv)
    lines = ["# videovlm serve", "",
             f"{dt.date.today()}, {platform.machine()}, "
             f"{len(os.sched_getaffinity(0))} CPUs shared with other work; "
             f"Python {platform.python_version()}.", ""]
    if args.only in (None, "warm"):
        lines += warm(checkpoint(args.model, "256m"), args.tokens)
    if args.only in (None, "load"):
        lines += load(checkpoint(None, "tiny"), args.seconds, args.clients, args.max_queue)
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
