"""The server's request parsing in process: the serve command line's defaults merged with a request's
settings as documented, and stop strings cut the same way however the text is streamed."""

from __future__ import annotations

import pytest

from dycoke_cli.commands.options import CompressFlags, GenerationFlags, SamplingFlags
from dycoke_cli.serve.api_errors import ApiError
from dycoke_cli.serve.schema import Defaults, chat_request
from dycoke_cli.serve.stops import StopText, cut_at_stop
from dycoke_cli.video import SamplingRequest

DEFAULTS = Defaults(model="m", sampling=SamplingFlags(fps=2.0, max_frames=10, start="1", end="9"),
                    compress=CompressFlags(compress="evs", budget="0.25"),
                    gen=GenerationFlags(max_new_tokens=50, temperature=0.5, seed=3, system="Be brief."))


def request(**fields):
    content = [{"type": "video_url", "video_url": {"url": "file:///v.mp4"}}, {"type": "text", "text": " Why? "}]
    return chat_request({"messages": [{"role": "user", "content": content}], **fields}, DEFAULTS)


def test_what_a_request_does_not_say_comes_from_the_command_line():
    chat = request()
    assert chat.sampling == SamplingRequest(fps=2.0, max_frames=10, start=1.0, end=9.0)
    assert chat.compression.label == "evs:budget=0.25"
    assert (chat.generation.max_new_tokens, chat.generation.temperature, chat.generation.seed) == (50, 0.5, 3)
    assert (chat.system, chat.question, chat.video_url) == ("Be brief.", "Why?", "file:///v.mp4")


@pytest.mark.parametrize("settings,sampling,label", [
    ({"frames": 8}, SamplingRequest(frames=8, start=1.0, end=9.0), "evs:budget=0.25"),
    ({"fps": 1}, SamplingRequest(fps=1.0, start=1.0, end=9.0), "evs:budget=0.25"),
    ({"max_frames": 4}, SamplingRequest(fps=2.0, max_frames=4, start=1.0, end=9.0), "evs:budget=0.25"),
    ({"start": "00:02", "end": 5}, SamplingRequest(fps=2.0, max_frames=10, start=2.0, end=5.0), "evs:budget=0.25"),
    ({"compress": "dycoke"}, SamplingRequest(fps=2.0, max_frames=10, start=1.0, end=9.0), "dycoke"),
    ({"compress": "none"}, SamplingRequest(fps=2.0, max_frames=10, start=1.0, end=9.0), "none"),
    ({"budget": 300}, SamplingRequest(fps=2.0, max_frames=10, start=1.0, end=9.0), "evs:budget=300"),
    ({"compress": "dycoke", "budget": "50%"}, SamplingRequest(fps=2.0, max_frames=10, start=1.0, end=9.0),
     "dycoke:budget=0.5"),
], ids=str)
def test_a_request_overrides_as_documented(settings, sampling, label):
    chat = request(dycoke=settings)
    assert chat.sampling == sampling and chat.compression.label == label


def test_openai_fields_and_a_system_message():
    chat = chat_request({"messages": [{"role": "system", "content": "Be long."},
                                      {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "f"}}]},
                                      {"role": "user", "content": "First?"}, {"role": "assistant", "content": "A."},
                                      {"role": "user", "content": "Then?"}],
                         "max_tokens": 9, "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "seed": 1,
                         "min_tokens": 2, "stop": "\n"}, DEFAULTS)
    assert chat.system == "Be long." and chat.history == (("First?", "A."),) and chat.question == "Then?"
    g = chat.generation
    assert (g.max_new_tokens, g.min_new_tokens, g.temperature, g.top_p, g.seed) == (7, 2, 0.0, 0.5, 1)
    assert chat.stop == ("\n",)


def test_another_model_is_404():
    with pytest.raises(ApiError) as caught:
        request(model="other")
    assert caught.value.status == 404


@pytest.mark.parametrize("text,stops,kept", [
    ("Hello world. Bye", ("world",), "Hello "), ("abcabd", ("abd",), "abc"), ("no stop here", ("xyz",), "no stop here"),
    ("a<END>b<STOP>", ("<STOP>", "<END>"), "a"), ("aaab", ("aab",), "a"), ("ends with sto", ("stop",), "ends with sto"),
])
def test_stop_strings_cut_the_same_however_the_text_is_split(text, stops, kept):
    assert cut_at_stop(text, stops) == (kept, kept != text)
    for size in range(1, len(text) + 1):
        stop = StopText(stops)
        sent = "".join(stop.feed(text[i:i + size]) for i in range(0, len(text), size)) + stop.flush()
        assert sent == kept, size
        assert stop.hit == (kept != text)


@pytest.mark.parametrize("args,message", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines, and anyone who reaches it could use "
                            "the model and read the allowed media; set --api-key (or DYCOKE_API_KEY), or pass "
                            "--allow-unauthenticated"),
    (["--allowed-media-dir", "/no/such/folder"], "--allowed-media-dir /no/such/folder: not a folder"),
    (["--compress", "dycoke:k=2"], "--compress 'dycoke:k=2': k must be in [0, 1), got 2.0"),
    (["--port", "PORT"], None),
], ids=["open-host", "media-dir", "compress", "port-in-use"])
def test_the_server_refuses_to_start_in_one_line_before_loading(args, message, monkeypatch):
    """Checked before the model loads (a load would fail the test), each a one-line error and exit 2."""
    import socket

    from typer.testing import CliRunner

    from dycoke_cli.cli import app

    def refuse(*_, **__):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr("dycoke_cli.models.loading.load_model", refuse)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        args = [str(port) if a == "PORT" else a for a in args]
        result = CliRunner().invoke(app, ["serve", "--model", "random:tiny", *args])
    assert result.exit_code == 2
    expected = message or f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert result.stderr == f"error: {expected}\n"
