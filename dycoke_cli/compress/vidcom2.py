"""`vidcom2`: VidCom2 (Video Compression Commander, EMNLP 2025) as its reference code and vLLM's port
(`--video-pruning-method vidcom2`) run it.

Two ideas: a frame that looks unlike the rest of the video deserves more tokens than a frame like
all others, and within a frame the tokens worth keeping are the ones least like both the frame's
and the video's average (the rest are background the average already describes).

Rule, on tokens x (F, T, D), all in float32:
  base = 1 - rate, the released code's retention (`base_scale`); under a budget of R tokens,
  base = R / (F*T).
  1. Keep the int(0.5 * D) (at least 1) channels of lowest population variance over all F*T tokens
     (ties: the lower channel), and L2-normalise every token on those channels.
  2. Video centre c_v = mean of all tokens; frame centre c_f[t] = mean of frame t's tokens.
  3. G(x, c) = sum over a in {1/8, 1/4, 1/2, 1, 2} of exp(-|x - c|^2 / (2a));
     v = G(x, c_v) and f = G(x, c_f[t]) per token.
  4. Frame score s_t = -mean_j v[t, j] (unlike the video: high); p = softmax((s - max s) / 0.01);
     scale_t = min(1, base * (1 + p_t - mean p)); k_t = clamp(round(scale_t * T), 1, T), torch.round
     (half to even).
  5. In frame t keep the k_t tokens with the smallest v + f (stable: ties keep the earlier slot).
  Under `rate` that is all, as in the released code: the total is whatever the k_t add up to (32
  frames x 196 tokens at rate 0.9 keep 640, not int(6272 * 0.1) = 627).
  6. Under `--budget` only, so that exactly R tokens are kept (vLLM's reconcile step): if sum k_t > R,
     drop the kept tokens with the highest v + f over the whole video, never a frame's last token (its
     lowest-scoring one); if sum k_t < R, add the unkept tokens with the lowest v + f. Both use a
     stable sort over flat indices (ties: the earlier token is dropped, or added, first).
  Kept tokens come out in ascending flat order (frames in time, raster order within a frame).

With tau = 0.01 the softmax is nearly one-hot: the most distinctive frame gets about twice the base
share, the others slightly less. A single frame has p = [1], scale = base and c_f = c_v. Identical
frames have uniform p, so every frame asks for round(base * T).

Budget: every R from F (one token per frame, the least the rule keeps) to F*T is reachable; a
smaller budget is refused. The reported `rate` is 1 - R / (F*T). R = F*T keeps everything (None).
"""

from __future__ import annotations

import math

from dycoke_cli.compress.base import Method, Param, Selection, VisualLayout
from dycoke_cli.errors import SettingsError

GAUSSIAN_SCALES = (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0)
TEMPERATURE = 0.01
CHANNEL_SHARE = 0.5


class VidCom2(Method):
    name = "vidcom2"
    summary = "VidCom2: more tokens for distinctive frames, keep each frame's least typical tokens"
    params = (
        Param("rate", float, 0.75, "fraction of visual tokens dropped (retention base = 1 - rate)",
              low=0.0, high=1.0, high_open=True),
    )
    budget_solves = "rate"

    def solved(self, layout: VisualLayout) -> float:
        return round(1 - self._budget_target(layout.frames, layout.total) / layout.total, 4)

    def select(self, tokens, layout: VisualLayout) -> Selection | None:
        import torch

        frames, per_frame = tokens.shape[:2]
        total = frames * per_frame
        target = None if self.budget is None else self._budget_target(frames, total)
        if self.values["rate"] == 0 and target is None or target == total:
            return None
        base = 1 - self.values["rate"] if target is None else target / total
        video_sim, frame_sim = gaussian_similarities(tokens)  # (F, T), (F, T)
        counts = frame_counts(video_sim, base)  # (F,)
        score = (video_sim + frame_sim).flatten()  # (F*T,) low: worth keeping
        kept = keep_lowest_per_frame(score.view(frames, per_frame), counts)  # (F*T,) bool
        if target is not None:
            kept = reconcile(kept, score, per_frame, target)
        return Selection(keep=torch.nonzero(kept).flatten())

    def _budget_target(self, frames: int, total: int) -> int:
        """R under a budget: at least one token per frame."""
        target = self.budget_tokens(total)
        if target < frames:
            raise SettingsError(f"vidcom2 cannot keep fewer than {frames} of {total} visual tokens (one per "
                                f"frame): --budget {self.budget} asks for {target}")
        return target

    def expected_tokens(self, layout: VisualLayout) -> int:
        """An upper bound under `rate`: the scales sum to base * F (the softmax shares sum to one), and
        rounding (or the floor of one token) adds at most one token a frame."""
        if self.budget is not None:
            return super().expected_tokens(layout)
        base = 1 - self.values["rate"]
        return min(layout.total, math.ceil(base * layout.total) + layout.frames)


def gaussian_similarities(tokens):
    """(v, f), each (F, T): multi-scale Gaussian similarity of every token to the video centre and to
    its frame's centre, on the L2-normalised low-variance channels."""
    import torch

    frames, per_frame, dim = tokens.shape
    x = tokens.float().flatten(0, 1)  # (F*T, D)
    width = max(1, int(CHANNEL_SHARE * dim))
    channels = x.var(0, unbiased=False).argsort(stable=True)[:width].sort().values  # (D',)
    x = torch.nn.functional.normalize(x[:, channels], dim=-1).view(frames, per_frame, width)  # (F, T, D')
    video_centre = x.mean((0, 1))  # (D',)
    frame_centres = x.mean(1, keepdim=True)  # (F, 1, D')

    def gaussian(c):
        sq = ((x - c) ** 2).sum(-1)  # (F, T)
        return sum(torch.exp(-sq / (2 * a)) for a in GAUSSIAN_SCALES)

    return gaussian(video_centre), gaussian(frame_centres)


def frame_counts(video_sim, base: float):
    """k_t (F,) int64: the tokens frame t asks for, more for frames unlike the video's average."""
    import torch

    per_frame = video_sim.shape[1]
    score = -video_sim.mean(1)  # (F,)
    p = torch.softmax((score - score.max()) / TEMPERATURE, dim=0)  # (F,)
    scale = (base * (1 + p - p.mean())).clamp(max=1.0)  # (F,)
    return torch.round(scale * per_frame).clamp(1, per_frame).long()


def keep_lowest_per_frame(score, counts):
    """(F*T,) bool: in frame t, the counts[t] tokens of lowest score (stable: earlier slot first)."""
    rank = score.argsort(dim=1, stable=True).argsort(dim=1)  # (F, T) each slot's place in its frame
    return (rank < counts[:, None]).flatten()


def reconcile(kept, score, per_frame: int, target: int):
    """(F*T,) bool with exactly `target` True: drop the highest-scoring kept tokens (sparing each
    frame's best one) or add the lowest-scoring unkept ones, over the whole video."""
    import torch

    excess = int(kept.sum()) - target
    if excess == 0:
        return kept
    if excess > 0:
        candidates = torch.nonzero(kept & ~frame_best(kept, score, per_frame)).flatten()  # (C,) ascending
        chosen = score[candidates].argsort(descending=True, stable=True)[:excess]
    else:
        candidates = torch.nonzero(~kept).flatten()  # (C,) ascending
        chosen = score[candidates].argsort(stable=True)[:-excess]
    kept = kept.clone()
    kept[candidates[chosen]] = excess < 0
    return kept


def frame_best(kept, score, per_frame: int):
    """(F*T,) bool: each frame's lowest-scoring kept token, the one a frame keeps to the last."""
    import torch

    masked = score.view(-1, per_frame).masked_fill(~kept.view(-1, per_frame), float("inf"))  # (F, T)
    best = torch.zeros_like(masked, dtype=torch.bool)
    best.scatter_(1, masked.argmin(1, keepdim=True), True)  # argmin: the earlier slot on ties
    return best.flatten()
