"""`dycoke serve` through the official `openai` client: the answers of `dycoke ask`, token for token,
streamed or not; per-request compression keeping exactly the tokens the CLI's flags keep; a bad
setting refused with the CLI's own message. One server process (random:tiny, float32) for the module."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading

import openai
import pytest
from typer.testing import CliRunner

from dycoke_cli.cli import app
from serving import Server, chat_body, request

MODEL = "random:tiny"
TINY = ["--model", MODEL, "--device", "cpu", "--dtype", "float32", "--frames", "4", "--max-new-tokens", "6"]
Q1, Q2 = "What happens in this video?", "What colour is the bar?"
# Settings a request sends in its `dycoke` object (or as OpenAI fields), and the same as `ask` flags.
SETTINGS = {
    "default": ({}, []),
    "evs sampled": ({"dycoke": {"compress": "evs:rate=0.75"}, "temperature": 0.8, "top_p": 0.9, "seed": 7},
                    ["-c", "evs:rate=0.75", "--temperature", "0.8", "--top-p", "0.9", "--seed", "7"]),
    "budget": ({"dycoke": {"budget": 0.25}}, ["--budget", "0.25"]),
    "none, 2 frames from 0.5 s": ({"dycoke": {"compress": "none", "frames": 2, "start": 0.5}},
                                  ["--no-compress", "--frames", "2", "--start", "0.5"]),
}


def ask_json(clip, flags: list[str], *questions: str) -> subprocess.Popen:
    """`dycoke ask --json` as a user runs it (started now, read later)."""
    return subprocess.Popen([sys.executable, "-m", "dycoke_cli", "ask", str(clip), *questions, *TINY, *flags, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def started(tiny, clip):
    """The server and `dycoke ask --json` in its own process, started side by side (each loads the model);
    the other settings' references come from the same command run in this process."""
    run = ask_json(clip, [], Q1, Q2)
    server = Server(*TINY, "--allowed-media-dir", str(clip.parent))
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    expected = {"default": [json.loads(line) for line in out.splitlines()]}
    for name, (_, flags) in SETTINGS.items():
        if name != "default":
            result = CliRunner().invoke(app, ["ask", str(clip), Q1, *TINY, *flags, "--json"])
            assert result.exit_code == 0, result.output
            expected[name] = [json.loads(result.stdout)]
    yield server, expected
    assert server.stop() == 0


@pytest.fixture(scope="module")
def server(started) -> Server:
    return started[0]


@pytest.fixture(scope="module")
def expected(started) -> dict:
    return started[1]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)


def messages(clip, question: str, url: str | None = None) -> list[dict]:
    return chat_body(url or clip.as_uri(), question)["messages"]


def test_answers_equal_dycoke_ask_streamed_or_not(client, clip, expected):
    first, second = expected["default"]
    whole = client.chat.completions.create(model=MODEL, messages=messages(clip, Q1))
    assert whole.choices[0].message.content == first["answer"]
    assert whole.choices[0].finish_reason == ("length" if first["generated_tokens"] == 6 else "stop")
    assert whole.model == MODEL
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (first["prompt_tokens"], 6)
    assert whole.usage.total_tokens == first["prompt_tokens"] + 6
    figures = whole.usage.model_extra["dycoke"]
    for key in ("visual_tokens_before", "visual_tokens_after", "compression", "frames", "frame_timestamps",
                "prompt_tokens", "generated_tokens", "kv_entries_full", "kv_entries_attended_mean"):
        assert figures[key] == first[key], key
    for key in ("prefill_s", "decode_s", "vision_encode_s", "time_to_first_token_s", "total_s"):
        assert key in figures

    chunks = list(client.chat.completions.create(model=MODEL, messages=messages(clip, Q2), stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == second["answer"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    usage = chunks[-1].usage
    assert usage.model_extra["dycoke"]["visual_tokens_after"] == second["visual_tokens_after"]
    # The video was encoded for the first question: the second reuses [prefix + video] from the cache.
    assert usage.prompt_tokens_details.cached_tokens == second["prefix_reused_tokens"] > first["visual_tokens_after"]


@pytest.mark.parametrize("name", [n for n in SETTINGS if n != "default"])
def test_per_request_settings_keep_what_the_flags_keep(client, clip, expected, name):
    fields, _ = SETTINGS[name]
    want = expected[name][0]
    extra = {k: v for k, v in fields.items() if k not in ("temperature", "top_p", "seed")}
    reply = client.chat.completions.create(model=MODEL, messages=messages(clip, Q1), extra_body=extra,
                                           **{k: v for k, v in fields.items() if k not in extra})
    figures = reply.usage.model_extra["dycoke"]
    assert reply.choices[0].message.content == want["answer"]
    for key in ("visual_tokens_before", "visual_tokens_after", "compression", "frames", "frame_timestamps"):
        assert figures[key] == want[key], key
    assert figures["visual_tokens_after"] != expected["default"][0]["visual_tokens_after"]


BAD = [  # (`ask` flags, the same setting in a request)
    (["--compress", "dycoke:k=1.5"], {"dycoke": {"compress": "dycoke:k=1.5"}}),
    (["--compress", "evs:speed=2"], {"dycoke": {"compress": "evs:speed=2"}}),
    (["--budget", "2.5"], {"dycoke": {"budget": 2.5}}),
    (["--compress", "none", "--budget", "0.5"], {"dycoke": {"compress": "none", "budget": 0.5}}),
    (["--compress", "fastv:layer=40"], {"dycoke": {"compress": "fastv:layer=40"}}),
    (["--frames", "0"], {"dycoke": {"frames": 0}}),
    (["--frames", "1000000"], {"dycoke": {"frames": 1000000}}),
    (["--fps", "2000"], {"dycoke": {"fps": 2000}}),
    (["--start", "1:75"], {"dycoke": {"start": "1:75"}}),
    (["--start", "1.5", "--end", "1"], {"dycoke": {"start": 1.5, "end": 1}}),
    (["--start", "30"], {"dycoke": {"start": 30}}),
    (["--max-new-tokens", "0"], {"max_tokens": 0}),
    (["--max-new-tokens", "40000"], {"max_completion_tokens": 40000}),
    (["--temperature", "101"], {"temperature": 101}),
    (["--seed", "-1"], {"seed": -1}),
]


@pytest.mark.parametrize("flags,fields", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_a_bad_setting_is_a_400_with_the_cli_message(client, clip, flags, fields):
    result = CliRunner().invoke(app, ["ask", str(clip), Q1, *TINY, *flags])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, result.stderr
    message = line.removeprefix("error: ").removesuffix(" (see dycoke ask --help)")
    extra = {k: v for k, v in fields.items() if k == "dycoke"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages(clip, Q1), extra_body=extra,
                                       **{k: v for k, v in fields.items() if k not in extra})
    assert caught.value.status_code == 400
    assert caught.value.body["message"] == message
    assert caught.value.body["type"] == "invalid_request_error"


def test_a_conversation_continues_the_cached_turns(client, clip, tiny):
    from dycoke_cli import Generation, Sampling, Session, encode_video

    session = Session(tiny, encode_video(tiny, clip, Sampling(frames=4)), "dycoke")
    first = session.chat(Q1, Generation(max_new_tokens=6))
    second = session.chat(Q2, Generation(max_new_tokens=6))
    turn = client.chat.completions.create(model=MODEL, messages=messages(clip, Q1))
    assert turn.choices[0].message.content == first.text
    history = [*messages(clip, Q1), {"role": "assistant", "content": first.text}, {"role": "user", "content": Q2}]
    reply = client.chat.completions.create(model=MODEL, messages=history)
    assert reply.choices[0].message.content == second.text
    assert reply.usage.prompt_tokens == second.stats.prompt_tokens
    assert reply.usage.prompt_tokens_details.cached_tokens > first.stats.video.visual_tokens_after


def test_a_video_sent_as_data_answers_as_the_file(client, server, clip, expected):
    url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    reply = client.chat.completions.create(model=MODEL, messages=messages(clip, Q1, url))
    assert reply.choices[0].message.content == expected["default"][0]["answer"]
    assert server.health()["temporary_videos"] == 0  # removed once answered
    # As simonw/llm sends an attachment (`--at clip.mp4 image/jpeg`): an image part holding the video.
    as_image = [{"role": "user", "content": [
        {"type": "text", "text": Q1},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + url.split(",", 1)[1]}}]}]
    reply = client.chat.completions.create(model=MODEL, messages=as_image)
    assert reply.choices[0].message.content == expected["default"][0]["answer"]


def test_stop_strings_end_the_answer_before_them(client, clip, expected):
    full = expected["default"][0]["answer"]
    at = next(i for i in range(1, len(full) - 1) if full.find(full[i:i + 2]) == i)  # a first occurrence
    stop = full[at:at + 2]
    whole = client.chat.completions.create(model=MODEL, messages=messages(clip, Q1), stop=[stop, "never said"])
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (full[:at], "stop")
    chunks = client.chat.completions.create(model=MODEL, messages=messages(clip, Q1), stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full[:at]


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = server.health()
    assert health["status"] == "ok" and health["model"] == MODEL
    assert health["queue"]["waiting"] == 0 and health["queue"]["failed"] == 0


def test_no_url_fetching_and_no_files_outside_by_default(server, clip, tmp_path):
    status, body, _ = request(server, "POST", "/v1/chat/completions", chat_body("https://example.com/a.mp4", Q1))
    assert (status, body["error"]["code"]) == (403, "url_fetch_disabled")
    assert "--allow-url-fetch" in body["error"]["message"]
    (tmp_path / "v.mp4").write_bytes(clip.read_bytes())
    status, body, _ = request(server, "POST", "/v1/chat/completions", chat_body((tmp_path / "v.mp4").as_uri(), Q1))
    assert (status, body["error"]["code"]) == (403, "path_not_allowed")


def test_concurrent_requests_get_their_own_answers(client, clip, expected):
    """Two different questions at once: each client gets its own answer, not the other's."""
    answers: dict[str, str] = {}

    def ask(question: str) -> None:
        answers[question] = client.chat.completions.create(
            model=MODEL, messages=messages(clip, question)).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(q,)) for q in (Q1, Q2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert answers == {Q1: expected["default"][0]["answer"], Q2: expected["default"][1]["answer"]}
