"""Answers as OpenAI chat completions: one JSON object, or server-sent events of chunks.

`usage` holds OpenAI's token counts (with the prompt tokens reused from the cache as
`prompt_tokens_details.cached_tokens`) and, under `dycoke`, every figure `dycoke ask --json` prints:
visual tokens before and after, the method with its effective parameters, the stage timings.
"""

from __future__ import annotations

import json
import time
import uuid

DONE = b"data: [DONE]\n\n"


class Completion:
    """The identity every object of one answer shares: id, creation time, model."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def whole(self, reply) -> dict:
        message = {"role": "assistant", "content": reply.text}
        return self._object("chat.completion", [{"index": 0, "message": message, "logprobs": None,
                                                 "finish_reason": reply.finish_reason}], usage(reply.stats))

    def chunk(self, delta: dict, finish_reason: str | None = None, stats=None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._object("chat.completion.chunk", [choice], None if stats is None else usage(stats))

    def usage_chunk(self, stats) -> dict:
        """The last chunk OpenAI sends with stream_options.include_usage: no choices, the usage."""
        return self._object("chat.completion.chunk", [], usage(stats))

    def _object(self, kind: str, choices: list, usage_: dict | None) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": choices, "usage": usage_}


def usage(stats) -> dict:
    figures = stats.to_dict()
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.generated_tokens,
            "total_tokens": stats.prompt_tokens + stats.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.prefix_reused_tokens}, "dycoke": figures}


def sse(obj: dict) -> bytes:
    """One server-sent event."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
