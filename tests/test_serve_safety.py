"""``videovlm serve``'s guards, each against a real server process: the API key, the bounded
queue (503, not a pile-up), SIGTERM (the request in flight finishes, then a clean exit), the
warning for a non-loopback address, and the CLI's one-line refusals."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests import media
from tests.helpers import ServeProcess, run_cli

pytestmark = pytest.mark.slow

LONG = 400  # new tokens: a generation that lasts long enough to overlap another request


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media.make_video(tmp_path_factory.mktemp("root") / "clip.mp4", n_frames=24)


@pytest.fixture(scope="module")
def guarded(tiny_smolvlm: Path, clip: Path):
    """A server with an API key and no room to queue: one generation at a time, nobody waits."""
    proc = ServeProcess(["--model", str(tiny_smolvlm), "--media-root", str(clip.parent),
                         "--api-key", "s3cret", "--max-queue", "0"])
    yield proc
    assert proc.stop() == 0, proc.stderr


@pytest.fixture(scope="module")
def small(tiny_smolvlm: Path, clip: Path):
    """A server with small limits, no key: bodies up to ~11.7 MB (a budget of two of them), one
    decode thread, nobody waiting behind it."""
    proc = ServeProcess(["--model", str(tiny_smolvlm), "--media-root", str(clip.parent),
                         "--max-upload-mb", "8", "--max-queue", "0", "--workers", "1"])
    yield proc
    assert proc.stop() == 0, proc.stderr


def _rss_mb(proc: ServeProcess) -> float:
    status = Path(f"/proc/{proc.proc.pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _body(clip: Path, max_tokens: int, stream: bool = False) -> dict:
    return {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": clip.as_uri()}},
        {"type": "text", "text": "Tell me everything."}]}],
        "max_tokens": max_tokens, "stream": stream, "videovlm": {"n": 2}}


def test_without_the_key_every_request_is_401(guarded: ServeProcess, clip: Path) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        for method, path in [("GET", "/"), ("GET", "/v1/models"),
                             ("POST", "/v1/chat/completions"), ("GET", "/v1/media")]:
            r = httpx.request(method, guarded.url + path, headers=headers)
            assert r.status_code == 401, (method, path)
            assert r.json()["error"]["type"] == "authentication_error"
    bad = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="s3cret", max_retries=0)
    assert good.models.list().data
    # the page: opened once with the key, which becomes a cookie (the player sends no header)
    with httpx.Client(base_url=guarded.url, follow_redirects=True) as browser:
        page = browser.get("/", params={"api_key": "s3cret"})
        assert page.status_code == 200 and "<video" in page.text
        assert str(page.url).endswith("/")  # the key does not stay in the address bar
        assert browser.get("/v1/media").status_code == 200


def test_a_full_queue_answers_503_at_once(guarded: ServeProcess, clip: Path) -> None:
    headers = {"authorization": "Bearer s3cret"}
    started = threading.Event()
    done: list[str] = []

    def long_stream() -> None:
        with httpx.stream("POST", guarded.url + "/v1/chat/completions", headers=headers,
                          json=_body(clip, LONG, stream=True), timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and '"content": "' in line:
                    started.set()
                if line == "data: [DONE]":
                    done.append(line)

    worker = threading.Thread(target=long_stream)
    worker.start()
    assert started.wait(60), "the first request never streamed"
    t0 = time.perf_counter()
    r = httpx.post(guarded.url + "/v1/chat/completions", headers=headers,
                   json=_body(clip, 2), timeout=60)
    waited = time.perf_counter() - t0
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "overloaded" and "--max-queue 0" in error["message"]
    worker.join(120)
    assert done, "the first request did not finish"
    assert waited < 5, "a refusal must not wait for the model"
    assert httpx.post(guarded.url + "/v1/chat/completions", headers=headers,
                      json=_body(clip, 2), timeout=60).status_code == 200


def test_a_client_that_leaves_stops_its_generation(guarded: ServeProcess, clip: Path) -> None:
    headers = {"authorization": "Bearer s3cret"}
    with httpx.stream("POST", guarded.url + "/v1/chat/completions", headers=headers,
                      json=_body(clip, 1024, stream=True), timeout=120) as r:
        for line in r.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the first words, then the client hangs up
    t0 = time.perf_counter()
    while httpx.get(guarded.url + "/v1/health", headers=headers).json()["pending"]:
        assert time.perf_counter() - t0 < 10, "the abandoned generation kept the model"
        time.sleep(0.05)
    left = time.perf_counter() - t0
    t0 = time.perf_counter()
    whole = httpx.post(guarded.url + "/v1/chat/completions", headers=headers,
                       json=_body(clip, 1024), timeout=120)
    assert whole.status_code == 200
    assert left < 0.5 * (time.perf_counter() - t0)  # what the abandoned one would have cost


def test_a_client_that_leaves_without_streaming_stops_its_generation(guarded: ServeProcess,
                                                                     clip: Path) -> None:
    headers = {"authorization": "Bearer s3cret"}
    health = guarded.url + "/v1/health"
    served = httpx.get(health, headers=headers).json()["served"]
    host, port = guarded.url.removeprefix("http://").split(":")
    payload = json.dumps(_body(clip, 1024)).encode()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Authorization: Bearer s3cret\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        t0 = time.perf_counter()
        while not httpx.get(health, headers=headers).json()["pending"]:
            assert time.perf_counter() - t0 < 30, "the request never took its place"
            time.sleep(0.02)
        time.sleep(0.5)  # generating by now; then the client hangs up without an answer
    t0 = time.perf_counter()
    while httpx.get(health, headers=headers).json()["pending"]:
        assert time.perf_counter() - t0 < 10, "the abandoned generation kept the model"
        time.sleep(0.05)
    left = time.perf_counter() - t0
    assert httpx.get(health, headers=headers).json()["served"] == served  # it was cut short
    t0 = time.perf_counter()
    whole = httpx.post(guarded.url + "/v1/chat/completions", headers=headers,
                       json=_body(clip, 1024), timeout=120)
    assert whole.status_code == 200 and whole.json()["usage"]["completion_tokens"] > 100
    assert left < 0.5 * (time.perf_counter() - t0)  # what the abandoned one would have cost


def test_sigterm_finishes_the_request_in_flight_then_exits(tiny_smolvlm: Path, clip: Path,
                                                           tmp_path: Path) -> None:
    proc = ServeProcess(["--model", str(tiny_smolvlm), "--media-root", str(clip.parent),
                         "--host", "0.0.0.0"], env={"TMPDIR": str(tmp_path)})
    assert "without --api-key" in proc.stderr  # listening beyond this machine, unguarded
    url = proc.url.replace("0.0.0.0", "127.0.0.1")
    upload = httpx.post(url + "/v1/videos", content=clip.read_bytes())
    assert upload.status_code == 200 and list(tmp_path.iterdir())
    chunks: list[dict] = []
    started = threading.Event()
    ended: list[str] = []

    def stream() -> None:
        with httpx.stream("POST", url + "/v1/chat/completions", json=_body(clip, LONG, True),
                          timeout=120) as r:
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    ended.append(line)
                elif line.startswith("data: "):
                    chunks.append(json.loads(line[6:]))
                    if chunks[-1]["choices"] and chunks[-1]["choices"][0]["delta"].get("content"):
                        started.set()

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(60)
    code = proc.stop()
    worker.join(120)
    assert code == 0, proc.stderr
    assert ended, "the request in flight was cut off"
    finish = [c["choices"][0]["finish_reason"] for c in chunks
              if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and "error" not in chunks[-1]
    assert not list(tmp_path.iterdir()), "uploads outlived the server"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v1/models")


def test_the_cli_refuses_bad_settings_in_one_line(tiny_smolvlm: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert run_cli(["serve", "--model", str(tiny_smolvlm), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1
    assert run_cli(["serve", "--media-root", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli(["serve", "--model", str(tiny_smolvlm), "-n", "500", "--port", "0"]) == 2
    assert "--max-frames" in capsys.readouterr().err


def test_many_large_bodies_at_once_stay_within_a_memory_budget(small: ServeProcess,
                                                               clip: Path) -> None:
    """24 clients each send most of a 10 MB JSON body (a data: video padded with spaces), then
    hold it: the server reads at most its budget of them (two bodies of the largest size), and
    the rest are refused with 503 before their bodies are sent (Expect: 100-continue, so a
    client learns it at once)."""
    clients, size = 24, 10 * 2**20
    head = json.dumps({"url": "data:video/mp4;base64,"
                       + base64.b64encode(clip.read_bytes()).decode()}).encode()
    body = head + b" " * (size - len(head))
    host, port = small.url.removeprefix("http://").split(":")
    before = _rss_mb(small)
    holding = threading.Barrier(clients + 1, timeout=60)
    measured = threading.Event()
    statuses: list[int] = []

    def client() -> None:
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(f"POST /v1/videos HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Content-Type: application/json\r\nExpect: 100-continue\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode())
            reply = sock.makefile("rb")
            first = int(reply.readline().split()[1])
            if first != 100:  # refused before sending the body
                holding.wait()
                statuses.append(first)
                return
            reply.readline()
            sock.sendall(body[: size * 9 // 10])
            holding.wait()  # every client is holding its body or was refused
            measured.wait(60)
            sock.sendall(body[size * 9 // 10:])
            statuses.append(int(reply.readline().split()[1]))

    workers = [threading.Thread(target=client) for _ in range(clients)]
    for w in workers:
        w.start()
    holding.wait()
    time.sleep(0.5)  # what was sent has reached the server
    held = _rss_mb(small) - before
    measured.set()
    for w in workers:
        w.join(60)
    assert sorted(set(statuses)) == [200, 503], statuses
    assert statuses.count(200) >= 2 and len(statuses) == clients
    budget_mb = 2 * (8 * 4 / 3 + 1)
    assert held < 3 * budget_mb, f"the server held {held:.0f} MB of bodies"  # unbounded: ~240
    after = httpx.post(small.url + "/v1/videos", json={"url": clip.as_uri()})
    assert after.status_code == 200  # the budget was given back; the server still serves


def test_a_flood_of_frame_requests_is_refused_with_503(small: ServeProcess, clip: Path) -> None:
    """Thumbnails need no model but the decode threads: with one thread and --max-queue 0, one
    frames request decodes at a time and the others at that moment get 503 at once."""
    long = media.make_video(clip.parent / "long.mp4", n_frames=240, size=(640, 360))
    vid = httpx.post(small.url + "/v1/videos", json={"url": long.as_uri()}).json()["id"]
    start = threading.Barrier(12)
    answers: list[httpx.Response] = []

    def thumbs() -> None:
        start.wait(30)
        answers.append(httpx.get(f"{small.url}/v1/videos/{vid}/frames", params={"n": 128},
                                 timeout=120))

    workers = [threading.Thread(target=thumbs) for _ in range(12)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    codes = sorted(r.status_code for r in answers)
    assert codes[0] == 200 and codes[-1] == 503 and set(codes) == {200, 503}, codes
    refused = next(r for r in answers if r.status_code == 503).json()["error"]
    assert refused["code"] == "overloaded" and "--workers 1" in refused["message"]
    assert httpx.get(small.url + "/v1/health").json()["frames_pending"] == 0
    again = httpx.get(f"{small.url}/v1/videos/{vid}/frames", params={"indices": "0,239"})
    assert again.status_code == 200 and len(again.json()["frames"]) == 2
