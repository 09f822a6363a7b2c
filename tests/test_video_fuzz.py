"""Fuzz read_frames: randomly corrupted copies of valid videos (fixed seed) must only ever give
Frames or VideoError: never another exception, never a hang."""

from __future__ import annotations

import random
import signal
import time

import numpy as np
import pytest
import videogen

from dycoke_cli.errors import VideoError
from dycoke_cli.video import Frames, Sampling, read_frames

CASES_PER_BASE = 250
CASE_LIMIT_S = 20  # a single case running this long counts as a hang


class Hang(Exception):
    pass


def corrupt(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    b = bytearray(data)
    kind = rng.choice(["flip", "flip_head", "span", "zero", "truncate", "delete", "duplicate"])
    if kind in ("flip", "flip_head"):
        top = min(len(b), 600) if kind == "flip_head" else len(b)
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(top)] = rng.randrange(256)
    elif kind in ("span", "zero"):
        at, n = rng.randrange(len(b)), rng.randint(1, 400)
        b[at : at + n] = bytes(n) if kind == "zero" else rng.randbytes(n)
    elif kind == "truncate":
        del b[rng.randrange(1, len(b)) :]
    elif kind == "delete":
        at = rng.randrange(len(b))
        del b[at : at + rng.randint(1, 400)]
    else:
        at, n = rng.randrange(len(b)), rng.randint(1, 400)
        b[at:at] = b[at : at + n]
    return bytes(b), kind


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    return {
        "mp4": videogen.make_video(root / "a.mp4", n=24, gop=8, audio=True,
                                   container_options={"movflags": "faststart"}),
        "mp4_bframes": videogen.make_video(root / "b.mp4", n=24, gop=8,
                                           options={"preset": "veryfast"}),
        "mkv": videogen.make_video(root / "c.mkv", n=24, gop=8, codec="mpeg4"),
        "webm": videogen.make_video(root / "d.webm", n=24, gop=8, codec="libvpx-vp9"),
    }


@pytest.mark.parametrize("base", ["mp4", "mp4_bframes", "mkv", "webm"])
def test_corrupted_files_give_frames_or_video_error(bases, tmp_path, base):
    rng = random.Random(f"dycoke-{base}")
    data = bases[base].read_bytes()
    outcomes = {"frames": 0, "error": 0}

    def on_alarm(signum, frame):
        raise Hang

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for case in range(CASES_PER_BASE):
            blob, kind = corrupt(data, rng)
            path = tmp_path / f"case{case}{bases[base].suffix}"
            path.write_bytes(blob)
            sampling = Sampling(frames=rng.choice([1, 4, 16]))
            started = time.monotonic()
            signal.alarm(CASE_LIMIT_S)
            try:
                result = read_frames(path, sampling, timeout_s=10)
            except VideoError as e:
                assert str(e) and "\n" not in str(e), (case, kind, str(e))
                outcomes["error"] += 1
            except Hang:
                pytest.fail(f"case {case} ({kind}) hung for {CASE_LIMIT_S} s")
            except Exception as e:  # noqa: BLE001 - exactly what this test is about
                pytest.fail(f"case {case} ({kind}) raised {type(e).__name__}: {e}")
            else:
                assert isinstance(result, Frames)
                n = len(result.indices)
                assert 1 <= n <= sampling.frames and len(result.timestamps) == n
                assert result.pixels.dtype == np.uint8 and result.pixels.shape[0] == n
                assert result.pixels.ndim == 4 and result.pixels.shape[-1] == 3
                assert result.indices == sorted(set(result.indices))
                outcomes["frames"] += 1
            finally:
                signal.alarm(0)
            assert time.monotonic() - started < CASE_LIMIT_S
            path.unlink()
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert outcomes["frames"] > 0 and outcomes["error"] > 0, outcomes
