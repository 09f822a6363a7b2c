"""`python -m dycoke_cli.sample_clip out.mp4`: write a synthetic clip to check an install offline.

Ten seconds of 640x360 H.264 at 30 fps: a bar sweeping across a background whose colour drifts, so
consecutive frames are similar but not equal (the redundancy DyCoke removes).
"""

from __future__ import annotations

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


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dycoke_cli.sample_clip",
                                     description="Write a synthetic 10 s H.264 clip to check an install offline.")
    parser.add_argument("path", nargs="?", default="clip.mp4", type=Path, help="where to write it (default clip.mp4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length (default 10)")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    print(write_sample(args.path, seconds=args.seconds))


if __name__ == "__main__":
    main()
