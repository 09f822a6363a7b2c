"""Procedural "shapes" clips with known answers: a task a tiny trained model can really solve.

`dycoke sample DIR --clips N --seed S` writes N clips as H.264 mp4 files and DIR/questions.jsonl
(four records per clip) for `dycoke run` (commands/sample.py; `python -m dycoke_cli.shapes make` is
another name for it). The same description is used to train
the tiny model of benchmarks/shapes/ and to check it, so a score measures the pipeline (loading,
preprocessing, compression, generation, scoring), not the clip maker.

A clip (8 frames at 8 fps, 112 x 112, H.264 yuv420p, crf 18 by default):
- background, static for the clip: 8 x 8-pixel cells, each a grey level uniform in [60, 150) plus a
  per-channel offset uniform in [-15, 15], clipped to [0, 255];
- one 20 x 20 square of one of four colours moving 56 px left, right, up or down at constant speed
  from the first frame to the last (position rounded per frame), at least 4 px inside the border;
- one white 16 x 16 square shown in exactly one frame (uniform over the frames), at least 2 px
  inside the border. Where it overlaps the moving square the flash is drawn on top (so it is always
  fully visible).

Questions (options in this order, answer a letter; the open one is answered with the exact sentence):
  color      "What color is the moving square?"           red, green, blue, yellow
  direction  "Which way does the colored square move?"    left, right, up, down
  flash      "When does the white flash appear?"          first/second/third/last quarter,
             quarter = flash_frame * 4 // frames
  describe   "Describe the clip."  ->  "A {color} square moves {direction}. The flash is in the {quarter}."

Everything is deterministic from the seed: clip i is drawn from numpy's Generator seeded with
(seed, i), so a clip does not depend on how many clips are made.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

FRAMES = 8
FPS = 8
SIZE = 112
CELL = 8
SQUARE = 20
TRAVEL = 56
SQUARE_MARGIN = 4
FLASH = 16
FLASH_MARGIN = 2
CRF = 18

COLORS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 70, 230), "yellow": (230, 210, 40)}
COLOR_NAMES = list(COLORS)
DIRECTIONS = ["left", "right", "up", "down"]
QUARTERS = ["first quarter", "second quarter", "third quarter", "last quarter"]
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy)

LETTERS = "ABCD"
QUESTIONS = {
    "color": ("What color is the moving square?", COLOR_NAMES),
    "direction": ("Which way does the colored square move?", DIRECTIONS),
    "flash": ("When does the white flash appear?", QUARTERS),
    "describe": ("Describe the clip.", None),
}
TASKS = list(QUESTIONS)


@dataclass(frozen=True)
class Labels:
    color: int  # index into COLOR_NAMES
    direction: int  # index into DIRECTIONS
    flash_frame: int
    frames: int = FRAMES
    # Geometry, for training targets and checks: top-left (x, y) of the moving square in each frame
    # and of the white square.
    square_xy: tuple[tuple[int, int], ...] = ()
    flash_xy: tuple[int, int] = (0, 0)

    @property
    def quarter(self) -> int:
        return self.flash_frame * 4 // self.frames

    def answer(self, task: str) -> str:
        """The expected answer: a letter for the multiple-choice tasks, the sentence for `describe`."""
        if task == "color":
            return LETTERS[self.color]
        if task == "direction":
            return LETTERS[self.direction]
        if task == "flash":
            return LETTERS[self.quarter]
        if task == "describe":
            return describe(COLOR_NAMES[self.color], DIRECTIONS[self.direction], QUARTERS[self.quarter])
        raise ValueError(f"unknown task {task!r}")


def describe(color: str, direction: str, quarter: str) -> str:
    return f"A {color} square moves {direction}. The flash is in the {quarter}."


def background(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8: 8 x 8 cells of grey in [60, 150) plus a per-channel offset in [-15, 15]."""
    cells = -(-size // CELL)
    grey = rng.uniform(60, 150, size=(cells, cells, 1))
    offset = rng.uniform(-15, 15, size=(cells, cells, 3))
    tile = np.clip(np.rint(grey + offset), 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(tile, CELL, axis=0), CELL, axis=1)[:size, :size]


def clip(rng: np.random.Generator, frames: int = FRAMES, size: int = SIZE) -> tuple[np.ndarray, Labels]:
    """One clip in memory: (frames, size, size, 3) uint8 RGB and its labels (no video coding)."""
    color = int(rng.integers(len(COLORS)))
    direction = int(rng.integers(len(DIRECTIONS)))
    flash_frame = int(rng.integers(frames))
    base = background(rng, size)
    dx, dy = _STEP[DIRECTIONS[direction]]
    lo, hi = SQUARE_MARGIN, size - SQUARE_MARGIN - SQUARE  # allowed top-left range of the square
    # Along the motion the whole path must fit: start in [lo, hi - TRAVEL] (moving +) or [lo + TRAVEL, hi].
    along = rng.uniform(lo, hi - TRAVEL)
    across = rng.uniform(lo, hi)
    start_x, start_y = (along, across) if dx else (across, along)
    if dx < 0:
        start_x += TRAVEL
    if dy < 0:
        start_y += TRAVEL
    fx, fy = (int(v) for v in rng.integers(FLASH_MARGIN, size - FLASH_MARGIN - FLASH + 1, size=2))
    video = np.repeat(base[None], frames, axis=0)
    rgb = np.array(COLORS[COLOR_NAMES[color]], np.uint8)
    path = []
    for f in range(frames):
        t = f / (frames - 1) if frames > 1 else 0.0
        x = int(round(start_x + dx * TRAVEL * t))
        y = int(round(start_y + dy * TRAVEL * t))
        path.append((x, y))
        video[f, y:y + SQUARE, x:x + SQUARE] = rgb
        if f == flash_frame:
            video[f, fy:fy + FLASH, fx:fx + FLASH] = 255
    return video, Labels(color, direction, flash_frame, frames, tuple(path), (fx, fy))


def clip_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def encode(frames: np.ndarray, target, fps: int = FPS, crf: int = CRF, preset: str = "medium") -> None:
    """Write (F, H, W, 3) uint8 RGB frames as H.264 yuv420p mp4 to a path or a binary file object."""
    import av

    with av.open(target, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        stream.time_base = Fraction(1, fps)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode(source) -> np.ndarray:
    """Every frame of a video (path or file object) as (F, H, W, 3) uint8 RGB, in presentation order."""
    import av

    with av.open(source) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def h264_roundtrip(frames: np.ndarray, crf: int = CRF, preset: str = "medium") -> np.ndarray:
    """What a model sees after the clip went through an mp4 file: encode in memory, decode back."""
    buffer = io.BytesIO()
    encode(frames, buffer, crf=crf, preset=preset)
    buffer.seek(0)
    return decode(buffer)


def records(seed: int, index: int, video: str, labels: Labels) -> list[dict]:
    """The four question records of one clip, in TASKS order."""
    out = []
    for task in TASKS:
        question, options = QUESTIONS[task]
        record = {"id": f"s{seed}-{index}-{task}", "video": video, "question": question}
        if options is not None:
            record["options"] = list(options)
        record["answer"] = labels.answer(task)
        record["task"] = task
        out.append(record)
    return out


def make(folder: Path, clips: int, seed: int, crf: int = CRF) -> Path:
    """Write clips/NNNNN.mp4 and questions.jsonl under `folder`; returns the questions file."""
    if not 0 <= crf <= 18:
        raise ValueError(f"crf must be in [0, 18], got {crf}")
    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    lines = []
    width = max(5, len(str(clips - 1)))
    for i in range(clips):
        frames, labels = clip(clip_rng(seed, i))
        video = f"clips/s{seed}-{i:0{width}d}.mp4"
        encode(frames, str(folder / video), crf=crf)
        lines += records(seed, i, video, labels)
    questions = folder / "questions.jsonl"
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return questions


def main(argv: list[str] | None = None) -> None:
    """`python -m dycoke_cli.shapes make DIR ...`, kept as another name for `dycoke sample DIR ...`."""
    from dycoke_cli.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["make"]:
        argv = argv[1:]
    sys.argv = ["dycoke", "sample", *argv]
    cli_main()


if __name__ == "__main__":
    main()
