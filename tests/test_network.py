"""A dead network (class 9): a Hub endpoint that accepts connections and never answers. `models pull`
and `ask` with a Hub id fail in bounded time with one line that says so and how to work offline; a
model already in the cache is used from there. huggingface-hub is pointed at a local server through
its documented HF_ENDPOINT variable."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from clihelp import TINY, dycoke, one_line
from conftest import write_clip

TIMEOUT_S = 2


@pytest.fixture
def silent_hub():
    """A server on 127.0.0.1 that accepts every connection and never sends a byte; yields its URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def online(endpoint: str, hf_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "DYCOKE_OFFLINE")}
    return {**env, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "DYCOKE_HUB_TIMEOUT": str(TIMEOUT_S)}


def expected(endpoint: str, repo: str) -> str:
    return (f"error: the Hugging Face Hub ({endpoint}) did not answer within {TIMEOUT_S} s, and '{repo}' is not in the "
            "local cache; work offline with --model builtin:shapes (ships with dycoke: no download) or --model "
            "/path/to/folder (or, once it is cached, --offline), or raise DYCOKE_HUB_TIMEOUT on a slow network")


def expected_pull(endpoint: str, repo: str) -> str:
    """`models pull` says why it cannot download, not to run the command just run."""
    return (f"error: cannot download '{repo}': the Hugging Face Hub ({endpoint}) did not answer within {TIMEOUT_S} s "
            "(no network, or a proxy or firewall in the way?); retry where it is reachable, or raise "
            "DYCOKE_HUB_TIMEOUT on a slow network")


def test_pull_and_ask_give_up_on_a_silent_hub(silent_hub, tmp_path):
    env = online(silent_hub, tmp_path / "hf")
    clip = write_clip(tmp_path / "a.mp4", frames=8)
    for args, line in ((["models", "pull", "someone/model"], expected_pull),
                       (["ask", clip, "q?", *TINY, "--model", "someone/model"], expected)):
        started = time.monotonic()
        result = dycoke(*args, env=env, timeout=60)
        assert one_line(result, code=1) == line(silent_hub, "someone/model")
        assert time.monotonic() - started < 30


def test_offline_errors_give_the_reason_and_the_built_in_model(tmp_path):
    """HF_HUB_OFFLINE=1 (set for the whole suite): `pull` names offline mode as the reason; the default
    model, not cached, points at --model builtin:shapes."""
    pull = dycoke("models", "pull", "someone/model", env={**os.environ, "HF_HOME": str(tmp_path)}, timeout=60)
    assert one_line(pull) == ("error: cannot download 'someone/model': offline mode is on (HF_HUB_OFFLINE is set); "
                              "pull it with HF_HUB_OFFLINE unset on a machine that reaches the Hub")
    clip = write_clip(tmp_path / "a.mp4", frames=8)
    ask = dycoke("ask", clip, "q?", env={**os.environ, "HF_HOME": str(tmp_path)}, timeout=60)
    assert one_line(ask).endswith("pass --model /path/to/folder, or try --model builtin:shapes (ships with dycoke: "
                                  "no download)")


def test_a_cached_model_is_used_when_the_hub_is_silent(silent_hub, tiny, tmp_path):
    hf_home = tmp_path / "hf"
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / "models--someone--tiny"
    shutil.copytree(tiny.source.folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    clip = write_clip(tmp_path / "a.mp4", frames=8)
    result = dycoke("ask", clip, "q?", *TINY, "--model", "someone/tiny", "--quiet", env=online(silent_hub, hf_home),
                    timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
