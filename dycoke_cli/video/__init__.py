"""Video input: probe a file, choose the frames a question needs, decode only those (PyAV).

`frames` holds the plain data (Sampling, Frames, parse_time) and imports no decoder; `reader` picks
and decodes frames by timestamp; `probe` indexes a file without decoding it and turns every way a
file can be unusable into one VideoError. The reader's names load PyAV on first use only, so code
that is handed frames (the engine, a GPU benchmark on a machine without PyAV) never needs it.
"""

from dycoke_cli.video.frames import MAX_FRAMES, Frames, Sampling, SamplingRequest, parse_time

_READER = ("FramePlan", "VideoProbe", "decode_chunks", "decode_plan", "plan_frames", "probe_video", "read_frames")

__all__ = ["MAX_FRAMES", "Frames", "Sampling", "SamplingRequest", "parse_time", *_READER]


def __getattr__(name: str):
    if name in _READER:
        from dycoke_cli.video import reader

        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
