"""The video cache as users meet it, every command in a real subprocess: a second run reads the video from
the cache (from another folder too), damaged entries and unwritable folders cost one note and never an
answer, two batch runs share one cache, `dycoke serve` reads what `dycoke ask` encoded, and `dycoke cache`
lists and removes entries.

Each test has a cache folder of its own (DYCOKE_CACHE, see conftest), the session's random models linked in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_clip
from serving import Server, chat_body, request
from dycoke_cli.cache.store import read_entry
from dycoke_cli.engine import Session, encode_video
from dycoke_cli.paths import cache_root
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling

TINY = ["--model", "random:tiny", "--device", "cpu", "--dtype", "float32", "--quant", "none", "--frames", "4",
        "--max-new-tokens", "4"]
QUESTION = "What is here?"


@pytest.fixture
def home(tiny) -> Path:
    """This test's own DYCOKE_CACHE (conftest), random:tiny built in it."""
    return cache_root()


def dycoke(*args, home: Path, cwd: Path, env: dict | None = None, preexec=None, wrapper: str | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", wrapper, *map(str, args)] if wrapper else [sys.executable, "-m", "dycoke_cli",
                                                                                  *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
                          env={**os.environ, "DYCOKE_CACHE": str(home), **(env or {})})


def cache_notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note: video cache")]


def expected_answer(tiny, path: Path, question: str = QUESTION) -> str:
    """The answer from a fresh encoding, in process: what every cached or recovered answer must equal."""
    return Session(tiny, encode_video(tiny, path, Sampling(frames=4)), "dycoke").ask(
        question, Generation(max_new_tokens=4)).text


def entries_of(home: Path) -> dict[str, Path]:
    folder = home / "encodings"
    return {p.name: p for p in folder.iterdir()} if folder.is_dir() else {}


def assert_whole(home: Path) -> None:
    """Nothing half-written: no temporary file, and every entry reads back with all its checks."""
    for name, path in entries_of(home).items():
        assert name.endswith(".safetensors") and not name.startswith("."), name
        if path.is_file():
            read_entry(path, name[: -len(".safetensors")], limit=2**30)


def test_a_second_call_reads_the_video_from_the_cache_from_another_folder(tiny, clip, home, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    shutil.copy(clip, first / "clip.mp4")
    expected = expected_answer(tiny, first / "clip.mp4")

    off = dycoke("ask", "clip.mp4", QUESTION, *TINY, "--json", home=home, cwd=first, env={"DYCOKE_VIDEO_CACHE": "0"})
    assert off.returncode == 0, off.stderr
    off = json.loads(off.stdout)
    assert off["answer"] == expected and off["video_source"] == "encoded" and entries_of(home) == {}
    assert off["cache_read_s"] == off["cache_write_s"] == off["cache_saved_s"] == 0.0

    # chat stores the encoding...
    chat = subprocess.run([sys.executable, "-m", "dycoke_cli", "chat", "clip.mp4", *TINY], cwd=first,
                          input=f"{QUESTION}\n/stats\n/bye\n", capture_output=True, text=True, timeout=180,
                          env={**os.environ, "DYCOKE_CACHE": str(home)})
    assert chat.returncode == 0 and cache_notes(chat.stderr) == [], chat.stderr
    assert chat.stdout.splitlines()[0] == expected
    assert "video cache    miss, looked up in" in chat.stderr and ", stored in" in chat.stderr
    assert len(entries_of(home)) == 1 and (home / "encodings").stat().st_mode & 0o777 == 0o700

    # ...and ask, run from another folder with the path written another way, reads it
    found = dycoke("ask", "../a/clip.mp4", QUESTION, *TINY, "--json", home=home, cwd=second)
    assert found.returncode == 0 and cache_notes(found.stderr) == [], found.stderr
    found = json.loads(found.stdout)
    assert found["answer"] == expected and found["video_source"] == "cache"
    assert found["vision_encode_s"] == found["video_decode_s"] == found["preprocess_s"] == 0.0
    assert found["cache_saved_s"] > 0 and found["cache_read_s"] > 0 and found["cache_write_s"] == 0.0
    assert found["time_to_first_token_s"] == pytest.approx(found["cache_read_s"] + found["compress_s"]
                                                           + found["prefill_s"])
    assert found["frame_timestamps"] == off["frame_timestamps"]


def _video_of(home: Path, video: Path) -> Path:
    (path,) = [p for p in (home / "encodings").iterdir()
               if json.loads(_header(p)["__metadata__"]["dycoke"])["label"]["video"] == str(video.resolve())]
    return path


def _header(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {"__metadata__": f.metadata()}


def _rebuilt(path: Path, info_change=None, tensor_change=None) -> None:
    """Rewrite an entry by hand (valid checksum) with its JSON or its tensors changed."""
    from test_cache import rewritten

    path.write_bytes(rewritten(path.read_bytes(), info_change or (lambda i: None), tensor_change or (lambda t: None)))


def _cut_tokens(tensors: dict) -> None:
    tensors["tokens"] = tensors["tokens"][:, :-1].contiguous()


DAMAGE = {  # what is done to the entry -> the words its note gives
    "truncated": (lambda p, other: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
    "flipped": (lambda p, other: p.write_bytes(_flip_middle(p.read_bytes())), "checksum mismatch"),
    "shapes": (lambda p, other: _rebuilt(p, tensor_change=_cut_tokens), "wrong shapes"),
    "version": (lambda p, other: _rebuilt(p, info_change=lambda i: i.update(version=99)), "another version"),
    "foreign": (lambda p, other: p.write_bytes(other), "another key"),
    "directory": (lambda p, other: (p.unlink(), p.mkdir(), (p / "keep").write_text("x")), "a directory"),
}


def _flip_middle(blob: bytes) -> bytes:
    at = len(blob) * 3 // 4
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1:]


def test_damaged_entries_cost_one_note_each_and_never_an_answer(tiny, home, tmp_path):
    clips = {name: write_clip(tmp_path / f"{name}.mp4", frames=12 + i) for i, name in enumerate(DAMAGE)}
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": name, "video": f"{name}.mp4", "question": QUESTION}) + "\n"
                                 for name in clips))
    first = dycoke("run", questions, "-o", tmp_path / "first.jsonl", *TINY, home=home, cwd=tmp_path)
    assert first.returncode == 0 and cache_notes(first.stderr) == [], first.stderr
    entries = {name: _video_of(home, path) for name, path in clips.items()}
    originals = [entries[name].read_bytes() for name in DAMAGE]
    for i, (name, (damage, _)) in enumerate(DAMAGE.items()):
        damage(entries[name], originals[i - 1])  # a foreign entry: another video's, whole

    second = dycoke("run", questions, "-o", tmp_path / "second.jsonl", *TINY, home=home, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    notes = cache_notes(second.stderr)
    assert len(notes) == len(DAMAGE), notes
    for name, (_, words) in DAMAGE.items():
        (note,) = [n for n in notes if f"for {name}.mp4 " in n]
        assert words in note, note
    answers = {line["id"]: line for line in map(json.loads, (tmp_path / "second.jsonl").read_text().splitlines())}
    for name, path in clips.items():
        assert answers[name]["answer"] == expected_answer(tiny, path) and answers[name]["video_source"] == "encoded"
    assert entries["directory"].is_dir() and (entries["directory"] / "keep").read_text() == "x"  # left alone
    assert all(entries[name].is_file() for name in DAMAGE if name != "directory")
    assert_whole(home)  # every other entry was written again, whole, under its own key
    assert len(entries_of(home)) == len(DAMAGE)


def _without_dac_override() -> None:
    """For root: drop CAP_DAC_OVERRIDE from the bounding set before exec, so file permissions bind root
    too (PR_CAPBSET_DROP = 24, CAP_DAC_OVERRIDE = 1); a no-op for other users, which they bind anyway."""
    import ctypes

    if os.geteuid() == 0:
        ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0)


def _file_size_limit(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail with EFBIG

    return apply


# A disk that fills up at the fsync after the whole entry was written out: patched into the entry writer's
# view of the os module only, in the process of the command itself.
FULL_AT_FSYNC = """
import errno, os, sys, types
import dycoke_cli.cache.store as store
def fsync(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
store.os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
store.os.fsync = fsync
from dycoke_cli.cli import main
sys.argv = ["dycoke", *sys.argv[1:]]
main()
"""

UNWRITABLE = {  # how the folder cannot be written -> the reason its one note gives
    "no write permission": (dict(preexec=_without_dac_override), "Permission denied"),
    "file size limit (EFBIG after a partial write)": (dict(preexec=_file_size_limit(64 * 1024)), "File too large"),
    "full disk at fsync (ENOSPC)": (dict(wrapper=FULL_AT_FSYNC), "No space left on device"),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_a_cache_that_cannot_be_written_is_turned_off_with_one_note(tiny, clip, home, tmp_path, case):
    how, reason = UNWRITABLE[case]
    (home / "encodings").mkdir(mode=0o700)
    if case == "no write permission":
        (home / "encodings").chmod(0o500)
    result = dycoke("ask", clip, QUESTION, *TINY, "--json", home=home, cwd=tmp_path, **how)
    (home / "encodings").chmod(0o700)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == expected_answer(tiny, clip)
    (note,) = cache_notes(result.stderr)
    assert note.startswith("note: video cache off for this run: cannot write to") and reason in note, note
    assert entries_of(home) == {}  # nothing left behind, not even a temporary file


def test_two_batch_runs_share_one_cache(tiny, home, tmp_path):
    clips = [write_clip(tmp_path / f"c{i}.mp4", frames=10 + i) for i in range(2)]
    questions = tmp_path / "questions.jsonl"
    lines = [{"id": f"{i}-{q}", "video": path.name, "question": question}
             for i, path in enumerate(clips) for q, question in enumerate([QUESTION, "Is anything moving?"])]
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {**os.environ, "DYCOKE_CACHE": str(home)}
    runs = [subprocess.Popen([sys.executable, "-m", "dycoke_cli", "run", str(questions), "-o", str(tmp_path / out),
                              *TINY], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for out in ("a.jsonl", "b.jsonl")]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    assert all(cache_notes(e) == [] for e in errors), errors
    sessions = {path.name: Session(tiny, encode_video(tiny, path, Sampling(frames=4)), "dycoke") for path in clips}
    expected = {line["id"]: sessions[line["video"]].ask(line["question"], Generation(max_new_tokens=4)).text
                for line in lines}
    for out in ("a.jsonl", "b.jsonl"):
        answers = {line["id"]: line["answer"] for line in map(json.loads, (tmp_path / out).read_text().splitlines())}
        assert answers == expected
    assert len(entries_of(home)) == len(clips)
    assert_whole(home)


def test_cache_command_lists_and_removes(tiny, clip, home, tmp_path):
    from dycoke_cli.cache import VideoCache

    videos = [shutil.copy(clip, tmp_path / f"v{i}.mp4") for i in range(2)]
    cache = VideoCache(folder=home / "encodings", notice=pytest.fail)
    for video in videos:
        encode_video(tiny, video, Sampling(frames=2), cache=cache)
    (old,) = [p for p in entries_of(home).values() if json.loads(_header(p)["__metadata__"]["dycoke"])["label"]["video"]
              == str(videos[0].resolve())]
    os.utime(old, (time.time() - 10 * 86400,) * 2)

    listed = dycoke("cache", "--json", home=home, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["folder"] == str(home / "encodings") and report["bytes"] == sum(p.stat().st_size for p in entries_of(home).values())
    assert [(e["video"], e["model"], e["frames"], e["dtype"], e["device"], e["problem"]) for e in report["entries"]] == [
        (str(videos[1].resolve()), "random:tiny", 2, "float32", "cpu", None),
        (str(videos[0].resolve()), "random:tiny", 2, "float32", "cpu", None)]
    assert report["entries"][1]["idle_s"] >= 10 * 86400
    table = dycoke("cache", "list", home=home, cwd=tmp_path)
    assert table.returncode == 0 and "2 entries" in table.stdout and "random:tiny, 2 frames, float32 cpu" in table.stdout

    cleared = dycoke("cache", "clear", "--older-than", "7d", home=home, cwd=tmp_path)
    assert cleared.returncode == 0 and "removed 1 entry" in cleared.stderr, cleared.stderr
    assert not old.exists() and len(entries_of(home)) == 1
    bad = dycoke("cache", "rm", "nothing-like-a-key", home=home, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "neither a file nor a key prefix" in bad.stderr
    (remaining,) = entries_of(home)
    removed = dycoke("cache", "rm", remaining[:8], home=home, cwd=tmp_path)
    assert removed.returncode == 0 and "removed 1 entry" in removed.stderr and entries_of(home) == {}
    again = dycoke("cache", "rm", videos[1], home=home, cwd=tmp_path)
    assert again.returncode == 2 and "no cache entry matches" in again.stderr
    wrong = dycoke("ask", clip, QUESTION, *TINY, "--cache-size", "lots", home=home, cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines() == [
        "error: --cache-size 'lots': expected a size such as 4GiB, 500MB or 0"]


def test_serve_reads_what_ask_encoded_and_knows_sent_videos_by_their_bytes(tiny, clip, home, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    video = shutil.copy(clip, media / "clip.mp4")
    sent = write_clip(tmp_path / "sent.mp4", frames=12)
    asked = dycoke("ask", video, QUESTION, *TINY, "--json", home=home, cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr
    asked = json.loads(asked.stdout)
    assert asked["video_source"] == "encoded" and len(entries_of(home)) == 1

    def served(url: str) -> tuple[str, dict]:
        status, body, _ = request(server, "POST", "/v1/chat/completions", chat_body(url, QUESTION))
        assert status == 200, body
        return body["choices"][0]["message"]["content"], body["usage"]["dycoke"]

    data = "data:video/mp4;base64," + base64.b64encode(sent.read_bytes()).decode()
    server = Server(*TINY, "--allowed-media-dir", str(media), "--sessions", "1")
    try:
        text, figures = served(video.as_uri())  # encoded by `ask`: read from the cache
        assert text == asked["answer"] == expected_answer(tiny, video)
        assert figures["video_source"] == "cache" and figures["vision_encode_s"] == figures["video_decode_s"] == 0.0
        assert figures["frame_timestamps"] == asked["frame_timestamps"] and figures["cache_saved_s"] > 0
        first, figures = served(data)  # sent bytes: encoded once...
        assert figures["video_source"] == "encoded" and first == expected_answer(tiny, sent)
        assert served(video.as_uri())[1]["video_source"] == "cache"  # (one session: the sent video's goes)
        again, figures = served(data)  # ...and found by their SHA-256 in a temporary file written anew
        assert figures["video_source"] == "cache" and again == first
    finally:
        assert server.stop() == 0
    assert cache_notes("".join(server.stderr)) == []
    listed = json.loads(dycoke("cache", "--json", home=home, cwd=tmp_path).stdout)["entries"]
    assert sorted(e["video"] for e in listed) == sorted([str(video.resolve()),
                                                         f"sha256:{hashlib.sha256(sent.read_bytes()).hexdigest()}"])
    assert_whole(home)
