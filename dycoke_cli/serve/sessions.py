"""Sessions kept between requests, on the model thread: a repeat question reuses the encoded video and
the [prefix + video] KV cache, as `dycoke ask q1 q2` does within one process.

A Session is kept per (video content, encoding key, compression setting, system prompt), the least
recently used dropped first; settings that encode the same frames the same way share one encoding.
A request's earlier turns become the Session's history for that request, so a conversation sent
turn by turn (as OpenAI clients send it) prefills only its newest turn.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from dycoke_cli.serve.encodings import encoded_video
from dycoke_cli.serve.stops import StopText, cut_at_stop


@dataclass
class Reply:
    text: str  # cut before a stop string
    finish_reason: str  # "stop" (end of answer or a stop string) or "length"
    stats: object  # stats.Stats


class Sessions:
    def __init__(self, lm, size: int):
        self.lm = lm
        self.size = size
        self._sessions: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def answer(self, job, chat, video, plan) -> Reply | None:
        """Answer `chat` on the model thread; None when the job was stopped before generating."""
        session = self._session(video, plan, chat)
        if job.should_stop():
            return None
        stop = StopText(chat.stop)

        def on_text(delta: str) -> None:
            sent = stop.feed(delta)
            job.text_done = stop.hit
            if sent and job.stream:
                job.emit("text", sent)

        session.history = list(chat.history)
        try:
            answer = session.chat(chat.question, chat.generation, should_stop=job.should_stop,
                                  on_text=on_text if job.stream or chat.stop else None)
        except BaseException:
            session.discard_cache()  # a failed generate may have half-extended it
            raise
        rest = stop.flush()
        if rest and job.stream:
            job.emit("text", rest)
        text, hit = cut_at_stop(answer.text, chat.stop)
        length = not hit and answer.stats.generated_tokens >= chat.generation.max_new_tokens
        return Reply(text=text, finish_reason="length" if length else "stop", stats=answer.stats)

    def _session(self, video, plan, chat):
        from dycoke_cli.engine import Session

        key = (video.identity, plan.encoding_key, chat.compression.label, chat.system)
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        encoded = next((s.video for k, s in self._sessions.items() if k[:2] == key[:2]), None)
        session = Session(self.lm, encoded or encoded_video(self.lm, plan), plan, system=chat.system)
        self._sessions[key] = session
        while len(self._sessions) > self.size:
            self._sessions.popitem(last=False)
        return session
