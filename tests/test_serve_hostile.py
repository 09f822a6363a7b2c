"""`dycoke serve` against hostile and careless clients, then its queue, cancellation, time limit and
SIGTERM: every refusal is OpenAI's JSON error with the right status, and the server keeps serving.

One server process for the module (random:tiny, an API key from the environment, a 1 MiB video cap,
a 2 s body timeout, a queue of one, a 10 s request limit, URL fetching on with a 2 s limit); the
SIGTERM test stops it and comes last.
"""

from __future__ import annotations

import base64
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import openai
import pytest

from conftest import write_clip
from serving import Server, chat_body, raw_exchange, request, status_and_json

KEY = "k-3f9a1c"
MODEL = "random:tiny"
TINY = ["--model", MODEL, "--device", "cpu", "--dtype", "float32", "--frames", "4", "--max-new-tokens", "4"]
LONG = {"max_tokens": 20000, "min_tokens": 20000}  # minutes of tokens: only a stop ends it
BODY_CAP = (1 << 20) * 4 // 3 + (1 << 20)  # --max-video-mib 1: the video base64-encoded, plus 1 MiB


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """allowed/ with a clip, a symlink out to a real video and one to nothing; outside/ with a video."""
    root = tmp_path_factory.mktemp("media")
    allowed, outside = root / "allowed", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    write_clip(allowed / "clip.mp4")
    write_clip(outside / "secret.mp4")
    (allowed / "escape.mp4").symlink_to(outside / "secret.mp4")
    (allowed / "dangling.mp4").symlink_to(outside / "nothing.mp4")
    (allowed / "notes.mp4").write_text("not a video\n")
    (allowed / "folder.mp4").mkdir()
    return root


@pytest.fixture(scope="module")
def server(tiny, media):
    server = Server(*TINY, "--allowed-media-dir", str(media / "allowed"), "--max-video-mib", "1",
                    "--body-timeout", "2", "--queue-size", "1", "--request-timeout", "10", "--allow-url-fetch",
                    "--fetch-timeout", "2", env={"DYCOKE_API_KEY": KEY})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def clip_url(media) -> str:
    return (media / "allowed" / "clip.mp4").as_uri()


def post(server, body, key=KEY):
    return request(server, "POST", "/v1/chat/completions", body, key=key)


def assert_error(reply, status: int, code: str | None = None) -> str:
    """The status, OpenAI's error shape, no traceback; the message."""
    got, body, _ = reply
    assert got == status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)
    assert "Traceback" not in error["message"] and "\n" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error["message"]


def head(length: int | None, chunked: bool = False, key: str = KEY) -> bytes:
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Authorization: Bearer {key}"]
    lines += [f"Content-Length: {length}"] if length is not None else []
    lines += ["Transfer-Encoding: chunked"] if chunked else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("method,path", [("GET", "/health"), ("GET", "/v1/models"),
                                         ("POST", "/v1/chat/completions"), ("GET", "/no/such/route")])
@pytest.mark.parametrize("key", [None, "wrong", KEY + "x", ""])
def test_every_route_needs_the_key(server, method, path, key):
    status, body, headers = request(server, method, path, {"messages": []} if method == "POST" else None, key=key)
    message = assert_error((status, body, headers), 401, "invalid_api_key")
    assert message == "a valid API key is needed: Authorization: Bearer KEY"
    assert headers["www-authenticate"] == "Bearer"


def test_the_openai_client_with_a_wrong_key(server, clip_url):
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert server.health(KEY)["status"] == "ok"


@pytest.mark.parametrize("body,message", [
    (b"{", "the request body is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
    (b"", "the request body is not valid JSON (Expecting value at line 1 column 1)"),
    (b"\xff\xfe{}", "the request body is not UTF-8 text"),
    (b'{"messages": "\xe9"}', "the request body is not UTF-8 text"),
    (b"[1, 2]", "the request body must be a JSON object, got a list"),
    (b"[" * 200_000 + b"]" * 200_000, "the request body is not usable JSON (nested too deeply)"),
], ids=["unclosed", "empty", "utf16-bom", "latin1", "a-list", "deep"])
def test_malformed_json(server, body, message):
    assert assert_error(post(server, body), 400, "invalid_json") == message


def valid(clip_url: str, **fields) -> dict:
    return chat_body(clip_url, "What happens?", **fields)


WRONG = [
    (lambda u: {"messages": "hi"}, "'messages' must be a non-empty list of messages"),
    (lambda u: {"messages": [{"role": "user", "content": 5}]},
     "messages[0].content must be a string or a non-empty list of parts"),
    (lambda u: valid(u, max_tokens="many"), "'max_tokens' must be an integer, got \"many\""),
    (lambda u: valid(u, temperature="hot"), "'temperature' must be a number, got \"hot\""),
    (lambda u: valid(u, stream="yes"), "'stream' must be true or false, got \"yes\""),
    (lambda u: valid(u, model=7), "'model' must be a string, got 7"),
    (lambda u: valid(u, dycoke={"frames": "8"}), "'dycoke.frames' must be an integer, got \"8\""),
    (lambda u: valid(u, dycoke={"frames": True}), "'dycoke.frames' must be an integer, got true"),
    (lambda u: valid(u, dycoke=[1]), "'dycoke' must be an object, got [1]"),
    (lambda u: valid(u, dycoke={"speed": 2}),
     "unknown setting 'speed' in 'dycoke'; settings: compress, budget, frames, fps, max_frames, start, end"),
    (lambda u: valid(u, n=2), "'n' must be 1 (one answer per request), got 2"),
    (lambda u: valid(u, stop=[1]), "'stop' must be a non-empty string or a list of up to 4 of them, got [1]"),
    (lambda u: valid(u, min_tokens=5, max_tokens=4), "'min_tokens' must be from 0 to the answer's 4 tokens, got 5"),
    (lambda u: {"messages": [{"role": "user", "content": "What happens?"}]},
     "a request needs a video: a video_url part in the first user message"),
    (lambda u: {"messages": [{"role": "tool", "content": "x"}]},
     "messages[0]: role \"tool\" is not supported; use system, user or assistant"),
    (lambda u: {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0]: input_audio parts are not supported; send a video_url"),
    (lambda u: {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": u}},
                                                          {"type": "image_url", "image_url": {"url": u}}]}]},
     "messages[0]: a request carries one video, in the first user message"),
    (lambda u: {"messages": [*valid(u)["messages"], {"role": "assistant", "content": "x"}]},
     "the conversation must start and end with a user message"),
    (lambda u: {"messages": [*valid(u)["messages"], {"role": "assistant", "content": "x"}, *valid(u)["messages"]]},
     "messages[2]: a request carries one video, in the first user message"),
    (lambda u: valid(u, messages=None), "'messages' must be a non-empty list of messages"),
    (lambda u: chat_body(u, "   "), "a question is empty; ask something about the video"),
    (lambda u: chat_body("ftp://host/v.mp4", "q"), "a video_url must be file://, data:video/...;base64,... or http(s)://"),
]


@pytest.mark.parametrize("make,message", WRONG, ids=[m[:40] for _, m in WRONG])
def test_wrong_types_and_shapes(server, clip_url, make, message):
    assert assert_error(post(server, make(clip_url)), 400) == message


def test_paths_outside_are_refused_alike_whether_they_exist_or_not(server, media):
    allowed = media / "allowed"
    urls = ["file:///etc/passwd", "file:///no/such/file.mp4", f"file://{allowed}/../outside/secret.mp4",
            f"file://{allowed}/../outside/none.mp4", (allowed / "escape.mp4").as_uri(),
            (allowed / "dangling.mp4").as_uri(), f"file://{allowed}/%2e%2e/outside/secret.mp4"]
    for url in urls:
        message = assert_error(post(server, chat_body(url, "q")), 403, "path_not_allowed")
        assert message == f"{url} is outside the folders this server may read (--allowed-media-dir)"


def test_files_inside_that_are_not_videos(server, media):
    allowed = media / "allowed"
    missing = (allowed / "missing.mp4").as_uri()
    assert assert_error(post(server, chat_body(missing, "q")), 404, "video_not_found") == f"video not found: {missing}"
    message = assert_error(post(server, chat_body((allowed / "notes.mp4").as_uri(), "q")), 400)
    assert message.startswith(f"{allowed / 'notes.mp4'} is not a video FFmpeg can read")
    message = assert_error(post(server, chat_body((allowed / "folder.mp4").as_uri(), "q")), 400)
    assert message == f"{allowed / 'folder.mp4'} is a directory, not a video file"


def test_a_1_gb_body_is_refused_by_its_length_unread(server):
    started = time.monotonic()
    reply = raw_exchange(server, head(10**9), [b"{" + b" " * 1023])
    status, body = status_and_json(reply)
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert body["error"]["message"] == (f"the request body is over this server's {BODY_CAP:,} bytes (a video of "
                                        "--max-video-mib, base64-encoded, and the rest)")
    assert time.monotonic() - started < 10


def test_a_body_without_length_is_refused_by_counting(server):
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    reply = raw_exchange(server, head(None, chunked=True), [chunk] * (10**9 // 65536), pause_s=0.001)
    status, body = status_and_json(reply)
    assert status == 413 and body["error"]["code"] == "body_too_large"


def test_a_slow_body_times_out(server):
    started = time.monotonic()
    reply = raw_exchange(server, head(1000), [b'{"messages": '], timeout_s=30)
    status, body = status_and_json(reply)
    assert status == 408 and body["error"]["code"] == "body_timeout"
    assert body["error"]["message"] == "the request body did not arrive within 2 s (--body-timeout)"
    assert 2 <= time.monotonic() - started < 15


def test_base64_videos_past_the_cap_and_broken_ones(server):
    bomb = "data:video/mp4;base64," + base64.b64encode(b"\0" * ((1 << 20) + 1)).decode()
    message = assert_error(post(server, chat_body(bomb, "q")), 413, "video_too_large")
    assert message == "the data: URL video is 1.0 MiB, above this server's 1.0 MiB (--max-video-mib)"
    assert assert_error(post(server, chat_body("data:video/mp4;base64,@@@@", "q")), 400,
                        "invalid_url") == "the data: URL is not valid base64"
    assert assert_error(post(server, chat_body("data:text/plain;base64,AAAA", "q")), 400,
                        "invalid_url") == "a data URL must be data:video/TYPE;base64,DATA"
    assert server.health(KEY)["temporary_videos"] == 0


def test_an_unknown_model_is_404(client, clip_url):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=valid(clip_url)["messages"])
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["message"] == f"model 'gpt-4o' is not served here; this server serves '{MODEL}'"


class _Videos(http.server.BaseHTTPRequestHandler):
    """A web server of videos: one to fetch, and the ways fetching must fail."""

    clip = b""

    def do_GET(self):  # noqa: N802 - the handler's name in http.server
        if self.path == "/slow.mp4":
            time.sleep(5)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/v.mp4" if self.path.endswith("ftp") else "file:///etc/passwd")
            self.end_headers()
            return
        data = {"/clip.mp4": self.clip, "/big.mp4": b"\0" * (2 << 20), "/slow.mp4": self.clip}.get(self.path)
        if self.path == "/endless.mp4":
            self.send_response(200)
            self.end_headers()  # no length: the server must count
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
            return
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web(media):
    _Videos.clip = (media / "allowed" / "clip.mp4").read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Videos)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_url_fetching_within_its_caps(server, client, web, clip_url):
    by_file = client.chat.completions.create(model=MODEL, messages=valid(clip_url)["messages"])
    by_url = client.chat.completions.create(model=MODEL, messages=valid(f"{web}/clip.mp4")["messages"])
    assert by_url.choices[0].message.content == by_file.choices[0].message.content
    assert assert_error(post(server, chat_body(f"{web}/big.mp4", "q")), 413, "video_too_large") == (
        f"{web}/big.mp4 is 2.0 MiB, above this server's 1.0 MiB (--max-video-mib)")
    assert assert_error(post(server, chat_body(f"{web}/endless.mp4", "q")), 413, "video_too_large") == (
        f"{web}/endless.mp4 is over this server's 1.0 MiB (--max-video-mib)")
    started = time.monotonic()
    assert assert_error(post(server, chat_body(f"{web}/slow.mp4", "q")), 400, "fetch_failed") == (
        f"cannot fetch {web}/slow.mp4: timed out")
    assert time.monotonic() - started < 5
    message = assert_error(post(server, chat_body(f"{web}/redirect", "q")), 400, "fetch_failed")
    assert message == (f"cannot fetch {web}/redirect: HTTP 302 Found - Redirection to url 'file:///etc/passwd' "
                       "is not allowed")
    message = assert_error(post(server, chat_body(f"{web}/redirect-ftp", "q")), 400, "fetch_failed")
    assert message == f"cannot fetch {web}/redirect-ftp: a redirect to ftp://127.0.0.1/v.mp4 is not followed"
    assert assert_error(post(server, chat_body(f"{web}/none.mp4", "q")), 400, "fetch_failed") == (
        f"cannot fetch {web}/none.mp4: HTTP 404 Not Found")
    assert server.health(KEY)["temporary_videos"] == 0


def test_still_serving_after_all_of_it(server, client, clip_url):
    reply = client.chat.completions.create(model=MODEL, messages=valid(clip_url)["messages"])
    assert reply.usage.completion_tokens >= 1
    queue = server.health(KEY)["queue"]
    assert queue["failed"] == 0 and queue["waiting"] == 0 and queue["running"] == 0


# ---------------------------------------------------------------- queue, cancellation, time limit, SIGTERM


def counts(server) -> dict:
    return server.health(KEY)["queue"]


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server, client, clip_url):
    before = counts(server)
    stream = client.chat.completions.create(model=MODEL, messages=valid(clip_url)["messages"], stream=True,
                                            extra_body=LONG)
    pieces = 0
    for chunk in stream:
        pieces += bool(chunk.choices and chunk.choices[0].delta.content)
        if pieces == 3:
            break
    stream.close()
    after = server.wait_until(lambda h: h["queue"]["running"] == 0, timeout_s=20, key=KEY)["queue"]
    assert after["cancelled"] == before["cancelled"] + 1
    assert (after["answered"], after["timed_out"]) == (before["answered"], before["timed_out"])


def test_a_full_queue_answers_429_with_retry_after(server, client, clip_url):
    before = counts(server)
    running = client.chat.completions.create(model=MODEL, messages=valid(clip_url)["messages"], stream=True,
                                             extra_body=LONG)
    next(iter(running))
    server.wait_until(lambda h: h["queue"]["running"] == 1, key=KEY)
    queued: list = []
    waiter = threading.Thread(target=lambda: queued.append(post(server, valid(clip_url, max_tokens=2))))
    waiter.start()
    server.wait_until(lambda h: h["queue"]["waiting"] == 1, key=KEY)
    status, body, headers = post(server, valid(clip_url))
    message = assert_error((status, body, headers), 429, "queue_full")
    assert int(headers["retry-after"]) >= 1
    assert message == f"the queue is full (1 waiting, --queue-size 1); retry in {headers['retry-after']} s"
    running.close()  # the running one is cancelled, the queued one runs
    waiter.join(60)
    assert queued[0][0] == 200 and queued[0][1]["usage"]["completion_tokens"] == 2
    after = counts(server)
    assert after["rejected"] == before["rejected"] + 1 and after["cancelled"] == before["cancelled"] + 1


def test_a_request_past_its_time_limit_is_504_and_stops(server, clip_url):
    before = counts(server)
    started = time.monotonic()
    message = assert_error(post(server, valid(clip_url, **LONG)), 504, "timeout")
    assert message == "the request took longer than this server's limit of 10 s (--request-timeout)"
    assert 10 <= time.monotonic() - started < 20
    after = server.wait_until(lambda h: h["queue"]["running"] == 0, key=KEY)["queue"]
    assert after["timed_out"] == before["timed_out"] + 1


def test_sigterm_finishes_the_running_request_refuses_the_queued_and_exits_0(server, client, clip_url):
    stream = client.chat.completions.create(model=MODEL, messages=valid(clip_url)["messages"], stream=True,
                                            max_tokens=24, extra_body={"min_tokens": 24},
                                            stream_options={"include_usage": True})
    chunks = [next(iter(stream))]
    server.wait_until(lambda h: h["queue"]["running"] == 1, key=KEY)
    queued: list = []
    waiter = threading.Thread(target=lambda: queued.append(post(server, valid(clip_url))))
    waiter.start()
    server.wait_until(lambda h: h["queue"]["waiting"] == 1, key=KEY)
    server.process.send_signal(15)
    chunks += list(stream)
    waiter.join(60)
    assert chunks[-1].usage.completion_tokens == 24
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert assert_error(queued[0], 503, "shutting_down") == "the server is shutting down"
    assert server.process.wait(60) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    assert "Traceback" not in "".join(server.stderr)
