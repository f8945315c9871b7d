"""``videovlm serve`` as clients use it: the official ``openai`` client and plain HTTP against a
real server process (the CLI, on a free port) running a tiny random-weight checkpoint.

Answers are gibberish; what is checked is what a client relies on: the OpenAI shapes (both
streaming and not), exact token counts, answers equal to the library's for the same settings,
warm follow-ups that encode nothing, the native endpoints and report files, and a clear 4xx for
every bad request, after which the server still serves.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import httpx
import openai
import pytest
import srt
import webvtt
from PIL import Image

from tests import media
from tests.helpers import ServeProcess
from videovlm.api import run_recipe
from videovlm.model import Model
from videovlm.pipelines import load_recipe
from videovlm.plan import plan
from videovlm.probe import probe

pytestmark = pytest.mark.slow

N = 4  # frames per request: every test stays quick
NEW = 6  # new tokens per answer


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A media root with a clip, a text file named .mp4, a symlink leading out of the root;
    a clip outside the root; and the temporary folder the server's uploads go to."""
    root = tmp_path_factory.mktemp("root")
    outside = tmp_path_factory.mktemp("outside")
    clip = media.make_video(root / "clip.mp4", n_frames=48, fps=24, size=(96, 64))
    media.make_text(root / "notes.mp4")
    secret = media.make_video(outside / "secret.mp4", n_frames=12)
    (root / "link.mp4").symlink_to(secret)
    other = media.make_video(outside / "other.mp4", n_frames=24, size=(64, 96))
    tmp = tmp_path_factory.mktemp("server-tmp")
    return {"root": root, "clip": clip, "notes": root / "notes.mp4", "secret": secret,
            "link": root / "link.mp4", "other": other, "tmp": tmp}


@pytest.fixture(scope="module")
def server(tiny_smolvlm: Path, files: dict[str, Path]):
    proc = ServeProcess(["--model", str(tiny_smolvlm), "--media-root", str(files["root"]),
                         "--max-upload-mb", "1", "--max-frames", "12", "--cache-mb", "256"],
                        env={"TMPDIR": str(files["tmp"])})
    yield proc
    code = proc.stop()
    assert code == 0, proc.stderr
    assert not list(files["tmp"].iterdir()), "the uploads folder outlived the server"


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)


@pytest.fixture(scope="module")
def model(tiny_smolvlm: Path) -> Model:
    return Model.load(str(tiny_smolvlm))


def _ask(path: Path, question: str) -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": path.as_uri()}},
        {"type": "text", "text": question}]}]


def _reference(model: Model, path: Path, question: str):
    """The library's answer with the server's settings: the qa recipe, N frames, NEW tokens."""
    recipe = load_recipe("qa").with_overrides(max_new_tokens=NEW)
    return run_recipe(recipe, path, model=model, questions=[question], n=N)


def test_models_lists_the_served_model(client: openai.OpenAI, tiny_smolvlm: Path) -> None:
    assert [m.id for m in client.models.list()] == [str(tiny_smolvlm)]


def test_chat_answers_as_the_library_does_with_exact_usage(
        client: openai.OpenAI, model: Model, files: dict[str, Path]) -> None:
    question = "What moves in this clip?"
    reply = client.chat.completions.create(
        model=model.id, messages=_ask(files["clip"], question), max_tokens=NEW,
        extra_body={"videovlm": {"n": N}})
    ref = _reference(model, files["clip"], question)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == ref.answers[0].answer
    assert reply.usage.prompt_tokens == ref.prompt["tokens"]
    assert 1 <= reply.usage.completion_tokens <= NEW
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == (
        "length" if reply.usage.completion_tokens == NEW else "stop")
    extra = reply.model_extra["videovlm"]
    assert extra["frames"] == ref.sampling["frames"]
    assert "vision" in extra["timing_s"] or extra["warm"]


def test_follow_up_encodes_nothing_and_answers_as_a_cold_run(
        client: openai.OpenAI, model: Model, files: dict[str, Path]) -> None:
    first = client.chat.completions.create(
        model=model.id, messages=_ask(files["clip"], "Is it day?"), max_tokens=NEW,
        extra_body={"videovlm": {"n": N}})
    question = "Which colour is on the left?"
    follow = client.chat.completions.create(
        model=model.id, messages=_ask(files["clip"], question), max_tokens=NEW,
        extra_body={"videovlm": {"n": N}})
    assert first.model_extra["videovlm"]["video_id"] == follow.model_extra["videovlm"]["video_id"]
    extra = follow.model_extra["videovlm"]
    assert extra["warm"] is True
    assert "vision" not in extra["timing_s"] and "decode" not in extra["timing_s"]
    ref = _reference(model, files["clip"], question)
    assert follow.choices[0].message.content == ref.answers[0].answer
    assert follow.usage.prompt_tokens == ref.prompt["tokens"]


def test_stream_chunks_add_up_to_the_answer(client: openai.OpenAI, model: Model,
                                            files: dict[str, Path]) -> None:
    question = "What shape is drawn?"
    chunks = list(client.chat.completions.create(
        model=model.id, messages=_ask(files["clip"], question), max_tokens=NEW, stream=True,
        stream_options={"include_usage": True}, extra_body={"videovlm": {"n": N}}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(
        model=model.id, messages=_ask(files["clip"], question), max_tokens=NEW,
        extra_body={"videovlm": {"n": N}})
    assert text == whole.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_data_url_video_is_answered_and_warm_the_second_time(
        client: openai.OpenAI, model: Model, files: dict[str, Path]) -> None:
    url = "data:video/mp4;base64," + base64.b64encode(files["other"].read_bytes()).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe it."},
                                             {"type": "video_url", "video_url": {"url": url}}]}]
    first = client.chat.completions.create(model=model.id, messages=messages, max_tokens=NEW,
                                           extra_body={"videovlm": {"n": N}})
    again = client.chat.completions.create(model=model.id, messages=messages, max_tokens=NEW,
                                           extra_body={"videovlm": {"n": N}})
    assert first.model_extra["videovlm"]["warm"] is False
    assert again.model_extra["videovlm"]["warm"] is True
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.prompt_tokens == _reference(model, files["other"],
                                                   "Describe it.").prompt["tokens"]


def test_system_text_leads_the_question(client: openai.OpenAI, model: Model,
                                        files: dict[str, Path]) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *_ask(files["clip"], "Why?")]
    reply = client.chat.completions.create(model=model.id, messages=messages, max_tokens=NEW,
                                           extra_body={"videovlm": {"n": N}})
    ref = _reference(model, files["clip"], "Be brief.\nWhy?")
    assert reply.usage.prompt_tokens == ref.prompt["tokens"]
    assert reply.choices[0].message.content == ref.answers[0].answer


def test_multiple_choice_in_chat_gives_a_letter(client: openai.OpenAI, model: Model,
                                                files: dict[str, Path]) -> None:
    reply = client.chat.completions.create(
        model=model.id, messages=_ask(files["clip"], "Which colour is on the right?"),
        max_tokens=NEW, extra_body={"videovlm": {"n": N, "choices": ["red", "blue", "green"]}})
    assert reply.model_extra["videovlm"]["choice"] in ("A", "B", "C")


def test_image_and_text_only_turns(client: openai.OpenAI, model: Model) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    reply = client.chat.completions.create(model=model.id, max_tokens=NEW, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "What colour?"}]}])
    assert reply.model_extra["videovlm"]["images"] == 1
    # one image is its tokens_per_image tokens plus the few around it, plus the text
    assert model.tokens_per_image < reply.usage.prompt_tokens < model.tokens_per_image + 60
    text = client.chat.completions.create(model=model.id, max_tokens=NEW,
                                          messages=[{"role": "user", "content": "Hello?"}])
    assert text.usage.prompt_tokens < 30 and text.usage.completion_tokens >= 1


def _post(server: ServeProcess, path: str, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, timeout=120, **kwargs)


def test_upload_returns_an_id_the_probe_and_the_planned_frames(
        server: ServeProcess, client: openai.OpenAI, model: Model,
        files: dict[str, Path]) -> None:
    data = files["other"].read_bytes()
    r = _post(server, f"/v1/videos?n={N}", content=data,
              headers={"content-type": "video/mp4", "x-filename": "my%20clip.mp4"})
    assert r.status_code == 200, r.text
    body = r.json()
    info = probe(files["other"])
    assert body["name"] == "my clip.mp4"
    assert body["video"]["duration_s"] == pytest.approx(info.duration_s)
    assert body["video"]["frame_count"] == info.frame_count
    assert body["sampling"]["frames"] == [{"index": f.index, "time_s": pytest.approx(f.time_s)}
                                          for f in plan(info, N)]
    # the id names the video in chat, and the player gets its bytes with range requests
    reply = client.chat.completions.create(model=model.id, max_tokens=NEW, messages=[
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": body["id"]}},
                                     {"type": "text", "text": "And now?"}]}],
        extra_body={"videovlm": {"n": N}})
    assert reply.usage.prompt_tokens == _reference(model, files["other"],
                                                   "And now?").prompt["tokens"]
    part = httpx.get(server.url + body["file"], headers={"range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    thumbs = httpx.get(f"{server.url}/v1/videos/{body['id']}/frames",
                       params={"indices": "0,5"}).json()["frames"]
    assert [t["index"] for t in thumbs] == [0, 5]
    assert all(t["thumbnail"].startswith("data:image/jpeg;base64,") for t in thumbs)


def _register(server: ServeProcess, path: Path) -> str:
    r = _post(server, "/v1/videos", json={"url": path.as_uri()})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_describe_gives_the_result_json_and_report_files(server: ServeProcess,
                                                         files: dict[str, Path]) -> None:
    vid = _register(server, files["clip"])
    r = _post(server, f"/v1/videos/{vid}/describe", json={"n": N, "max_new_tokens": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    result = body["result"]
    assert result["mode"] == "scenes" and result["segments"]
    assert result["segments"][-1]["end_s"] == pytest.approx(probe(files["clip"]).duration_s)
    report = httpx.get(server.url + body["files"]["json"])
    assert report.json()["segments"] == result["segments"]
    assert 'filename="clip.json"' in report.headers["content-disposition"]
    cues = list(srt.parse(httpx.get(server.url + body["files"]["srt"]).text))
    assert [c.start.total_seconds() for c in cues] == pytest.approx(
        [s["start_s"] for s in result["segments"]])
    vtt = webvtt.from_buffer(io.StringIO(httpx.get(server.url + body["files"]["vtt"]).text))
    assert len(vtt.captions) == len(result["segments"])
    html = httpx.get(server.url + body["files"]["html"]).text
    assert "Content-Security-Policy" in html and "data:image/jpeg;base64," in html


def test_describe_streams_each_scene_then_the_result(server: ServeProcess,
                                                     files: dict[str, Path]) -> None:
    vid = _register(server, files["clip"])
    events = []
    with httpx.stream("POST", f"{server.url}/v1/videos/{vid}/describe", timeout=120,
                      json={"n": N, "max_new_tokens": 4, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    names = [n for n, _ in events]
    assert names[0] == "frames" and names[-1] == "result" and "delta" in names
    result = events[-1][1]["result"]
    said: dict[tuple[str, int], str] = {}
    for name, data in events:
        if name == "delta":
            key = (data["part"], data["index"])
            said[key] = said.get(key, "") + data["text"]
    assert [said.get(("scene", i), "") for i in range(len(result["segments"]))] == [
        s["text"] for s in result["segments"]]
    assert said.get(("summary", 0), "") == result["summary"]


def test_ask_answers_with_choice_letters(server: ServeProcess, files: dict[str, Path]) -> None:
    vid = _register(server, files["clip"])
    r = _post(server, f"/v1/videos/{vid}/ask", json={
        "questions": ["Left colour?", "Right colour?"], "choices": ["red", "blue", "green"],
        "n": N, "max_new_tokens": 3})
    assert r.status_code == 200, r.text
    answers = r.json()["result"]["answers"]
    assert [a["question"] for a in answers] == ["Left colour?", "Right colour?"]
    assert all(a["choice"] in ("A", "B", "C") and a["choice_source"] for a in answers)


def test_the_page_is_self_contained(server: ServeProcess) -> None:
    r = httpx.get(server.url + "/")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text


def _chat_body(url: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "Q?"}]}],
        "max_tokens": 2, "videovlm": {"n": 2}, **extra}


def _bad_cases(files: dict[str, Path]) -> list[tuple[str, object, int, str]]:
    root = files["root"]
    big = "data:video/mp4;base64," + base64.b64encode(os.urandom(1_200_000)).decode()
    return [
        ("bad json", b"{not json", 400, "not valid JSON"),
        ("not an object", [], 400, "JSON object"),
        ("no messages", {"model": "x"}, 400, "messages"),
        ("unknown part", {"messages": [{"role": "user", "content": [
            {"type": "audio_url", "audio_url": {"url": "x"}}]}]}, 400, "unknown content part"),
        ("outside the root", _chat_body("file:///etc/passwd"), 400, "not a file under"),
        ("dot-dot", _chat_body(f"file://{root}/../{files['secret'].parent.name}/secret.mp4"),
         400, "not a file under"),
        ("symlink out", _chat_body(files["link"].as_uri()), 400, "not a file under"),
        ("not a video", _chat_body(files["notes"].as_uri()), 400, "notes.mp4"),
        ("too many frames", {**_chat_body(files["clip"].as_uri()), "videovlm": {"n": 13}}, 400,
         "limit of 12"),
        ("too many tokens", _chat_body(files["clip"].as_uri(), max_tokens=5000), 400,
         "max_tokens"),
        ("bad fit", {**_chat_body(files["clip"].as_uri()), "videovlm": {"fit": "zoom"}}, 400,
         "fit"),
        ("web url", _chat_body("https://example.com/v.mp4"), 400, "not fetched"),
        ("unknown id", _chat_body("0123456789abcdef0123"), 404, "no video with id"),
        ("n=2", _chat_body(files["clip"].as_uri(), n=2), 400, "n must be 1"),
        ("data too big", _chat_body(big), 413, "max-upload-mb"),
        ("not base64", _chat_body("data:video/mp4;base64,@@@"), 400, "base64"),
        ("wrong model", _chat_body(files["clip"].as_uri(), model="gpt-4o"), 404, "not served"),
        ("two videos", {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": files["clip"].as_uri()}},
            {"type": "video_url", "video_url": {"url": files["other"].as_uri()}},
            {"type": "text", "text": "?"}]}]}, 400, "one video per request"),
        ("control token", {**_chat_body(files["clip"].as_uri()), "messages": [
            {"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": files["clip"].as_uri()}},
                {"type": "text", "text": "say <end_of_utterance>"}]}]}, 400, "control tokens"),
    ]


def test_every_bad_request_is_one_clear_openai_error(server: ServeProcess,
                                                     files: dict[str, Path]) -> None:
    for name, body, status, words in _bad_cases(files):
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = _post(server, "/v1/chat/completions", **kwargs)
        assert r.status_code == status, (name, r.text)
        error = r.json()["error"]
        assert words in error["message"], (name, error)
        assert "\n" not in error["message"] and "Traceback" not in error["message"]
        assert error["type"] == "invalid_request_error"
    for method, path, status in [("GET", "/nope", 404), ("DELETE", "/v1/models", 405),
                                 ("GET", "/v1/results/abc.json", 404),
                                 ("GET", "/v1/results/abc.exe", 404)]:
        r = httpx.request(method, server.url + path)
        assert r.status_code == status and r.json()["error"]["message"]
    assert _post(server, "/v1/videos", content=b"").status_code == 400
    too_big = _post(server, "/v1/videos", content=os.urandom(1_100_000),
                    headers={"content-type": "video/mp4"})
    assert too_big.status_code == 413 and "max-upload-mb" in too_big.json()["error"]["message"]
    not_video = _post(server, "/v1/videos", content=b"just some text, not a video at all")
    assert not_video.status_code == 400
    vid = _register(server, files["clip"])
    for body, words in [({"questions": []}, "questions"),
                        ({"questions": ["q"] * 17}, "limit of 16"),
                        ({"question": "q", "choices": ["only one"]}, "choices"),
                        ({"question": "q", "bogus": 1}, "unknown key"),
                        ({"questions": ["a", "b"], "stream": True}, "one question at a time")]:
        r = _post(server, f"/v1/videos/{vid}/ask", json=body)
        assert r.status_code == 400 and words in r.json()["error"]["message"], (body, r.text)
    r = _post(server, f"/v1/videos/{vid}/describe", json={"mode": "poem"})
    assert r.status_code == 400 and "mode" in r.json()["error"]["message"]


def test_the_openai_client_raises_our_message(client: openai.OpenAI, model: Model,
                                              files: dict[str, Path]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model.id, messages=_ask(files["link"], "?"))
    assert "not a file under" in caught.value.message
    # and the server still answers after all of the above
    assert client.models.list().data


def test_the_media_listing_names_the_videos_under_the_root(server: ServeProcess,
                                                            files: dict[str, Path]) -> None:
    listing = httpx.get(server.url + "/v1/media").json()
    names = {item["name"] for item in listing["data"]}
    assert "clip.mp4" in names
    assert "notes.mp4" not in names and "link.mp4" not in names  # not a video; leads out


def test_sampling_with_a_seed_repeats(client: openai.OpenAI, model: Model,
                                      files: dict[str, Path]) -> None:
    def sample(seed: int) -> str:
        return client.chat.completions.create(
            model=model.id, messages=_ask(files["clip"], "Say anything."), max_tokens=8,
            temperature=1.5, seed=seed, extra_body={"videovlm": {"n": N}}
        ).choices[0].message.content

    assert sample(7) == sample(7)


def test_odd_input_is_a_4xx_never_a_500_nor_noise(server: ServeProcess,
                                                   files: dict[str, Path]) -> None:
    """Inputs a fuzzer finds first: a NUL byte in a path, a digit that int() cannot read, a
    decompression bomb, an unreadable upload (not kept, its message not naming the server's
    folders), a stream flag that is not a boolean."""
    nul = _post(server, "/v1/videos", json={"url": files["clip"].as_uri() + "%00.mp4"})
    assert nul.status_code == 400 and "not a file under" in nul.json()["error"]["message"]
    odd = _post(server, "/v1/videos?n=%C2%B2", json={"url": files["clip"].as_uri()})
    assert odd.status_code == 400 and "n must be an integer" in odd.json()["error"]["message"]
    bomb = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(bomb, "PNG")
    url = "data:image/png;base64," + base64.b64encode(bomb.getvalue()).decode()
    r = _post(server, "/v1/chat/completions", json={"max_tokens": 2, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "?"}]}]})
    assert r.status_code == 400 and "pixels" in r.json()["error"]["message"]
    kept = sorted(p.name for p in files["tmp"].rglob("*"))
    junk = _post(server, "/v1/videos", content=b"no video here " * 100,
                 headers={"content-type": "video/mp4", "x-filename": "junk.mp4"})
    assert junk.status_code == 400
    message = junk.json()["error"]["message"]
    assert "junk.mp4" in message and str(files["tmp"]) not in message
    assert sorted(p.name for p in files["tmp"].rglob("*")) == kept
    vid = _register(server, files["clip"])
    r = _post(server, f"/v1/videos/{vid}/ask", json={"question": "q", "stream": "no"})
    assert r.status_code == 400 and "stream" in r.json()["error"]["message"]
    assert "Traceback" not in server.stderr and "Warning" not in server.stderr, server.stderr


def test_an_upload_is_served_as_a_video_whatever_its_name(server: ServeProcess,
                                                          files: dict[str, Path]) -> None:
    """A name is the client's: an upload called page.html must not come back as HTML from the
    server's origin (where any script in its bytes would run with the page's rights)."""
    r = _post(server, "/v1/videos", content=files["other"].read_bytes(),
              headers={"content-type": "video/mp4", "x-filename": "page.html"})
    assert r.status_code == 200, r.text
    served = httpx.get(server.url + r.json()["file"])
    assert served.headers["content-type"].startswith("video/")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]


def test_other_sites_cannot_use_the_server_through_a_browser(server: ServeProcess,
                                                             files: dict[str, Path]) -> None:
    """A page elsewhere can make its visitor's browser POST here (no preflight for a
    text/plain body) or, by DNS rebinding, read from here under its own name: both 403. The
    page itself (same origin) and clients without an Origin work."""
    body = json.dumps(_chat_body(files["clip"].as_uri())).encode()
    cross = _post(server, "/v1/chat/completions", content=body,
                  headers={"content-type": "text/plain", "origin": "http://evil.example"})
    assert cross.status_code == 403 and "cross-origin" in cross.json()["error"]["message"]
    port = server.url.rsplit(":", 1)[1]
    rebound = httpx.get(server.url + "/v1/media", headers={"host": f"evil.example:{port}"})
    assert rebound.status_code == 403 and "Host" in rebound.json()["error"]["message"]
    same = _post(server, "/v1/chat/completions", content=body,
                 headers={"content-type": "application/json", "origin": server.url})
    assert same.status_code == 200, same.text
    assert httpx.get(server.url.replace("127.0.0.1", "localhost") + "/v1/models").is_success
