"""Video input: probe a file, choose the frames a question needs, decode only those (PyAV).

`reader` picks and decodes frames by timestamp; `probe` indexes a file without decoding it and turns
every way a file can be unusable into one VideoError.
"""

from dycoke_cli.video.reader import Frames, Sampling, parse_time, read_frames

__all__ = ["Frames", "Sampling", "parse_time", "read_frames"]
