"""`dycoke serve` against a cold `dycoke ask`, its own overhead, and its latency under concurrent clients.

    python benchmarks/bench_serve.py [--part repeat|overhead|load|all] [--model random:llava-onevision-0.5b]
                                     [--frames 8] [--requests 32]

Parts, each against a real server process on 127.0.0.1 (started here, stopped with SIGTERM):
  repeat    a cold `dycoke ask` (process start, imports, model load, decode, encode, answer) against a
            repeat question through a server that has the video encoded: the client's time to the first
            streamed token, its share of the cold wall time (goal: <= 10%). --model and --frames.
  overhead  builtin:shapes, one client, requests one after another on a kept connection: the client's
            wall time minus the engine's own (usage.dycoke.total_s: prompt, prefill, decode), i.e.
            HTTP, JSON, checks, the plan, the queue and the response (goal: <= 20 ms).
  load      builtin:shapes, 1, 4 and 16 concurrent clients sharing --requests requests (the four
            questions of a shapes clip, whole answers): throughput, p50/p95 latency, and the share of
            the wall time the model spent answering (the engine's total_s summed).

The processor's flags and the load average are printed with each table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from bench_encoder import cpu_line  # noqa: E402
from serving import Server, chat_body  # noqa: E402

QUESTIONS = ["What happens in this video?", "What colour is the moving bar?", "Does the background change?",
             "In which direction does the bar move?", "Summarise the video in one sentence."]


def post(connection: http.client.HTTPConnection, body: dict) -> tuple[float, float | None, dict]:
    """(wall seconds, seconds to the first streamed text or None, the completion or the last chunk)."""
    started = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    reply = connection.getresponse()
    if not body.get("stream"):
        data = json.loads(reply.read())
        assert reply.status == 200, data
        return time.perf_counter() - started, None, data
    first, last = None, None
    for line in reply:
        if line.startswith(b"data: {"):
            last = json.loads(line[6:])
            if first is None and last["choices"] and last["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
    return time.perf_counter() - started, first, last


def connect(server: Server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=1800)


def part_repeat(model: str, frames: int, folder: Path) -> None:
    from dycoke_cli.sample_clip import write_sample

    from dycoke_cli.models.source import resolve

    clip = write_sample(folder / "clip.mp4")
    resolve(model)  # a random-weight spec is built once, before anything is timed
    flags = ["--model", model, "--device", "cpu", "--frames", str(frames), "--max-new-tokens", "16"]
    started = time.perf_counter()
    cold = subprocess.run([sys.executable, "-m", "dycoke_cli", "ask", str(clip), QUESTIONS[0], *flags, "--json"],
                          capture_output=True, text=True, check=True)
    cold_wall = time.perf_counter() - started
    cold_ttft = json.loads(cold.stdout)["time_to_first_token_s"]
    server = Server(*flags, "--allowed-media-dir", str(folder))
    try:
        connection = connect(server)
        first_wall, _, _ = post(connection, chat_body(clip.as_uri(), QUESTIONS[0]))  # encodes the video
        repeats = [post(connection, chat_body(clip.as_uri(), q, stream=True, stream_options={"include_usage": True}))
                   for q in QUESTIONS[1:]]
    finally:
        server.stop()
    ttft = statistics.median(first for _, first, _ in repeats)
    engine = statistics.median(last["usage"]["dycoke"]["time_to_first_token_s"] for _, _, last in repeats)
    print(f"\n{model}, {frames} frames, 16 new tokens; {cpu_line()}\n")
    print("| | seconds | share of the cold `ask` |")
    print("|---|---:|---:|")
    print(f"| cold `dycoke ask` wall time (process, load, decode, encode, answer) | {cold_wall:.2f} | 100% |")
    print(f"| its time to first token (frames in hand to first token) | {cold_ttft:.2f} | "
          f"{100 * cold_ttft / cold_wall:.1f}% |")
    print(f"| server, first request (encodes the video), whole answer | {first_wall:.2f} | "
          f"{100 * first_wall / cold_wall:.1f}% |")
    print(f"| server, repeat question: client time to first token (median of {len(repeats)}) | {ttft:.3f} | "
          f"{100 * ttft / cold_wall:.2f}% |")
    print(f"| ... of which the engine's prefill | {engine:.3f} | {100 * engine / cold_wall:.2f}% |")


def shapes_server(folder: Path) -> tuple[Server, list[dict]]:
    from dycoke_cli import shapes
    from dycoke_cli.batch.choices import prompt

    questions = shapes.make(folder / "shapes", clips=1, seed=90210)
    records = [json.loads(line) for line in questions.read_text().splitlines()]
    bodies = [chat_body((questions.parent / r["video"]).as_uri(),
                        prompt(r["question"], r["options"]) if r.get("options") else r["question"]) for r in records]
    server = Server("--model", "builtin:shapes", "--device", "cpu", "--frames", "8", "--max-new-tokens", "24",
                    "--allowed-media-dir", str(questions.parent), "--queue-size", "64")
    connection = connect(server)
    for body in bodies:  # the video encoded, each question's prompt seen once
        post(connection, body)
    return server, bodies


def part_overhead(server: Server, bodies: list[dict], requests: int) -> None:
    connection = connect(server)
    overheads, walls = [], []
    for i in range(requests):
        wall, _, data = post(connection, {**bodies[i % len(bodies)], "max_tokens": 1})
        walls.append(wall)
        overheads.append(wall - data["usage"]["dycoke"]["total_s"])
    ms = sorted(1000 * o for o in overheads)
    print(f"\nbuiltin:shapes, 8 frames, {requests} requests one after another on one connection, 1 new token; "
          f"{cpu_line()}\n")
    print("| | p50 | p95 | max |")
    print("|---|---:|---:|---:|")
    print(f"| request wall time, client side (ms) | {_pct(sorted(1000 * w for w in walls), 50):.1f} | "
          f"{_pct(sorted(1000 * w for w in walls), 95):.1f} | {1000 * max(walls):.1f} |")
    print(f"| server overhead: wall - engine total (ms) | {_pct(ms, 50):.1f} | {_pct(ms, 95):.1f} | {ms[-1]:.1f} |")


def part_load(server: Server, bodies: list[dict], requests: int) -> None:
    print(f"\nbuiltin:shapes, 8 frames, the 4 questions of a shapes clip, whole answers (<= 24 tokens), "
          f"{requests} requests per row; one generation at a time; {cpu_line()}\n")
    print("| concurrent clients | requests/s | tokens/s | p50 latency (s) | p95 latency (s) | model busy |")
    print("|---:|---:|---:|---:|---:|---:|")
    for clients in (1, 4, 16):
        latencies, tokens, engine = [], [], []
        lock = threading.Lock()

        def run(c: int) -> None:
            connection = connect(server)
            for i in range(c, requests, clients):
                wall, _, data = post(connection, bodies[i % len(bodies)])
                with lock:
                    latencies.append(wall)
                    tokens.append(data["usage"]["completion_tokens"])
                    engine.append(data["usage"]["dycoke"]["total_s"])

        started = time.perf_counter()
        threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        latencies.sort()
        print(f"| {clients} | {len(latencies) / wall:.2f} | {sum(tokens) / wall:.1f} | {_pct(latencies, 50):.2f} | "
              f"{_pct(latencies, 95):.2f} | {100 * sum(engine) / wall:.0f}% |")


def _pct(ordered: list[float], p: int) -> float:
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", default="all", choices=["repeat", "overhead", "load", "all"])
    parser.add_argument("--model", default="random:llava-onevision-0.5b")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    if args.part in ("repeat", "all"):
        part_repeat(args.model, args.frames, folder)
    if args.part in ("overhead", "load", "all"):
        server, bodies = shapes_server(folder)
        try:
            if args.part in ("overhead", "all"):
                part_overhead(server, bodies, args.requests)
            if args.part in ("load", "all"):
                part_load(server, bodies, args.requests)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
