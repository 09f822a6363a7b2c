"""What a video becomes: the sampling a user asks for and the decoded frames, as plain data.

Kept apart from the decoder (reader.py, PyAV) so the engine and the model adapters can take frames
from anywhere, e.g. synthetic frames on a machine without PyAV.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from dycoke_cli.errors import BadInputError

MAX_FRAMES = 10_000  # frames one request may ask for: far past any model's context, bounded in memory


@dataclass(frozen=True)
class Sampling:
    frames: int | None = 32  # uniform count; ignored when fps is set
    fps: float | None = None  # sample at this rate instead
    max_frames: int | None = None  # cap for fps mode (uniform over the range when the cap binds)
    start: float | None = None  # seconds
    end: float | None = None  # seconds


@dataclass(frozen=True)
class SamplingRequest:
    """What a user asked for, before the model's family is known: an explicit count (--frames) or rate
    (--fps) if given, else the family's own sampling; the range and the cap apply either way."""

    frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    start: float | None = None  # seconds
    end: float | None = None  # seconds

    @property
    def explicit(self) -> bool:
        return self.frames is not None or self.fps is not None

    def resolve(self, default: Sampling) -> Sampling:
        """The sampling to run: the user's count or rate, else `default` (the family's), restricted to
        the user's range and cap. The one place a range meets a family's default."""
        if self.explicit:
            return Sampling(frames=self.frames if self.frames is not None else default.frames, fps=self.fps,
                            max_frames=self.max_frames, start=self.start, end=self.end)
        return Sampling(frames=default.frames, fps=default.fps, max_frames=self.max_frames or default.max_frames,
                        start=self.start, end=self.end)


@dataclass
class Frames:
    pixels: np.ndarray  # (F, H, W, 3) uint8 RGB, rotation metadata applied
    timestamps: list[float]  # seconds from the video's own start, one per frame
    indices: list[int]  # index of each frame in presentation order
    fps: float  # stream's average frame rate
    duration: float  # seconds
    warnings: list[str] = field(default_factory=list)

    def subset(self, keep: list[int]) -> "Frames":
        """These frames restricted to `keep` (ascending positions into this list), e.g. fewer frames
        for a method that encodes fewer."""
        return Frames(pixels=self.pixels[keep], timestamps=[self.timestamps[i] for i in keep],
                      indices=[self.indices[i] for i in keep], fps=self.fps, duration=self.duration,
                      warnings=list(self.warnings))


def parse_time(text: str) -> float:
    """"12.5", "90", "01:02:03.250", "02:03" -> seconds. BadInputError otherwise."""
    parts = str(text).strip().split(":")
    ok = 1 <= len(parts) <= 3 and all(re.fullmatch(r"\d+", p) for p in parts[:-1])
    ok = ok and re.fullmatch(r"\d+(\.\d*)?|\.\d+", parts[-1]) is not None
    if ok and len(parts) > 1:
        ok = float(parts[-1]) < 60 and (len(parts) == 2 or int(parts[1]) < 60)
    if not ok:
        raise BadInputError(
            f"cannot read time {text!r}: use seconds (12.5) or [HH:]MM:SS[.ms] (01:02:03.250)"
        )
    return sum(float(p) * 60**k for k, p in enumerate(reversed(parts)))


