"""A checked request and its local video -> a plan.Plan, with every check the command line makes.

Runs on its own thread with its own model adapter (configuration and tokenizer, no weights), so a
refused request is answered at once, while the model thread generates, and the two threads never
share a tokenizer.
"""

from __future__ import annotations

from dycoke_cli.errors import DycokeError


def plan_request(adapter, chat, video):
    """The plan of `video` (media.Video) for `chat` (schema.ChatRequest): its probe, the sampling and the
    compression setting against the model, and the whole conversation against its context."""
    from dycoke_cli.plan import plan_video
    from dycoke_cli.video import probe_video

    try:
        probe = probe_video(video.path)
        return plan_video(probe, chat.sampling, chat.compression, adapter, [chat.turns],
                          chat.generation.max_new_tokens, chat.system)
    except DycokeError as exc:  # named as the client sent it, never by a temporary path
        raise type(exc)(str(exc).replace(str(video.path), video.label)) from None
