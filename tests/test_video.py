"""dycoke_cli.video: the sampler must return exactly what decoding every frame and picking does.

The reference here is written independently and simply: decode every frame with PyAV, then apply
the picking contract with plain loops. Videos are generated at test time (tests/videogen.py).
"""

from __future__ import annotations

import functools
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import videogen

from dycoke_cli.video import reader as video
from dycoke_cli.errors import BadInputError, VideoError
from dycoke_cli.video import Frames, Sampling, parse_time, read_frames

# ---------------------------------------------------------------- reference: decode all, pick


@functools.lru_cache(maxsize=32)
def _decode_all_cached(path: str, mtime_ns: int, rotate_ccw: int):
    return decode_all_uncached(path, rotate_ccw)


def decode_all(path, rotate_ccw: int = 0):
    """decode_all_uncached, memoised per file version: many tests share each video."""
    return _decode_all_cached(str(path), os.stat(path).st_mtime_ns, rotate_ccw)


def decode_all_uncached(path, rotate_ccw: int = 0):
    """Every frame, in presentation order: (times from the first frame, RGB arrays). Frames
    without timestamps, or whose timestamps are out of order (raw streams, AVI with B-frames),
    keep decode order and are timed i / frame rate (the documented fallback)."""
    decoded = []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        tb, rate = vs.time_base, float(vs.average_rate or vs.guessed_rate)
        for packet in c.demux(vs):
            try:
                frames = vs.decode(packet)
            except av.error.InvalidDataError:  # a packet cut off by truncation
                continue
            decoded += [(f.pts, f.to_ndarray(format="rgb24")) for f in frames]
    pts = [p for p, _ in decoded]
    if None in pts or pts != sorted(set(pts)):
        times = [i / rate for i in range(len(decoded))]
    else:
        times = [float((p - pts[0]) * tb) for p in pts]
    arrays = [np.rot90(a, rotate_ccw // 90) for _, a in decoded]
    return times, arrays


def expected_indices(times, duration, **sampling):
    return expected_pick(times, duration, **sampling)[0]


def expected_pick(times, duration, frames=32, fps=None, max_frames=None, start=None, end=None):
    """(the frame indices the sampling contract picks, how many targets it placed)."""
    lo = start if start is not None else 0.0
    hi = end if end is not None else duration
    targets = []
    if fps is not None:
        i = 0
        while lo + (i + 0.5) / fps < hi:
            targets.append(lo + (i + 0.5) / fps)
            i += 1
        if not targets:
            frames = 1
        elif max_frames is not None and len(targets) > max_frames:
            frames, targets = max_frames, []
    if not targets:
        targets = [lo + (i + 0.5) * (hi - lo) / frames for i in range(frames)]
    picked = set()
    for t in targets:
        chosen = 0
        for j, tj in enumerate(times):
            if tj <= t + 1e-6:
                chosen = j
        picked.add(chosen)
    return sorted(picked), len(targets)


def assert_same(result: Frames, path, duration, rotate_ccw=0, **sampling):
    times, arrays = decode_all(path, rotate_ccw)
    want = expected_indices(times, duration, **sampling)
    assert result.indices == want
    assert result.timestamps == pytest.approx([times[i] for i in want], abs=1e-9)
    assert result.pixels.dtype == np.uint8 and result.pixels.shape[0] == len(want)
    assert result.pixels.shape[-1] == 3
    np.testing.assert_array_equal(result.pixels, np.stack([arrays[i] for i in want]))


# ---------------------------------------------------------------- generated videos

VFR_MS = [0, 40, 80, 200, 210, 220, 230, 500, 540, 580, 1000, 1010, 1500, 1530, 1560, 1590,
          1620, 1900, 1940, 2300, 2310, 2320, 2330, 2340, 2800, 2900, 3000, 3100, 3500, 3510]

CASES = {
    # name: (file name, make_video kwargs, expected duration in seconds)
    "h264_mp4": ("h264.mp4", dict(n=72, gop=12), 3.0),
    "h264_bframes_mp4": ("h264b.mp4", dict(n=72, gop=12, options={"preset": "veryfast"}), 3.0),
    "mpeg4_mp4": ("mpeg4.mp4", dict(codec="mpeg4", n=72, gop=12), 3.0),
    "vp9_webm": ("vp9.webm", dict(codec="libvpx-vp9", n=72, gop=12), None),
    "h264_mkv_no_count": ("h264.mkv", dict(n=72, gop=12), None),
    "vfr_mkv": ("vfr.mkv", dict(n=len(VFR_MS), pts=VFR_MS, time_base=Fraction(1, 1000)), None),
    "vfr_mp4": ("vfr.mp4", dict(n=len(VFR_MS), pts=[p * 90 for p in VFR_MS],
                                time_base=Fraction(1, 90000)), None),
    "long_gop_mp4": ("longgop.mp4", dict(n=480, gop=240), 20.0),
    "h264_bframes_avi": ("b.avi", dict(n=48, gop=12, options={"preset": "veryfast"}), 2.0),
    "raw_h264_no_timestamps": ("raw.h264", dict(n=48, gop=12), 48 / 25),
    "start_10s_mkv": ("start.mkv", dict(n=48, pts=list(range(240, 288)),
                                        time_base=Fraction(1, 24)), None),
    "mpegts_start": ("start.ts", dict(n=48, gop=12, pts=list(range(120, 168)),
                                      time_base=Fraction(1, 24)), 2.0),
}

SAMPLINGS = [
    dict(frames=1),
    dict(frames=8),
    dict(frames=32),
    dict(frames=500),  # more than the video holds: each frame once
    dict(fps=3.0),
    dict(fps=7.0, max_frames=5),
    dict(frames=6, start=0.5, end=1.75),
    dict(fps=10.0, start=1.0),
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {name: videogen.make_video(root / fname, **kw) for name, (fname, kw, _) in CASES.items()}


def duration_of(name, path, result):
    expected = CASES[name][2]
    if expected is not None:
        assert result.duration == pytest.approx(expected, abs=1e-6)
    return result.duration


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("name", list(CASES))
def test_matches_decode_all_and_pick(videos, name, sampling):
    path = videos[name]
    result = read_frames(path, Sampling(**sampling))
    duration = duration_of(name, path, result)
    picked, targets = expected_pick(decode_all(path)[0], duration, **sampling)
    expected = [] if len(picked) == targets else [
        f"asked for {targets} frames but the range holds {len(picked)}; each is used once"]
    assert result.warnings == expected
    assert_same(result, path, duration, **sampling)


@pytest.mark.parametrize("workers", [1, 4])
def test_parallel_workers_and_seeks_give_the_same_frames(videos, monkeypatch, workers):
    monkeypatch.setattr(video, "MAX_WORKERS", workers)
    monkeypatch.setattr(video.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    path = videos["long_gop_mp4"]
    for sampling in (dict(frames=8), dict(frames=3), dict(fps=4.0)):
        assert_same(read_frames(path, Sampling(**sampling)), path, 20.0, **sampling)


def test_sparse_picks_decode_only_what_they_need(tmp_path, monkeypatch):
    """480 frames, a keyframe every 24: 4 picks decode at most 4 keyframe runs, not the file."""
    path = videogen.make_video(tmp_path / "sparse.mp4", n=480, gop=24)
    decoded = []
    original = video._decoded

    def counting(*args):
        for frame in original(*args):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video, "_decoded", counting)
    result = read_frames(path, Sampling(frames=4))
    assert_same(result, path, 20.0, frames=4)
    assert len(decoded) <= 4 * 24
    decoded.clear()
    dense = read_frames(path, Sampling(frames=200))  # dense: one pass, every frame once at most
    assert_same(dense, path, 20.0, frames=200)
    assert len(decoded) <= 480


def test_unwanted_b_frames_are_not_decoded(videos, monkeypatch):
    """Frames nothing refers to (B-frames here) are skipped unless wanted; pixels are unchanged."""
    counts = {}
    original = video._decoded

    def counting(*args):
        for frame in original(*args):
            counts[name] += 1
            yield frame

    monkeypatch.setattr(video, "_decoded", counting)
    for name in ("h264_mp4", "h264_bframes_mp4"):  # same length, keyframes and picks
        counts[name] = 0
        assert_same(read_frames(videos[name], Sampling(frames=4)), videos[name], 3.0, frames=4)
    assert counts["h264_mp4"] == 36  # runs 0-9, 24-45 (continued), 60-63
    assert counts["h264_bframes_mp4"] < 30


def test_seek_that_lands_too_late_falls_back_to_the_start(videos, monkeypatch):
    """A demuxer whose seek overshoots (lands on the next keyframe) must not lose frames."""
    seeks = []

    def overshooting(container, vs, pts):
        ticks = round(1 / (24 * vs.time_base))  # one frame at 24 fps
        seeks.append(pts)
        container.seek(pts + (13 * ticks if pts else 0), stream=vs, backward=True)
        return -1

    monkeypatch.setattr(video, "_seek", overshooting)
    monkeypatch.setattr(video, "MAX_WORKERS", 1)
    path = videos["h264_mp4"]
    assert_same(read_frames(path, Sampling(frames=3)), path, 3.0, frames=3)
    assert 0 in seeks  # the fallback ran


@pytest.mark.parametrize("name", ["h264_mp4", "mpeg4_mp4", "vfr_mp4", "long_gop_mp4"])
def test_mp4_sample_table_agrees_with_the_packet_pass(videos, name):
    """MP4 without B-frames is indexed from its sample table (no packets read); the result must
    be exactly what reading every packet gives."""
    from dycoke_cli.video import probe as video_probe

    path = str(videos[name])
    with video_probe.open_video(path, 60) as container:
        vs = container.streams.video[0]
        assert video_probe._has_sample_table(container, vs)
        table = video_probe._sample_table(container, vs, video_probe.Clock(60, path), path)
    with video_probe.open_video(path, 60) as container:
        packets = video_probe._index(container, container.streams.video[0],
                                     video_probe.Clock(60, path), path)
    assert table is not None
    assert (table.pts, table.keys, table.times, table.end) == (
        packets.pts, packets.keys, packets.times, packets.end)


def test_contract_pins_centre_of_segments(videos):
    # 72 frames at 24 fps (3 s), 4 picks: centres 0.375, 1.125, 1.875, 2.625 s -> frames 9, 27, 45, 63
    result = read_frames(videos["h264_mp4"], Sampling(frames=4))
    assert result.indices == [9, 27, 45, 63]
    assert result.timestamps == pytest.approx([9 / 24, 27 / 24, 45 / 24, 63 / 24])
    assert result.fps == 24.0 and result.duration == pytest.approx(3.0)
    # a target exactly on a frame boundary takes the later frame: 2 fps -> 0.25 s, 0.75 s, ...
    result = read_frames(videos["h264_mp4"], Sampling(fps=2.0))
    assert result.indices == [6, 18, 30, 42, 54, 66]
    # fps capped by max_frames becomes uniform over the range
    capped = read_frames(videos["h264_mp4"], Sampling(fps=2.0, max_frames=4))
    assert capped.indices == [9, 27, 45, 63]


def test_short_range_gives_each_frame_once(videos):
    result = read_frames(videos["h264_mp4"], Sampling(frames=32, start=1.0, end=1.25))
    assert result.indices == [24, 25, 26, 27, 28, 29]
    assert result.warnings == ["asked for 32 frames but the range holds 6; each is used once"]


def test_vfr_picks_by_timestamp(videos):
    result = read_frames(videos["vfr_mkv"], Sampling(frames=4, start=0.0, end=2.0))
    # targets 0.25, 0.75, 1.25, 1.75 s -> frames at 0.23, 0.58, 1.01, 1.62 s
    assert result.timestamps == pytest.approx([0.23, 0.58, 1.01, 1.62])
    assert result.indices == [6, 9, 11, 16]


def test_nonzero_start_time_is_subtracted(videos):
    with av.open(str(videos["start_10s_mkv"])) as c:
        assert c.streams.video[0].start_time * c.streams.video[0].time_base == pytest.approx(10.0)
    result = read_frames(videos["start_10s_mkv"], Sampling(frames=4, start=0.0, end=1.0))
    assert result.indices == [3, 9, 15, 21]
    assert result.timestamps == pytest.approx([0.125, 0.375, 0.625, 0.875])
    assert result.warnings == []
    with av.open(str(videos["mpegts_start"])) as c:
        assert c.streams.video[0].start_time * c.streams.video[0].time_base == pytest.approx(5.0)
    assert read_frames(videos["mpegts_start"], Sampling(frames=2)).timestamps == [0.5, 1.5]


def test_mkv_has_no_frame_count_hint(videos):
    with av.open(str(videos["h264_mkv_no_count"])) as c:
        assert c.streams.video[0].frames == 0
    assert len(read_frames(videos["h264_mkv_no_count"], Sampling(frames=500)).indices) == 72


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_rotation_is_applied(tmp_path, degrees):
    path = videogen.make_video(tmp_path / "rot.mp4", n=24, width=64, height=48, rotation=degrees)
    result = read_frames(path, Sampling(frames=3))
    assert result.pixels.shape[1:3] == ((48, 64) if degrees == 180 else (64, 48))
    assert_same(result, path, 1.0, rotate_ccw=degrees % 360, frames=3)
    # the bright top-left marker (videogen) ends up where a counter-clockwise turn puts it
    corner = {90: (-1, 0), -90: (0, -1), 180: (-1, -1)}[degrees]
    assert result.pixels[0, corner[0], corner[1]].min() > 200


# ---------------------------------------------------------------- truncated files


def truncate(src, dst, fraction):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("ext,kw", [
    ("mp4", dict(container_options={"movflags": "faststart"})),
    ("mkv", {}),
    ("webm", dict(codec="libvpx-vp9")),
])
def test_truncated_file_answers_from_what_is_there(tmp_path, ext, kw):
    full = videogen.make_video(tmp_path / f"full.{ext}", n=96, gop=12, **kw)
    cut = truncate(full, tmp_path / f"cut.{ext}", 0.55)
    result = read_frames(cut, Sampling(frames=8))
    assert 0.5 < result.duration < 3.0
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("the file ends early: its video stops at ")
    assert "s its header claims (truncated or damaged?); sampled the part that is there" in result.warnings[0]
    times, arrays = decode_all(cut)
    want = expected_indices(times[: len(times)], result.duration, frames=8)
    assert result.indices == want
    np.testing.assert_array_equal(result.pixels, np.stack([arrays[i] for i in want]))


def test_frames_that_fail_to_decode_are_reported(tmp_path, monkeypatch):
    path = videogen.make_video(tmp_path / "v.mp4", n=48, gop=12)
    original = video._Sink.put

    def flaky(self, pos, frame):
        if self.slot[pos] % 2:
            return  # every other wanted frame: as if its data were damaged
        original(self, pos, frame)

    monkeypatch.setattr(video._Sink, "put", flaky)
    result = read_frames(path, Sampling(frames=8))
    assert result.indices == [3, 15, 27, 39]
    assert result.pixels.shape[0] == 4
    assert result.warnings == [
        "decoded 4 of 8 frames; the rest are damaged or missing (the file may be truncated)"
    ]
    monkeypatch.setattr(video._Sink, "put", lambda self, pos, frame: None)
    with pytest.raises(VideoError, match=r"could not decode any frame of .*; the video data is damaged$"):
        read_frames(path, Sampling(frames=8))


# ---------------------------------------------------------------- bad inputs: one clear line


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = videogen.make_video(root / "good.mp4", n=24, audio=True)
    files = {"good": good}
    files["missing"] = root / "nope.mp4"
    files["directory"] = root
    (root / "empty.mp4").write_bytes(b"")
    files["empty"] = root / "empty.mp4"
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    files["random"] = root / "random.mp4"
    (root / "notes.mkv").write_text("these are my notes, not a video\n" * 50)
    files["text"] = root / "notes.mkv"
    files["image"] = videogen.make_png(root / "photo.mp4")
    files["audio"] = videogen.make_audio_only(root / "song.mp4")
    files["zero"] = videogen.make_empty_video_track(root / "zero.mkv")
    (root / "codec.mp4").write_bytes(good.read_bytes().replace(b"avc1", b"zzz9"))
    files["codec"] = root / "codec.mp4"
    no_index = videogen.make_video(root / "no_index.mp4", n=48)  # moov at the end
    files["cut_before_index"] = truncate(no_index, root / "cut.mp4", 0.5)
    os.mkfifo(root / "fifo.mp4")
    files["fifo"] = root / "fifo.mp4"
    return files


BAD = [
    ("missing", r"^video not found: .*nope\.mp4$"),
    ("directory", r"^.* is a directory, not a video file$"),
    ("empty", r"^.*empty\.mp4 is empty \(0 bytes\)$"),
    ("random", r"^.*random\.mp4 is not a video FFmpeg can read \(damaged, cut off before its index, or not a video at all\)$"),
    ("text", r"^.*notes\.mkv is not a video FFmpeg can read \(damaged, cut off before its index, or not a video at all\)$"),
    ("cut_before_index", r"^.*cut\.mp4 is not a video FFmpeg can read "),
    ("image", r"^.*photo\.mp4 is a still image \(png\), not a video$"),
    ("audio", r"^.*song\.mp4 has no video stream \(audio only\)$"),
    ("zero", r"^.*zero\.mkv has a video stream but no frames$"),
    ("codec", r"^.*codec\.mp4: its video codec is not supported by this FFmpeg build; convert it, e\.g\. ffmpeg -i IN -c:v libx264 OUT\.mp4$"),
    ("fifo", r"^.*fifo\.mp4 is not a regular file \(a pipe or device\?\); pass a video file$"),
]


@pytest.mark.parametrize("kind,message", BAD, ids=[k for k, _ in BAD])
def test_bad_input_is_one_clear_line(bad, kind, message):
    with pytest.raises(VideoError, match=message) as info:
        read_frames(bad[kind], Sampling(frames=4))
    assert "\n" not in str(info.value) and info.value.exit_code == 2


def test_range_outside_the_video(bad):
    with pytest.raises(VideoError, match=r"^--start 5 s is past the end of .*good\.mp4 \(its video is 1\.00 s long\)$"):
        read_frames(bad["good"], Sampling(start=5.0))
    result = read_frames(bad["good"], Sampling(frames=2, start=0.5, end=9.0))
    assert result.warnings == ["--end 9 s is past the end of the video (1.00 s); sampling up to the end"]
    assert result.indices == [15, 21]


def test_timeout_bounds_decoding(bad):
    with pytest.raises(VideoError, match=r"^reading .*good\.mp4 took longer than 0 s; the file may be damaged or too large to read in time$"):
        read_frames(bad["good"], Sampling(frames=4), timeout_s=0)


@pytest.mark.parametrize("sampling,message", [
    (Sampling(frames=0), r"^--frames must be a whole number >= 1, got 0$"),
    (Sampling(frames=None), r"^--frames must be a whole number >= 1, got None$"),
    (Sampling(fps=0.0), r"^--fps must be a positive number, got 0\.0$"),
    (Sampling(fps=float("nan")), r"^--fps must be a positive number, got nan$"),
    (Sampling(fps=1.0, max_frames=0), r"^--max-frames must be a whole number >= 1, got 0$"),
    (Sampling(start=-1.0), r"^--start must be a time >= 0 seconds, got -1\.0$"),
    (Sampling(start=2.0, end=1.0), r"^--end \(1 s\) must be later than --start \(2 s\)$"),
])
def test_bad_sampling_is_bad_input(bad, sampling, message):
    with pytest.raises(BadInputError, match=message) as info:
        read_frames(bad["good"], sampling)
    assert not isinstance(info.value, VideoError)


# ---------------------------------------------------------------- parse_time


@pytest.mark.parametrize("text,seconds", [
    ("12.5", 12.5), ("90", 90.0), ("0", 0.0), (".5", 0.5), ("01:02:03.250", 3723.25),
    ("02:03", 123.0), ("1:05", 65.0), ("100:00", 6000.0), (" 7 ", 7.0), ("0:00:59.999", 59.999),
])
def test_parse_time(text, seconds):
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-1", "1e3", "inf", "nan", "1:60", "1:60:00",
                                  "1:2:3:4", "12.5s", "1:", ":30", "01:02:03,5", "1..2"])
def test_parse_time_rejects(text):
    with pytest.raises(BadInputError, match=r"^cannot read time .*: use seconds \(12\.5\) or \[HH:\]MM:SS\[\.ms\] \(01:02:03\.250\)$"):
        parse_time(text)


def test_a_plan_decodes_again_long_after_it_was_probed(tmp_path, monkeypatch):
    """Each decode of a plan has its own timeout: `profile` decodes once per round and `run` may decode
    minutes after probing, and neither may fail on a clock started by the probe."""
    from conftest import write_clip
    from dycoke_cli.video import probe as video_probe

    path = write_clip(tmp_path / "clip.mp4", frames=8)
    now = [1000.0]
    monkeypatch.setattr(video_probe.time, "monotonic", lambda: now[0])
    plan = video.probe_video(path, timeout_s=60).plan(Sampling(frames=4))
    now[0] += 3600  # an hour of model work later
    first, second = video.decode_plan(plan), video.decode_plan(plan)
    assert first.timestamps == second.timestamps and len(first.timestamps) == 4
    assert np.array_equal(first.pixels, second.pixels)
    expired = video_probe.Clock(60, str(path))
    now[0] += 61
    with pytest.raises(VideoError, match="took longer than 60 s"):
        expired.check()


@pytest.mark.parametrize("name", list(CASES))
def test_decoding_in_chunks_gives_the_frames_of_one_pass(videos, name):
    """Chunks of 3 frames (the engine decodes a chunk at a time to bound memory) hold exactly the frames,
    timestamps and warnings of decoding the whole plan, including files whose timestamps only decoding
    reveals as unreliable (decoding then starts again from position 0 on a re-built index)."""
    from dycoke_cli.video import decode_chunks, decode_plan, plan_frames

    plan = plan_frames(videos[name], Sampling(frames=10))
    whole = decode_plan(plan)
    latest = {}
    for start, frames in decode_chunks(plan, 3):
        latest[start] = frames
    chunks = [latest[start] for start in sorted(latest)]
    assert [t for c in chunks for t in c.timestamps] == whole.timestamps
    assert [i for c in chunks for i in c.indices] == whole.indices
    np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), whole.pixels)
    assert [w for c in chunks for w in c.warnings] == whole.warnings


def test_chunked_decoding_starts_again_when_a_later_chunk_finds_the_index_unreliable(videos, monkeypatch):
    """Decoded timestamps running backwards in chunk 2 mean the index lied: the file is indexed by
    decoding and every chunk comes again from position 0, so a consumer that keeps the last frames per
    position ends with the frames of the re-built index."""
    from dycoke_cli.video import decode_chunks, decode_plan, plan_frames

    path = videos[next(iter(CASES))]
    plan = plan_frames(path, Sampling(frames=10))
    whole = decode_plan(plan)
    original, calls = video._decode_wanted, []

    def second_call_disordered(*args):
        pixels, got, disordered = original(*args)
        calls.append(1)
        return pixels, got, disordered or len(calls) == 2

    monkeypatch.setattr(video, "_decode_wanted", second_call_disordered)
    seen, latest = [], {}
    for start, frames in decode_chunks(plan, 3):
        seen.append(start)
        latest[start] = frames
    assert seen == [0, 0, 3, 6, 9]  # chunk 2 (start 3) was refused, then everything again
    chunks = [latest[start] for start in sorted(latest)]
    assert [t for c in chunks for t in c.timestamps] == pytest.approx(whole.timestamps, abs=1e-6)
    np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), whole.pixels)


def test_the_timeout_bounds_each_chunk_not_the_work_between_chunks(videos):
    """The engine runs the vision tower between chunks; minutes of that must not count as decoding."""
    import time

    from dycoke_cli.video import decode_chunks, probe_video

    plan = probe_video(videos[next(iter(CASES))], timeout_s=0.5).plan(Sampling(frames=6))
    got = []
    for _, frames in decode_chunks(plan, 2):
        got += frames.timestamps
        time.sleep(0.6)  # longer than the whole timeout
    assert len(got) == 6
