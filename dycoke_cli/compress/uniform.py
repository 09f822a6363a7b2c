"""`uniform`: encode fewer frames, prune nothing: the honest baseline for every pruning method.

Sampling fewer frames is the cheapest way to fewer visual tokens and saves the vision tower too; a
pruning method must beat it at the same token count to be worth anything.

Rule, before the vision tower, on the layout of the whole sampled video: its `frames` decoded
frames, `group` input frames per model frame (2 for Qwen's temporal groups, else 1) and
`tokens_per_frame` visual tokens per model frame:
  G = ceil(frames / group) model frames in the full video.
  g = max(1, int(G * (1 - rate))) model frames kept, or under a budget of B tokens (a share counts
      against G * tokens_per_frame) the most frames that fit: g = floor(B / tokens_per_frame).
  n = min(frames, g * group) input frames encoded, at the centres of n equal segments of the decoded
      frames: index floor((i + 0.5) * frames / n) for i in range(n) (the rule the sampler uses in
      time; integer arithmetic, so no float rounding decides an index).
Indices come out strictly increasing. With n = frames (rate 0, or a budget of the whole video)
every frame is kept and frame_subset returns None. select() keeps every token of the frames encoded.

Budget: granularity is one model frame, so a budget below tokens_per_frame is unreachable and
refused; otherwise at most B tokens are kept, B rounded down to whole frames. The reported `rate` is
the shortest one whose max(1, int(G * (1 - rate))) is g.
"""

from __future__ import annotations

from dycoke_cli.compress.base import Method, Param, VisualLayout, kept_rate
from dycoke_cli.errors import SettingsError


class Uniform(Method):
    name = "uniform"
    summary = "fewer frames: encode evenly spaced frames only and prune nothing (the honest baseline)"
    params = (
        Param("rate", float, 0.5, "fraction of frames dropped (frames kept are evenly spaced)",
              low=0.0, high=1.0, high_open=True),
    )
    budget_solves = "rate"

    def solved(self, layout: VisualLayout) -> float:
        groups = layout.frames
        return kept_rate(self._kept_groups(layout), groups, lambda r: max(1, int(groups * (1 - r))))

    def frame_subset(self, layout: VisualLayout) -> list[int] | None:
        frames = layout.input_frames
        count = min(frames, self._kept_groups(layout) * layout.group)
        if count >= frames:
            return None
        return segment_centres(frames, count)

    def expected_tokens(self, layout: VisualLayout) -> int:
        return layout.total  # of the frames it encodes, it keeps every token

    def _kept_groups(self, layout: VisualLayout) -> int:
        """g: model frames kept, of G = layout.frames."""
        groups, per_frame = layout.frames, layout.tokens_per_frame
        if self.budget is None:
            return max(1, int(groups * (1 - self.values["rate"])))
        total = groups * per_frame
        budget = self.budget_tokens(total)
        kept = budget // per_frame
        if kept < 1:
            raise SettingsError(f"uniform cannot keep fewer than {per_frame} of {total} visual tokens "
                                f"(one frame): --budget {self.budget} asks for {budget}")
        return kept


def segment_centres(frames: int, count: int) -> list[int]:
    """floor((i + 0.5) * frames / count) for i < count: the middle frame of each of `count` equal
    segments (strictly increasing, since count <= frames)."""
    return [(2 * i + 1) * frames // (2 * count) for i in range(count)]
