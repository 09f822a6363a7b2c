"""`evs`: Efficient Video Sampling, the rule vLLM applies to Qwen videos with `--video-pruning-rate q`.

A video token that barely differs from the token at the same spatial position one frame earlier
adds little: the model has already seen that content. EVS scores every token by that change and
keeps the most changed tokens of the whole video (a global top-R, not a per-frame quota), so a
static shot costs few tokens and a busy one many.

Rule, on tokens x (F, T, D) (F frames, for Qwen temporal groups; T raster positions):
  d[t, j] = 1 - cos(x[t, j], x[t-1, j])  for t >= 1, in float32 whatever the input dtype.
  R = the budget in tokens if one is given, else max(T, int(F*T * (1 - rate)))  (vLLM's count).
  Order all F*T scores with a stable descending sort (ties: the earlier flat index wins, i.e. the
  earlier frame, then raster order), keep the first R, and return them in ascending order.

Frame 0 has no predecessor. vLLM gives it a sentinel score (255) so it is always kept whole; on a
short clip that spends the whole budget on frame 0 (whenever R <= T, e.g. any clip of <= 4 frames
at rate 0.75) and every later event is lost. Our guard: frame 0 gets the sentinel only when
R >= 2T, room for frame 0 and as much again for the rest; otherwise it is scored by its change to
frame 1, d[0, j] = 1 - cos(x[0, j], x[1, j]), and competes like every other frame (it then ties
with frame 1 slot by slot, and the earlier index, frame 0, wins the tie). A single frame (F = 1)
is scored by how much each token differs from the frame's average token,
d[0, j] = 1 - cos(x[0, j], mean_j x[0, j]).

Cosine is dot(a, b) / sqrt(max(|a|^2 |b|^2, eps^2)) with eps = 1e-8: a token identical to its
predecessor scores exactly 0 (not bf16 noise), so identical frames fall back to the tie rule, and a
zero vector scores 1 (cosine 0), as in vLLM.

Budget: R is the budget itself (token granularity), so every budget from 1 token up is reachable;
the reported `rate` is the shortest one whose own count max(T, int(N * (1 - rate))) is R (where R < T
no rate can say it: then 1 - R / N). Without a budget and with rate 0, or with F = 1 (R = T = N),
everything is kept and select returns None.

Inside the vision tower (`stage=encoder`, vLLM's inner-ViT EVS): the same rule at tower layer
`encoder_layer`, each cell (the patches that become one token) scored by its patches' mean hidden
state against the same cell one frame earlier; the tower's later layers run on the kept cells only.

Scoring dtype (`score`): `float32` (default) scores in float32 whatever the features' dtype, with the
cosine above. `native` scores as vLLM does, in the features' own dtype with torch's cosine_similarity
and vLLM's 255 sentinel for frame 0 (its guard-free rule: frame 0 whole whenever R >= T): on a GPU in
bf16, dissimilarities move in steps of about 0.004 and ties fall differently, so the kept set can
differ from float32 scoring; use it to reproduce vLLM's exact choice.
"""

from __future__ import annotations

from dycoke_cli.compress.base import STAGE_PARAMS, EncoderCells, Method, Param, Selection, VisualLayout, kept_rate

EPS = 1e-8
SENTINEL = float("inf")  # above any cosine distance (which lies in [0, 2]): frame 0 comes first


class Evs(Method):
    name = "evs"
    summary = "EVS (vLLM --video-pruning-rate): keep the tokens that changed most since the previous frame"
    params = (
        Param("rate", float, 0.75, "fraction of visual tokens dropped, chosen over the whole video",
              low=0.0, high=1.0, high_open=True),
        Param("score", str, "float32", "dissimilarity in float32, or in the features' dtype as vLLM does",
              choices=("float32", "native")),
        *STAGE_PARAMS,
    )
    budget_solves = "rate"

    def solved(self, layout: VisualLayout) -> float:
        frames, per_frame = layout.frames, layout.tokens_per_frame
        return kept_rate(self._keep_count(frames, per_frame), layout.total, lambda r: vllm_count(frames, per_frame, r))

    def select(self, tokens, layout: VisualLayout) -> Selection | None:
        if self.values["stage"] == "encoder":
            return None  # chosen inside the tower
        keep = self._keep(tokens)
        return None if keep is None else Selection(keep=keep)

    def select_cells(self, cells: EncoderCells):
        """The rule on each cell's patches averaged at layer j (vLLM's inner-ViT EVS averages a merge
        unit's patches the same way)."""
        import torch

        vectors = cells.hidden.mean(2)  # (F, C, D) in the tower's dtype (`score` decides the scoring dtype)
        keep = self._keep(vectors)
        return torch.arange(cells.layout.total, device=vectors.device) if keep is None else keep

    def _keep(self, tokens):
        """(N,) the kept flat indices of (F, T, D) tokens, ascending, or None: every one."""
        frames, per_frame = tokens.shape[:2]
        keep_count = self._keep_count(frames, per_frame)
        if keep_count >= frames * per_frame:
            return None
        if self.values["score"] == "native":
            scores = native_dissimilarity(tokens)  # (F, T) in the tokens' dtype
        else:
            scores = dissimilarity(tokens, frame0_whole=keep_count >= 2 * per_frame)  # (F, T)
        order = scores.flatten().argsort(descending=True, stable=True)  # (F*T,)
        return order[:keep_count].sort().values

    def _keep_count(self, frames: int, per_frame: int) -> int:
        """R: the budget, or vLLM's max(T, int(N * (1 - rate)))."""
        if self.budget is None:
            return vllm_count(frames, per_frame, self.values["rate"])
        return self.budget_tokens(frames * per_frame)


def vllm_count(frames: int, per_frame: int, rate: float) -> int:
    """Tokens vLLM keeps at pruning rate `rate`: max(T, int(F*T * (1 - rate)))."""
    return max(per_frame, int(frames * per_frame * (1 - rate)))


def native_dissimilarity(tokens):
    """d (F, T) as vLLM computes it: 1 - cosine_similarity in the tokens' dtype, frame 0 at 255."""
    import torch

    later = 1 - torch.nn.functional.cosine_similarity(tokens[1:], tokens[:-1], dim=-1)  # (F-1, T)
    return torch.cat([255 * torch.ones_like(tokens[:1, :, 0]), later])  # (F, T)


def cosine(a, b):
    """Cosine along the last dim; exactly 1 for identical vectors, 0 against a zero vector."""
    import torch

    dot = (a * b).sum(-1)
    squares = (a * a).sum(-1) * (b * b).sum(-1)
    return dot / torch.sqrt(squares.clamp_min(EPS * EPS))


def dissimilarity(tokens, frame0_whole: bool):
    """d[t, j] (F, T) in float32: 1 - cosine to the same slot of the previous frame (frame 0: see
    the module docstring)."""
    import torch

    x = tokens.float()  # (F, T, D)
    if x.shape[0] == 1:
        return 1 - cosine(x[0], x[0].mean(0, keepdim=True)).unsqueeze(0)  # (1, T)
    later = 1 - cosine(x[1:], x[:-1])  # (F-1, T)
    if frame0_whole:
        first = torch.full_like(later[:1], SENTINEL)  # (1, T)
    else:
        first = later[:1]  # frame 0 against frame 1: the same numbers as frame 1 against frame 0
    return torch.cat([first, later])  # (F, T)
