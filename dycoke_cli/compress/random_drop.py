"""`random`: keep a uniformly random subset of the visual tokens, the floor any method must beat.

A method that scores tokens is only worth its cost if it beats choosing them blindly at the same
count; this is that blind choice, reproducible by its seed.

Rule, on tokens (F, T, D) with N = F*T:
  R = the budget in tokens if one is given, else max(1, int(N * (1 - rate))).
  keep = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:R], sorted ascending.
The permutation is drawn on the CPU from its own generator (never the global RNG), so the same
seed keeps the same tokens on every device and in every run. Frames stay in temporal order, tokens
in raster order.

Budget: token granularity, so every budget from 1 token up is reachable; the reported `rate` is the
shortest one whose max(1, int(N * (1 - rate))) is R. R = N (rate 0, or a budget of every token)
keeps everything and select returns None.
"""

from __future__ import annotations

from dycoke_cli.compress.base import MAX_SEED, Method, Param, Selection, VisualLayout, kept_rate


class RandomDrop(Method):
    name = "random"
    summary = "random drop: keep a seeded, uniformly random subset of the visual tokens (the floor to beat)"
    params = (
        Param("rate", float, 0.5, "fraction of visual tokens dropped", low=0.0, high=1.0, high_open=True),
        Param("seed", int, 0, "seed of the random choice (the same seed keeps the same tokens)", low=0,
              high=MAX_SEED),
    )
    budget_solves = "rate"

    def solved(self, layout: VisualLayout) -> float:
        total = layout.total
        return kept_rate(self._keep_count(total), total, lambda r: max(1, int(total * (1 - r))))

    def select(self, tokens, layout: VisualLayout) -> Selection | None:
        import torch

        total = tokens.shape[0] * tokens.shape[1]
        keep_count = self._keep_count(total)
        if keep_count >= total:
            return None
        generator = torch.Generator().manual_seed(self.values["seed"])
        chosen = torch.randperm(total, generator=generator)[:keep_count]  # (R,) on the CPU
        return Selection(keep=chosen.sort().values.to(tokens.device))

    def _keep_count(self, total: int) -> int:
        if self.budget is None:
            return max(1, int(total * (1 - self.values["rate"])))
        return self.budget_tokens(total)
