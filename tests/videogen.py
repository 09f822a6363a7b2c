"""Generate small test videos with PyAV at test time (no binary fixtures in the repo).

Every frame carries its own number as a pattern (a moving gradient plus a bright block whose
position depends on the frame number), so a wrong pick shows up as different pixels, and a
bright marker in the top-left corner so a test can see which way a rotated video is turned.
Frames are built directly in yuv420p: cheap enough for the 18,000-frame benchmark file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def yuv_frame(i: int, width: int, height: int) -> np.ndarray:
    """Frame number `i` as a (H*3/2, W) yuv420p array."""
    y = np.empty((height, width), np.uint8)
    cols = (np.arange(width, dtype=np.int32) * 2 + i * 3) % 200 + 28
    y[:] = cols[None, :]
    bs = max(2, min(width, height) // 8)
    bx = (i * 5) % max(1, width - bs)
    by = (i * 3) % max(1, height - bs)
    y[by : by + bs, bx : bx + bs] = 16 + (i * 37) % 200
    y[: bs, : bs] = 250  # orientation marker: top-left
    chroma = np.full((height // 2, width), 128, np.uint8)
    chroma[: height // 4, :] = 90 + (i * 11) % 80  # U plane varies with the frame
    return np.concatenate([y, chroma], axis=0)


def make_video(
    path: str | Path,
    *,
    codec: str = "libx264",
    n: int = 48,
    fps: int = 24,
    width: int = 64,
    height: int = 48,
    gop: int | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    audio: bool = False,
    bframes: int | None = None,
) -> Path:
    """Write `n` frames. `pts` (in `time_base` units) overrides the regular 1/fps spacing: use
    it for variable frame rate or a non-zero first timestamp. Returns the path."""
    path = Path(path)
    with av.open(str(path), "w", options=container_options or {}) as out:
        st = out.add_stream(codec, rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        if time_base is not None:
            st.time_base = time_base
            st.codec_context.time_base = time_base
        if gop is not None:
            st.codec_context.gop_size = gop
        if bframes is not None:
            st.codec_context.max_b_frames = bframes
        opts = dict(options or {})
        if codec == "libx264":
            opts.setdefault("preset", "ultrafast")
            if gop is not None:
                opts.setdefault("x264-params", f"keyint={gop}:min-keyint={gop}:scenecut=0")
        if codec == "libvpx-vp9":
            opts.setdefault("deadline", "realtime")
            opts.setdefault("cpu-used", "8")
        st.options = opts
        if rotation is not None:
            st.set_display_rotation(rotation)
        ast = None
        if audio:
            ast = out.add_stream("aac", rate=16000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(yuv_frame(i, width, height), format="yuv420p")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            else:
                frame.pts = i
                frame.time_base = Fraction(1, fps)
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
        if ast is not None:
            _write_audio(out, ast, seconds=n / fps)
    return path


def _write_audio(out, ast, seconds: float) -> None:
    rate = 16000
    total = int(seconds * rate)
    for start in range(0, total, 1024):
        samples = np.zeros((1, min(1024, total - start)), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        for packet in ast.encode(frame):
            out.mux(packet)
    for packet in ast.encode():
        out.mux(packet)


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        _write_audio(out, out.add_stream("aac", rate=16000), seconds)
    return path


def make_empty_video_track(path: str | Path) -> Path:
    """A Matroska file that declares a video stream but holds no video frames (only audio)."""
    path = Path(path)
    with av.open(str(path), "w", format="matroska") as out:
        st = out.add_stream("libx264", rate=24)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        ast = out.add_stream("aac", rate=16000)
        out.start_encoding()
        _write_audio(out, ast, seconds=0.5)
    return path


def make_png(path: str | Path, width: int = 64, height: int = 48) -> Path:
    """A still PNG image (written under whatever name `path` has, e.g. `photo.mp4`)."""
    path = Path(path)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = 200
    with av.open(str(path), "w", format="image2pipe") as out:
        st = out.add_stream("png")
        st.width, st.height, st.pix_fmt = width, height, "rgb24"
        for packet in st.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    return path
