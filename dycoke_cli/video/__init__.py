"""Video input: probe a file, choose the frames a question needs, decode only those (PyAV).

`reader` picks and decodes frames by timestamp; `probe` indexes a file without decoding it and turns
every way a file can be unusable into one VideoError.
"""

from dycoke_cli.video.reader import (Frames, FramePlan, Sampling, VideoProbe, decode_plan, parse_time, plan_frames,
                                     probe_video, read_frames)

__all__ = ["FramePlan", "Frames", "Sampling", "VideoProbe", "decode_plan", "parse_time", "plan_frames", "probe_video",
           "read_frames"]
