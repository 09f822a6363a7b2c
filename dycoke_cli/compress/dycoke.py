"""`dycoke`: DyCoke (Tao et al., CVPR 2025), the two training-free stages this tool is named after.

Before prefill, temporal token merging (ttm.py) takes frames in windows of four and, slot by slot,
drops the tokens of a frame that repeat a reference frame: a pruned frame keeps the int((1 - K) * T)
slots least similar to its reference, the window's first frame is kept whole. While the answer is
decoded, dynamic KV pruning (dp.py) lets layers >= L attend to the top (1 - P) visual cache entries
chosen by the newest token's attention at layer L-1. The exact rules are in those two modules and in
shared/DYCOKE.md.

Inside the vision tower (`stage=encoder`): TTM's rule (windows of 4, slot-by-slot similarity to the
window's reference frame, the int((1 - K) * T) least similar slots of a pruned frame kept) on the
tower's hidden states at layer `encoder_layer`, each cell (the patches that become one token) as one
vector, pooled as the tower pools it or concatenated as its merger does; the tower's later layers then
run on the kept cells only, so the tower's time falls too. Nothing is selected again before prefill;
DP acts at decode as always.

Budget: `--budget B` solves TTM's per-frame keep count n so that anchors + pruned frames hold at most
B tokens (the largest such n); anchor frames are never pruned, so a budget below them is
unreachable and refused. The reported k is the shortest k in [0, 1) with int((1 - k) * T) = n, so
`dycoke:k=<reported>` reproduces the selection without the budget (n = 0: the pruned frames keep
nothing). DP is unaffected by the budget (it works at decode, on the kept tokens).
Positions: kept tokens take the positions the model family gives kept tokens (contiguous for 1-D
RoPE families, their original M-RoPE ids for Qwen).
"""

from __future__ import annotations

from dycoke_cli.compress.base import STAGE_PARAMS, EncoderCells, Method, Param, Selection, VisualLayout, kept_rate
from dycoke_cli.errors import SettingsError


class DyCoke(Method):
    name = "dycoke"
    summary = "DyCoke: temporal token merging before prefill, dynamic KV pruning while decoding"
    params = (
        Param("k", float, 0.7, "TTM pruning rate of a pruned frame (0 turns TTM off)", low=0.0, high=1.0,
              high_open=True),
        Param("variant", str, "clean", "clean (every window pruned, raster order) or reference (released code)",
              choices=("clean", "reference")),
        Param("p", float, 0.7, "DP pruning rate of visual KV entries per decode step (0 turns DP off)",
              low=0.0, high=1.0, high_open=True),
        Param("layer", int, 3, "DP layer L: layer L-1 scores, layers L and up attend to the kept entries",
              low=1),
        Param("gate", str, "reuse", "when attention barely moves: reuse the last selection or run full",
              choices=("reuse", "released")),
        *STAGE_PARAMS,
    )
    budget_solves = "k"

    def check_model(self, layers: int, min_prune_layer: int = 0) -> None:
        if self.values["p"] > 0 and self.values["layer"] >= layers:
            raise SettingsError(f"dycoke: layer={self.values['layer']} leaves no layer to prune in this "
                                f"{layers}-layer model; use 1 to {layers - 1}")

    def solved(self, layout: VisualLayout) -> float:
        from dycoke_cli.compress import ttm

        per_frame = layout.tokens_per_frame
        return kept_rate(self._n_keep(layout), per_frame, lambda rate: ttm.slots_kept(per_frame, rate))

    def select_cells(self, cells: EncoderCells):
        """TTM's rule on the cells at layer j: each cell's vector (its patches pooled, or concatenated,
        as the tower makes its token) compared slot by slot with the window's reference frame."""
        import torch

        keep = self._ttm(cells.vectors(), cells.layout)
        return torch.arange(cells.layout.total, device=cells.hidden.device) if keep is None else keep

    def select(self, tokens, layout: VisualLayout) -> Selection | None:
        if self.values["stage"] == "encoder":
            return None  # TTM already chose inside the tower
        keep = self._ttm(tokens, layout)
        return None if keep is None else Selection(keep=keep)

    def _ttm(self, tokens, layout: VisualLayout):
        """(N,) kept flat indices of (F, T, D) tokens by TTM, or None where TTM keeps everything."""
        from dycoke_cli.compress import ttm

        k, variant = self.values["k"], self.values["variant"]
        n_keep = self._n_keep(layout) if self.budget is not None else None
        if k == 0 and n_keep is None:
            return None
        return ttm.ttm_keep_indices(tokens, k, variant, n_keep=n_keep)  # (N,)

    def _n_keep(self, layout: VisualLayout) -> int:
        """The most slots a pruned frame may keep so that the whole video fits the budget."""
        from dycoke_cli.compress import ttm

        total, per_frame = layout.total, layout.tokens_per_frame
        budget = self.budget_tokens(total)
        whole, pruned = ttm.frame_roles(layout.frames, self.values["variant"])
        floor = whole * per_frame
        if budget < floor or (pruned == 0 and budget < total):
            raise SettingsError(f"dycoke cannot keep fewer than {floor} of {total} visual tokens (its anchor "
                                f"frames stay whole): --budget {self.budget} asks for {budget}")
        return per_frame if pruned == 0 else min(per_frame, (budget - floor) // pruned)

    def expected_tokens(self, layout: VisualLayout) -> int:
        from dycoke_cli.compress import ttm

        if self.budget is not None or self.values["k"] == 0:
            return super().expected_tokens(layout)
        if self.values["variant"] == "reference" and layout.frames <= ttm.WINDOW:
            return layout.total
        return ttm.ttm_kept_count(layout.frames, layout.tokens_per_frame, self.values["k"], self.values["variant"])

    def attention(self, context):
        if self.values["p"] == 0:
            return None
        from dycoke_cli.compress.dp import DecodePruner, DPConfig

        config = DPConfig(p=self.values["p"], layer=self.values["layer"], gate=self.values["gate"])
        return DecodePruner(config, context)
