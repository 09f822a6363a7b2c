"""`dycoke serve` with builtin:shapes: the clip described correctly through the `openai` client, then 16
clients x 4 requests at once, each answered exactly once with the answer a serial run gives, and the
server's memory back to its level afterwards. One server process for the module."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import openai
import pytest

from dycoke_cli import shapes
from dycoke_cli.batch.choices import prompt
from serving import Server, chat_body

MODEL = "builtin:shapes"
CLIENTS, EACH = 16, 4
SHORT = 3  # tokens per answer under load: a letter, or the start of a description (the suite stays fast)
SETTINGS = [{}, {"dycoke": {"compress": "none"}}]  # the server's default (dycoke), and no compression


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One clip made as `python -m dycoke_cli.shapes make DIR --clips 1 --seed 90210` makes it."""
    folder = tmp_path_factory.mktemp("shapes")
    shapes.make(folder, clips=1, seed=90210)
    return folder


@pytest.fixture(scope="module")
def records(folder) -> list[dict]:
    questions = folder / "questions.jsonl"
    lines = [json.loads(line) for line in questions.read_text().splitlines()]
    for line in lines:
        line["url"] = (folder / line["video"]).as_uri()
        line["prompt"] = prompt(line["question"], line["options"]) if line.get("options") else line["question"]
    return lines


@pytest.fixture(scope="module")
def server(folder, _private_cache):
    server = Server("--model", MODEL, "--device", "cpu", "--frames", "8", "--max-new-tokens", "24",
                    "--allowed-media-dir", str(folder))
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)


def ask(client, record: dict, setting: dict, **fields):
    return client.chat.completions.create(model=MODEL, messages=chat_body(record["url"], record["prompt"])["messages"],
                                          extra_body=setting, **fields)


def test_the_clip_is_described_streamed_or_not(client, records):
    describe = next(r for r in records if r["task"] == "describe")
    assert describe["question"] == "Describe the clip."
    whole = ask(client, describe, {})
    assert whole.choices[0].message.content == describe["answer"]
    assert whole.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model=MODEL, messages=chat_body(describe["url"], "Describe the clip.")[
        "messages"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == describe["answer"]


def test_16_clients_at_once_get_the_serial_answers_once_each_and_memory_returns(server, client, records):
    serial = {(r["id"], i): ask(client, r, s, max_tokens=SHORT).choices[0].message.content
              for r in records for i, s in enumerate(SETTINGS)}
    assert serial[(records[0]["id"], 0)] == "A"  # the colour question, red: option A
    start = serial[(records[-1]["id"], 0)]  # the description's first three tokens
    assert start and records[-1]["answer"].startswith(start) and start != records[-1]["answer"]
    before = server.rss_bytes()
    answered_before = server.health()["queue"]["answered"]
    replies: dict[tuple[int, int], tuple] = {}
    failures: list[BaseException] = []

    def run_client(c: int) -> None:
        try:
            for k in range(EACH):
                record, setting = records[(c + k) % len(records)], c % len(SETTINGS)
                reply = ask(client, record, SETTINGS[setting], max_tokens=SHORT)
                replies[(c, k)] = (record["id"], setting, reply.id, reply.choices[0].message.content)
        except BaseException as exc:  # noqa: BLE001 - reported below, with the rest
            failures.append(exc)

    threads = [threading.Thread(target=run_client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not failures, failures
    assert len(replies) == CLIENTS * EACH
    assert len({reply_id for _, _, reply_id, _ in replies.values()}) == CLIENTS * EACH  # no answer given twice
    for (c, k), (record_id, setting, _, text) in replies.items():
        assert text == serial[(record_id, setting)], (c, k)
    health = server.wait_until(lambda h: h["queue"]["running"] == 0 and h["queue"]["waiting"] == 0)
    assert health["queue"]["answered"] == answered_before + CLIENTS * EACH
    assert health["queue"]["rejected"] == health["queue"]["failed"] == 0
    after = server.rss_bytes()
    print(f"RSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
    assert after <= before + (16 << 20), (before, after)


def test_the_readme_client_snippet_runs_as_written(server, folder, records, capsys):
    """README's `openai` snippet against this server and the shapes clip: EVS at a quarter of the 128
    visual tokens, then the server's default (DyCoke) streamed, which describes the clip."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Serving: `dycoke serve`"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    snippet = snippet.replace("http://127.0.0.1:8000", server.url).replace(
        "file:///home/me/videos/clip.mp4", records[0]["url"])
    exec(compile(snippet, "README.md", "exec"), {})
    answer, figures, streamed = capsys.readouterr().out.split("\n")
    assert answer and figures == "128 32 evs"
    assert streamed == records[-1]["answer"]
