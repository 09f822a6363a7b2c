"""Read the frames a question needs from a video file, decoding as little as possible.

Why it is built this way: decoding dominates the cost of reading a video, and a model only looks
at a few dozen frames. So we first index every frame's presentation timestamp and the keyframes
without decoding (probe.py: the MP4 sample table, else one pass over the packets), pick the
wanted frames by timestamp, then decode only from each wanted frame's keyframe up to it,
continuing instead of seeking when the next one is close, and skipping frames nothing refers to
(most B-frames) unless wanted. Independent keyframe ranges are decoded by parallel workers. Only
the kept frames are converted to RGB and held, written straight into the result array.

Picking contract (README and the man page quote this):
- The range is [start, end): start defaults to 0, end to the end of the last frame. Times are
  seconds from the first frame's presentation time (the stream's start time is subtracted).
- Uniform (--frames N): N equal segments; target t_i = start + (i + 0.5) * (end - start) / N.
- Rate (--fps F): targets t_i = start + (i + 0.5) / F for every t_i < end (at least one); if that
  is more than --max-frames M, M uniform targets instead.
- Each target takes the frame whose presentation interval contains it: the last frame with
  timestamp <= t_i (+1 us for float ties), or the first frame when t_i precedes it. This is
  exact for variable frame rate, since it uses real timestamps, never index = t * fps.
- A frame picked by several targets appears once, in time order, so a short range gives fewer
  frames than asked (never zero); the model accepts any count >= 1.
- Truncated file (it opens, then ends before its header's duration): the range is clipped to
  the frames that are present and a warning says so; frames that then fail to decode are left
  out with a warning "decoded K of N frames ...". No decodable frame at all: VideoError.
- Reading is bounded by timeout_s (VideoError when it runs out).
"""

from __future__ import annotations

import bisect
import math
import numbers
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator

import av
import numpy as np

from dycoke_cli.errors import BadInputError, DycokeError, VideoError
from dycoke_cli.video.frames import MAX_FRAMES, Frames, Sampling
from dycoke_cli.video.probe import (
    AV_ERRORS,
    MAX_PIXELS,
    Cancelled,
    Clock,
    Index,
    check_path,
    index_by_decoding,
    open_video,
    probe,
    unreadable,
)

SEEK_COST = 8  # a seek + decoder flush costs about as much as decoding this many frames
TIE = 1e-6  # seconds: a target within 1 us after a frame's timestamp picks that frame
MAX_BYTES = 16 << 30  # refuse to hold more than this many bytes of kept frames
MAX_WORKERS = 4


@dataclass(frozen=True)
class FramePlan:
    """The frames a sampling picks from one file, found without decoding any: enough to check a
    request against a model's limits before the slow work starts.

    `keep` narrows the sampled frames to a method's subset (positions into the sampling's picks):
    `wanted` holds only those, so only those are ever decoded.
    """

    path: str
    sampling: Sampling
    index: Index
    wanted: list[int]  # positions (into index.times) to decode, ascending
    warnings: list[str]
    clock: Clock
    sampled: int = 0  # frames the sampling picked (0: len(wanted), nothing narrowed)
    keep: tuple[int, ...] | None = None

    @property
    def count(self) -> int:
        return len(self.wanted)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames, rotation applied."""
        return self.index.size

    @property
    def timestamps(self) -> list[float]:
        """Seconds of each planned frame, as decoding will report them."""
        return [self.index.times[p] for p in self.wanted]

    def narrowed(self, keep: list[int] | None) -> "FramePlan":
        """This plan restricted to the sampled frames at positions `keep` (None: unchanged)."""
        if keep is None:
            return self
        return replace(self, wanted=[self.wanted[i] for i in keep], sampled=self.sampled or self.count,
                       keep=tuple(keep))


def read_frames(path, sampling: Sampling = Sampling(), timeout_s: float = 60.0) -> Frames:
    """Decode the frames `sampling` picks from the video at `path` (see the module docstring)."""
    return decode_plan(plan_frames(path, sampling, timeout_s))


@dataclass
class VideoProbe:
    """A video file indexed without decoding: its frames' timestamps, keyframes and size."""

    path: str
    index: Index
    clock: Clock

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames, rotation applied."""
        return self.index.size

    def plan(self, sampling: Sampling) -> FramePlan:
        """The frames `sampling` picks here, decoding nothing."""
        _check_sampling(sampling)
        with _av_errors(self.path, self.clock):
            wanted, warnings = _choose(self.path, sampling, self.index)
        return FramePlan(self.path, sampling, self.index, wanted, warnings, self.clock)


def probe_video(path, timeout_s: float = 60.0) -> VideoProbe:
    """Index the file; every unusable file is a VideoError. The timeout bounds probing, and again each
    decode of a plan made from it."""
    path = os.fspath(path)
    check_path(path)
    clock = Clock(timeout_s, path)
    with _av_errors(path, clock):
        return VideoProbe(path, probe(path, clock), clock)


def plan_frames(path, sampling: Sampling = Sampling(), timeout_s: float = 60.0) -> FramePlan:
    """Index the file and pick the frames, decoding nothing."""
    _check_sampling(sampling)
    return probe_video(path, timeout_s).plan(sampling)


def decode_plan(plan: FramePlan) -> Frames:
    """Decode every planned frame at once; the timeout counts from the start of this decode."""
    chunks = list(decode_chunks(plan, max(plan.count, 1)))
    return chunks[-1][1]


def decode_chunks(plan: FramePlan, size: int) -> Iterator[tuple[int, Frames]]:
    """Decode the planned frames `size` at a time, so that only one chunk is ever held: yields
    (position of the chunk's first frame in the plan, its frames). Frames that fail to decode are left
    out of their chunk; the last chunk's warnings say how many (no frame at all: VideoError).

    Decoded timestamps that run backwards mean the index cannot be trusted (raw streams, AVI with
    B-frames): the file is then indexed by decoding and matched by decode order, and decoding starts
    again from position 0, so a consumer keeps the LAST frames it got for each position. The plan's
    frame count stands (the request was checked against it); if re-indexing changes it, VideoError.
    The timeout bounds each chunk's decoding, not the consumer's work between chunks.
    """
    path, index, wanted = plan.path, plan.index, plan.wanted
    clock = plan.clock.restarted()
    got_total, start = 0, 0
    with _av_errors(path, clock):
        while start < len(wanted):
            chunk = wanted[start:start + size]
            clock = clock.restarted()  # each chunk's decode has the whole timeout: the tower runs in between
            pixels, got, disordered = _decode_wanted(path, index, chunk, clock)
            if disordered and not index.by_position:
                pixels = None  # let this attempt's frames go before decoding again
                index = index_by_decoding(path, index.stream_index, index.size, index.fps, clock)
                wanted = _rechosen(plan, index)
                got_total, start = 0, 0
                continue
            kept = [p for p, ok in zip(chunk, got, strict=True) if ok]
            got_total += len(kept)
            last = start + size >= len(wanted)
            if last and not got_total:
                raise VideoError(f"could not decode any frame of {path}; the video data is damaged")
            warnings = list(index.warnings + plan.warnings) if start == 0 else []
            if last and got_total < len(wanted):
                warnings.append(f"decoded {got_total} of {len(wanted)} frames; the rest are damaged or "
                                "missing (the file may be truncated)")
            if len(kept) < len(chunk):
                pixels = pixels[np.asarray(got)]
            yield start, Frames(pixels, [index.times[p] for p in kept], kept, _fps(index), index.end, warnings)
            start += size


def _rechosen(plan: FramePlan, index: Index) -> list[int]:
    """The plan's frames picked again on a re-built index, narrowed as the plan was."""
    chosen, _ = _choose(plan.path, plan.sampling, index)
    if len(chosen) != (plan.sampled or plan.count):
        raise VideoError(f"{plan.path}: its timestamps are unreliable and decoding it finds other frames "
                         "than its index claims; convert it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    return chosen if plan.keep is None else [chosen[i] for i in plan.keep]


def _fps(index: Index) -> float:
    if not index.fps and len(index.times) > 1:
        return (len(index.times) - 1) / max(index.times[-1], 1e-9)
    return index.fps


@contextmanager
def _av_errors(path: str, clock: Clock):
    """FFmpeg's failures as one VideoError each; our own errors pass through."""
    try:
        yield
    except DycokeError:
        raise
    except av.error.ExitError as e:  # FFmpeg's I/O was interrupted by the open/read timeout
        raise clock.expired() from e
    except AV_ERRORS as e:
        raise unreadable(path, e) from e


def _check_sampling(s: Sampling) -> None:
    def number(v, low_ok=True):
        return isinstance(v, numbers.Real) and math.isfinite(v) and (v > 0 or low_ok and v == 0)

    def count(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1

    error = None
    if s.fps is not None and not number(s.fps, low_ok=False):
        error = f"--fps must be a positive number, got {s.fps!r}"
    elif s.fps is None and not count(s.frames):
        error = f"--frames must be a whole number >= 1, got {s.frames!r}"
    elif s.max_frames is not None and not count(s.max_frames):
        error = f"--max-frames must be a whole number >= 1, got {s.max_frames!r}"
    elif s.fps is None and s.frames > MAX_FRAMES:
        error = f"--frames {s.frames} is above the limit of {MAX_FRAMES:,} frames per video"
    elif s.max_frames is not None and s.max_frames > MAX_FRAMES:
        error = f"--max-frames {s.max_frames} is above the limit of {MAX_FRAMES:,} frames per video"
    for name, v in (("--start", s.start), ("--end", s.end)):
        if error is None and v is not None and not number(v):
            error = f"{name} must be a time >= 0 seconds, got {v!r}"
    if error is None and s.start is not None and s.end is not None and s.end <= s.start:
        error = f"--end ({s.end:g} s) must be later than --start ({s.start:g} s)"
    if error:
        raise BadInputError(error)


def _choose(path: str, s: Sampling, index: Index) -> tuple[list[int], list[str]]:
    """The wanted positions, ascending, and the warnings picking them gave."""
    lo, hi, warnings = s.start or 0.0, index.end, []
    if lo >= index.end:
        raise VideoError(f"--start {lo:g} s is past the end of {path} "
                         f"(its video is {index.end:.2f} s long)")
    if s.end is not None and s.end > index.end + TIE:
        warnings.append(f"--end {s.end:g} s is past the end of the video ({index.end:.2f} s); "
                        "sampling up to the end")
    elif s.end is not None:
        hi = s.end
    targets = _targets(s, lo, hi)
    wanted = sorted({_pick(index.times, t) for t in targets})
    if len(wanted) < len(targets):
        warnings.append(f"asked for {len(targets)} frames but the range holds {len(wanted)}; "
                        "each is used once")
    w, h = index.size
    if w * h * 3 * len(wanted) > MAX_BYTES:
        raise VideoError(f"{len(wanted)} frames of {w}x{h} would need over "
                         f"{MAX_BYTES >> 30} GiB; ask for fewer frames")
    return wanted, warnings


def _decode_wanted(path: str, index: Index, wanted: list[int], clock: Clock):
    """Decode the wanted positions: (pixels, got, disordered)."""
    sink = _Sink({p: j for j, p in enumerate(wanted)})
    _decode(path, index, wanted, sink, clock)
    return sink.pixels, sink.got, sink.disordered


def _targets(s: Sampling, lo: float, hi: float) -> list[float]:
    span, n = hi - lo, s.frames
    if s.fps is not None:
        k = math.ceil(span * s.fps - 0.5 - 1e-9)  # number of i with lo + (i + 0.5) / fps < hi
        if k > MAX_FRAMES and (s.max_frames is None or s.max_frames > MAX_FRAMES):
            raise BadInputError(f"--fps {s.fps:g} over {span:.1f} s asks for {k:,} frames, above the limit of "
                                f"{MAX_FRAMES:,}; lower --fps or set --max-frames")
        if k >= 1 and (s.max_frames is None or k <= s.max_frames):
            return [lo + (i + 0.5) / s.fps for i in range(k)]
        n = s.max_frames if k >= 1 else 1
    return [lo + (i + 0.5) * span / n for i in range(n)]


def _pick(times: list[float], t: float) -> int:
    """Position of the frame whose presentation interval contains instant t."""
    return max(bisect.bisect_right(times, t + TIE) - 1, 0)


def _decode(path: str, index: Index, wanted: list[int], sink: _Sink, clock: Clock) -> None:
    """Group the wanted positions by the keyframe that leads to them, split the groups into
    contiguous chunks of about equal decoding cost, and decode each chunk in its own worker."""
    runs: dict[int, list[int]] = {}  # keyframe position -> wanted positions it leads to
    for p in wanted:
        runs.setdefault(index.keys[bisect.bisect_right(index.keys, p) - 1], []).append(p)
    runs = sorted(runs.items())
    cost = [r[-1] - k + 1 + SEEK_COST for k, r in runs]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = 1 if index.by_position or sum(cost) < 64 else min(cpus or 1, MAX_WORKERS, len(runs))
    chunks, acc, total = [[] for _ in range(workers)], 0, sum(cost)
    for run, c in zip(runs, cost, strict=True):
        chunks[min(int(acc * workers / total), workers - 1)].append(run)
        acc += c
    jobs = [(path, index, chunk, sink, clock, workers > 1) for chunk in chunks if chunk]
    if len(jobs) == 1:
        return _decode_runs(*jobs[0])
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(_decode_runs, *job) for job in jobs]
        wait(futures, return_when=FIRST_EXCEPTION)
        sink.cancelled = True  # the others stop at their next frame if one failed
    for error in [f.exception() for f in futures]:
        if error is not None and not isinstance(error, Cancelled):
            raise error


class _Sink:
    """Writes kept frames straight into one preallocated (F, H, W, 3) array; thread-safe."""

    def __init__(self, slot: dict[int, int]):
        self.slot, self.lock = slot, threading.Lock()
        self.pixels = np.zeros((len(slot), 0, 0, 3), np.uint8)
        self.got = [False] * len(slot)
        self.shape = None  # (H, W) after rotation, fixed by the first kept frame
        self.disordered = False  # a decoded timestamp went backwards: the index is unreliable
        self.cancelled = False  # set when one worker failed: the others stop early

    def put(self, pos: int, frame) -> None:
        k = round((frame.rotation or 0) / 90) % 4  # counter-clockwise quarter turns
        if frame.width * frame.height > MAX_PIXELS:
            raise VideoError(f"frame size {frame.width}x{frame.height} is too large")
        with self.lock:
            if self.shape is None:
                if frame.width * frame.height * 3 * len(self.slot) > MAX_BYTES:
                    raise VideoError(f"{len(self.slot)} frames of {frame.width}x{frame.height} "
                                     f"would need over {MAX_BYTES >> 30} GiB; ask for fewer frames")
                self.shape = (frame.height, frame.width)[:: 1 if k % 2 == 0 else -1]
                self.pixels = np.zeros((len(self.slot), *self.shape, 3), np.uint8)
        h, w = self.shape if k % 2 == 0 else self.shape[::-1]
        if (frame.height, frame.width) == (h, w):
            rgb = frame.to_ndarray(format="rgb24")
        else:  # the stream changed size mid-way: scale back to the first frame's size
            rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
        j = self.slot[pos]
        self.pixels[j] = np.rot90(rgb, k) if k else rgb
        self.got[j] = True


def _decode_runs(path: str, index: Index, runs, sink: _Sink, clock: Clock, parallel: bool):
    """Decode each run (keyframe, wanted positions) in order, continuing instead of seeking when
    the decoder is already at most SEEK_COST frames before the run's keyframe."""
    lookup = None if index.by_position else {p: i for i, p in enumerate(index.pts)}
    with open_video(path, clock.timeout_s) as container:
        vs = container.streams.video[index.stream_index]
        if parallel:  # the workers already use the cores; FFmpeg's own threads would compete
            vs.thread_count = 1
        at = [0]  # position of the next frame the decoder returns; -1 right after a seek
        for key, want in runs:
            if not (key - SEEK_COST <= at[0] <= want[0]):
                at[0] = _seek(container, vs, index.pts[key])
            if not _take(container, vs, want, lookup, index.pts, sink, clock, at):
                at[0] = _seek(container, vs, index.pts[0])  # landed past it: from the start
                _take(container, vs, want, lookup, index.pts, sink, clock, at)


def _seek(container, vs, pts: int) -> int:
    container.seek(pts, stream=vs, backward=True)  # to the keyframe at or before pts
    return -1


def _take(container, vs, want, lookup, index_pts, sink: _Sink, clock: Clock, at) -> bool:
    """Decode forward up to the last wanted position; False if the first frame came too late."""
    todo = set(want)
    keep = None if lookup is None else {index_pts[p] for p in want}
    for frame in _decoded(container, vs, clock, at if lookup is None else None, keep):
        if sink.cancelled:
            raise Cancelled
        pos = at[0] - 1 if lookup is None else lookup.get(frame.pts)
        if pos is None:
            continue
        if at[0] == -1 and pos > want[0]:
            return False
        if lookup is not None and pos < at[0]:
            sink.disordered = True
        at[0] = pos + 1
        if pos in todo:
            sink.put(pos, frame)
            todo.discard(pos)
        if pos >= want[-1]:
            break
    return True


def _decoded(container, vs, clock: Clock, counter, keep=None):
    """Frames of one stream from the current position on. Damaged packets are skipped (the frames
    they carry go missing, which the caller counts); `counter`, when given, counts frames. With
    `keep` (the pts wanted), frames no other frame refers to (most B-frames) are not decoded at
    all unless wanted: the decoder skips them by itself, so what it returns is unchanged."""
    ctx = vs.codec_context
    for packet in container.demux(vs):
        clock.check()
        if keep is not None:
            ctx.skip_frame = "DEFAULT" if packet.pts in keep else "NONREF"
        try:
            frames = vs.decode(packet)
        except av.error.FFmpegError:
            continue
        for frame in frames:
            if counter is not None:
                counter[0] += 1
            yield frame
