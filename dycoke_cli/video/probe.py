"""Probe a video before decoding it: open it safely, find its video stream, and index every frame.

The index holds every frame's presentation timestamp, the keyframes, and where the video really
ends; reader.py picks frames by timestamp and plans its seeks from it. It comes from the MP4
sample table when that can be trusted (nothing read beyond the header), else from one demuxing
pass over the packets (no decoding), else, for streams without usable timestamps, from one
decoding pass. `stream.frames` is never trusted; the header's duration only serves to notice a
file that ends early. Kept apart from reader.py, which decodes; video/__init__.py is the public face.
"""

from __future__ import annotations

import itertools
import os
import stat
import time
from dataclasses import dataclass, field

import av

from dycoke_cli.errors import VideoError

MAX_PIXELS = 1 << 26  # ~8K x 8K; bigger frame sizes are refused, not allocated
AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError, MemoryError, RuntimeError)


class Cancelled(Exception):
    """Raised in a decoding worker when another worker failed first."""


class Clock:
    """The timeout of one read_frames call, checked between packets."""

    def __init__(self, timeout_s: float, name: str):
        self.deadline, self.timeout_s, self.name = time.monotonic() + timeout_s, timeout_s, name

    def restarted(self) -> "Clock":
        """The same timeout counted from now: each decode of a plan gets its own (a plan may be decoded
        minutes after probing, e.g. once per profile round or after a slow model load)."""
        return Clock(self.timeout_s, self.name)

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise self.expired()

    def expired(self) -> VideoError:
        return VideoError(f"reading {self.name} took longer than {self.timeout_s:g} s; the file "
                          "may be damaged or too large to read in time")


@dataclass
class Index:
    """Every frame of the video stream, in presentation order."""

    pts: list[int]  # presentation timestamps, sorted, stream time base
    keys: list[int]  # positions (into pts) of keyframes, always starting with 0
    times: list[float]  # seconds from the first frame
    end: float  # end of the last frame, seconds from the first frame
    stream_index: int
    size: tuple[int, int]  # (width, height) from the stream parameters
    fps: float  # average frame rate, 0.0 when unknown
    by_position: bool = False  # timestamps unusable: frames are matched by decode order
    warnings: list[str] = field(default_factory=list)


def check_path(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        from dycoke_cli.video.listing import is_url, url_error

        raise (url_error(path) if is_url(path) else VideoError(f"video not found: {path}")) from None
    except OSError as e:
        raise VideoError(f"cannot open {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoError(f"{path} is a directory, not a video file")
    if not stat.S_ISREG(st.st_mode):
        raise VideoError(f"{path} is not a regular file (a pipe or device?); pass a video file")
    if st.st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoError(f"cannot open {path}: permission denied")


def open_video(path: str, timeout_s: float):
    try:
        return av.open(path, timeout=timeout_s, metadata_errors="replace")
    except (av.error.InvalidDataError, av.error.EOFError) as e:
        raise VideoError(f"{path} is not a video FFmpeg can read (damaged, cut off before its "
                         "index, or not a video at all)") from e


def probe(path: str, clock: Clock) -> Index:
    with open_video(path, clock.timeout_s) as container:
        vs = _video_stream(container, path)
        if not _has_sample_table(container, vs):
            return _index(container, vs, clock, path)
        index = _sample_table(container, vs, clock, path)
        if index is not None:
            return index
    with open_video(path, clock.timeout_s) as container:  # the check read packets: start over
        return _index(container, _video_stream(container, path), clock, path)


def _video_stream(container, path: str):
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt in ("image2", "tty"):
        kind = "text file" if fmt == "tty" else f"still image ({fmt.removesuffix('_pipe')})"
        raise VideoError(f"{path} is a {kind}, not a video")
    streams = [s for s in container.streams.video
               if not s.disposition & av.stream.Disposition.attached_pic]  # not cover art
    if not streams:
        only = " (audio only)" if container.streams.audio else ""
        raise VideoError(f"{path} has no video stream{only}")
    vs = streams[0]
    if vs.codec_context is None:
        raise VideoError(f"{path}: its video codec is not supported by this FFmpeg build; "
                         "convert it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    w, h = vs.codec_context.width, vs.codec_context.height
    if w * h > MAX_PIXELS:
        raise VideoError(f"{path}: frame size {w}x{h} is too large")
    return vs


def _rate(vs) -> float:
    for r in (vs.average_rate, vs.guessed_rate, vs.base_rate):
        if r and 0 < float(r) < 10000:
            return float(r)
    return 0.0


def _index(container, vs, clock: Clock, path: str) -> Index:
    """One demuxing pass over all packets: frame timestamps, keyframes, where the file ends."""
    pts, keys, durs, corrupt, missing = [], set(), {}, [], 0
    ends, damaged = {}, False  # stream -> (latest packet end in its time base, time base)
    try:
        for n, pkt in enumerate(container.demux()):
            if n % 256 == 0:
                clock.check()
            t = pkt.pts if pkt.pts is not None else pkt.dts
            if t is not None and pkt.size:
                t += max(pkt.duration or 0, 0)
                if t > ends.get(pkt.stream_index, (t - 1,))[0]:
                    ends[pkt.stream_index] = (t, pkt.time_base)
            if pkt.stream_index != vs.index or not pkt.size or pkt.is_discard:
                continue
            if pkt.pts is None:
                missing += 1
                continue
            pts.append(pkt.pts)
            corrupt.append(pkt.is_corrupt)
            durs[pkt.pts] = pkt.duration or 0
            if pkt.is_keyframe:
                keys.add(pkt.pts)
    except av.error.ExitError:
        raise
    except AV_ERRORS:
        damaged = True
    while corrupt and corrupt[-1]:  # a packet cut off by the end of the file
        corrupt.pop()
        pts.pop()
    fps, size = _rate(vs), (vs.codec_context.width, vs.codec_context.height)
    if missing:
        return index_by_decoding(path, vs.index, size, fps, clock)
    if not pts:
        raise VideoError(f"{path} has a video stream but no frames")
    pts, tb = sorted(set(pts)), vs.time_base
    times = [_seconds(p - pts[0], tb) for p in pts]
    last = _seconds(durs.get(pts[-1], 0), tb)
    if last <= 0:
        last = 1 / fps if fps else (times[-1] / (len(times) - 1) if len(times) > 1 else 0.04)
    key_pos = [i for i, p in enumerate(pts) if p in keys and i > 0]
    index = Index(pts, [0] + key_pos, times, times[-1] + last, vs.index, size, fps)
    file_end = max((float(t * base) for t, base in ends.values() if base), default=None)
    claimed = _claimed_end(container, vs)
    if damaged or (claimed and file_end is not None and claimed - file_end > max(0.5, 3 * last)):
        index.warnings.append(_early(index.end, claimed and claimed - pts[0] * tb))
    return index


def _has_sample_table(container, vs) -> bool:
    """MP4/MOV list every frame in a table read at open; without frame reordering (no B-frames)
    its timestamps are the presentation timestamps."""
    return "mp4" in container.format.name and not vs.codec_context.has_b_frames and bool(
        vs.duration)


def _sample_table(container, vs, clock: Clock, path: str) -> Index | None:
    """Index an MP4 from its sample table: no packet is read, which matters for long files.
    None when the table cannot be trusted (it disagrees with the first packets, or stops short of
    the header's duration, as in fragmented files): then the packet pass does it."""
    size, pts, keys, cut = os.path.getsize(path), [], [0], False
    for n, e in enumerate(vs.index_entries):
        if n % 4096 == 0:
            clock.check()
        if e.is_discard:
            continue
        if e.pos + e.size > size:  # the rest of the frames are not in the (truncated) file
            cut = True
            break
        if e.is_keyframe and pts:
            keys.append(len(pts))
        pts.append(e.timestamp)
    try:
        first = [p.pts for p in itertools.islice(container.demux(vs), 4) if p.size]
    except av.error.ExitError:
        raise
    except AV_ERRORS:
        return None
    if not pts or first != pts[: len(first)] or any(b <= a for a, b in itertools.pairwise(pts)):
        return None
    tb, fps = vs.time_base, _rate(vs)
    claimed = (vs.start_time or 0) + vs.duration
    last = _seconds(claimed - pts[-1], tb)  # the last frame lasts until the stream's end
    if cut or last <= 0:
        last = 1 / fps if fps else _seconds(pts[-1] - pts[0], tb) / max(len(pts) - 1, 1)
    elif last > 2 * max(_seconds(pts[-1] - pts[-2], tb) if len(pts) > 1 else 0, 1 / (fps or 1e9)):
        return None  # the table stops short of the header's duration
    times = [_seconds(p - pts[0], tb) for p in pts]
    index = Index(pts, keys, times, times[-1] + last, vs.index,
                  (vs.codec_context.width, vs.codec_context.height), fps)
    if cut:
        index.warnings.append(_early(index.end, _seconds(claimed - pts[0], tb)))
    return index


def _seconds(ticks: int, tb) -> float:
    """Exact (correctly rounded) seconds: every path must agree to the last bit on ties."""
    return ticks * tb.numerator / tb.denominator


def _early(end: float, claimed: float | None) -> str:
    of = f" of the {claimed:.2f} s its header claims" if claimed else ""
    return (f"the file ends early: its video stops at {end:.2f} s{of} (truncated or damaged?); "
            "sampled the part that is there")


def _claimed_end(container, vs) -> float | None:
    """Where the header says the file ends, on the container clock. Durations are read as absolute
    ends (Matroska's are; elsewhere this errs towards not warning when the start time is > 0)."""
    ends = [float(vs.duration * vs.time_base)] if vs.duration else []
    if container.duration:
        ends.append(container.duration / 1e6)
    return max(ends) if ends else None


def index_by_decoding(path: str, stream_index: int, size, fps: float, clock: Clock) -> Index:
    """For streams whose packet timestamps are missing or out of order (raw streams, AVI with
    B-frames): decode once to count the frames; they are then matched by decode order and timed
    at i / fps (or by their own timestamps when the rate is unknown)."""
    times = []
    with open_video(path, clock.timeout_s) as container:
        vs = container.streams.video[stream_index]
        for packet in container.demux(vs):
            clock.check()
            try:
                frames = vs.decode(packet)
            except av.error.FFmpegError:
                continue
            times += [f.time for f in frames]
    if not times:
        raise VideoError(f"could not decode any frame of {path}; the video data is damaged")
    if fps or None in times:
        step = 1 / (fps or 25.0)
        times = [i * step for i in range(len(times))]
    else:
        times = [max(t - times[0], 0.0) for t in times]
        for i in range(1, len(times)):
            times[i] = max(times[i], times[i - 1])
        step = times[-1] / (len(times) - 1) if len(times) > 1 else 0.04
    return Index(list(range(len(times))), [0], times, times[-1] + step, stream_index, size, fps,
                 by_position=True)


def unreadable(path: str, e: Exception) -> VideoError:
    """The catch-all for failures deep inside FFmpeg: one line, with FFmpeg's own reason."""
    text = (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()[0][:200]
    return VideoError(f"cannot read {path} ({text}); the file may be damaged")
