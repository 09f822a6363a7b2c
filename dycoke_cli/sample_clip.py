"""`python -m dycoke_cli.sample_clip out.mp4`: write a synthetic clip to check an install offline.

Ten seconds of 640x360 H.264 at 30 fps: a bar sweeping across a background whose colour drifts, so
consecutive frames are similar but not equal (the redundancy DyCoke removes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np


def write_sample(path: Path, seconds: float = 10.0, size: tuple[int, int] = (640, 360), fps: int = 30) -> Path:
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.empty((height, width, 3), np.uint8)
            frame[...] = (40 + i % 160, 90, 160 - i % 120)
            x = int((i / (seconds * fps)) * (width - 60))
            frame[height // 3: 2 * height // 3, x:x + 60] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "clip.mp4")
    print(write_sample(target))
