"""Where the server gets a video's encoding: one function, so that a cache of encodings (on disk, keyed
by the plan) plugs in here and nowhere else.

Sessions (sessions.py) already share an encoding in memory between settings that encode the same
frames the same way (equal `Plan.encoding_key`); this is called only when none of them holds it.
"""

from __future__ import annotations


def encoded_video(lm, plan):
    """The plan's frames decoded and run through the vision tower (engine.EncodedVideo)."""
    from dycoke_cli.engine import encode

    return encode(lm, plan)
