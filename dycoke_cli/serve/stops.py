"""OpenAI's `stop` strings: the answer ends before the first one, which is not part of it.

Text streams out as it is generated, so a delta that may be the beginning of a stop string is held
back until the next one shows whether it was; once a stop string is complete, nothing more goes out
and generation is told to stop.
"""

from __future__ import annotations


class StopText:
    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.hit = False  # a stop string was reached
        self._pending = ""

    def feed(self, delta: str) -> str:
        """The part of the text so far that can be sent now."""
        if self.hit:
            return ""
        text = self._pending + delta
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit, self._pending = True, ""
            return text[: min(found)]
        held = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        self._pending = text[len(text) - held:]
        return text[: len(text) - held]

    def flush(self) -> str:
        """What was held back, once the answer is over without completing a stop string."""
        rest, self._pending = self._pending, ""
        return "" if self.hit else rest


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """A whole answer cut before its first stop string, and whether one was found."""
    stop = StopText(stops)
    kept = stop.feed(text) + stop.flush()
    return kept, stop.hit
