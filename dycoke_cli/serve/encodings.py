"""Where the server gets a video's encoding: through the video cache (dycoke_cli/cache), as `ask` and
`run` do, so that a video encoded by `dycoke ask`, by `dycoke run` or by an earlier server with the same
model and frames is read from disk instead of decoded and run through the vision tower again.

Sessions (sessions.py) already share an encoding in memory between settings that encode the same
frames the same way (equal `Plan.encoding_key`); this is called only when none of them holds it.
"""

from __future__ import annotations


def encoded_video(lm, plan, video=None, cache=None):
    """The plan's frames decoded and run through the vision tower, or read from `cache` (a
    cache.VideoCache; None: off), as an engine.EncodedVideo. `video` (media.Video) says what the
    request's file is: bytes a client sent or the server fetched sit in a temporary file whose path
    and time change each time they are written, so the cache knows them by their SHA-256 instead."""
    from dycoke_cli.engine import encode

    content = None
    if video is not None and video.identity[0] == "bytes":
        content = {"sha256": video.identity[1]}
    return encode(lm, plan, cache, content)
