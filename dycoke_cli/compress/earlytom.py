"""`earlytom`: EarlyTom (Wang et al., CVPR 2026, "Early Token Compression Completes Fast Video
Understanding") inside the vision tower: split the clip into segments of similar frames, keep a
segment's first and last frames by attention and its middle frames sparsely, and run the tower's
later layers on what is kept.

Why: after the tower there is nothing left to save in it, and on a CPU (and at many frames on a GPU)
the tower is most of the time to the first token. EarlyTom reads the tower's own early signals: which
frames repeat their neighbours, and which patches the tower itself attends to.

Rule, at tower layer j = `encoder_layer`, on F frames of C cells (a cell: the patches that become one
token), with r = 1 - rate the retained share:
  1. Segments. Each cell's vector v (its patches pooled as the tower pools them, or concatenated) is
     L2-normalised. Walking the frames, c_i = mean over cells of cos(v[ref, c], v[i, c]) against the
     segment's first frame `ref`; s = ema * c_i + (1 - ema) * s, s starting at 1 in each segment; frame
     i opens a new segment (and is its new reference) when s < tau or when i - start + 1 >= window.
  2. Roles. In a segment of 3 or more frames the first and last frames are dynamic and the middle ones
     static; in shorter segments every frame is dynamic.
  3. Scores. a[f, c] = the attention the cell's patches receive at layer j, averaged over heads and
     over all queries (SigLIP has no class token), pooled to the cell as the tower pools its patches
     (the mean of its patches where the tower concatenates them).
  4. A dynamic frame keeps its ceil(C * r) cells of highest score (ties: the lower cell); a static frame
     cuts its raster-ordered cells into max(1, round(C * r)) contiguous runs (sizes differing by at most
     one, the first C mod n one longer) and keeps the highest-scoring cell of each run (ties: the first),
     which spreads its few tokens over the frame. Kept cells come out frame by frame in raster order.
Under `--budget B` (B tokens of F*C, at least one per frame): r = B / (F*C), and floors replace the
ceiling and the rounding (at least one cell a frame), so at most B cells are kept; `rate` is reported
as 1 - B / (F*C).

Where this differs from the released code, and why: the released code MIXES similar middle frames
inside SigLIP (a weighted average of two frames' hidden states, several times, at layers such as 8,
21 and 23), so its later layers run on fewer frames; it then applies steps 2-4 after the projector,
scored by the attention maps mixed alike. A selection inside the tower here keeps or drops cells and
never averages hidden states (the rest of the tower, the layout and the positions stay those of real
frames), so the middle frames are kept sparse instead of mixed, once, at layer j, and the attention
is that of layer j on the frame's own patches. The released code's optional merge inside the language
model (at LLM layer 18) is FastV's kind of selection and is not part of this method.
"""

from __future__ import annotations

import math

from dycoke_cli.compress.base import ENCODER_LAYER, EncoderCells, Method, Param, VisualLayout
from dycoke_cli.errors import SettingsError


class EarlyTom(Method):
    name = "earlytom"
    summary = "EarlyTom: inside the vision tower, segments of similar frames; ends kept by attention, middles sparse"
    params = (
        Param("rate", float, 0.8, "fraction of visual tokens dropped (retained share r = 1 - rate)",
              low=0.0, high=1.0, high_open=True),
        Param("tau", float, 0.5, "a frame whose smoothed similarity to its segment's first frame falls below "
              "this opens a new segment", low=-1.0, high=1.0),
        Param("window", int, 6, "a segment holds fewer than this many frames", low=2),
        Param("ema", float, 0.9, "smoothing of the frame similarity", low=0.0, high=1.0),
        Param("encoder_layer", int, ENCODER_LAYER, "the tower layer j whose hidden states and attention it "
              "reads (layers from j on run on the kept cells)", low=0),
    )
    budget_solves = "rate"
    reads_attention = True

    def encoder_layer(self) -> int:
        return self.values["encoder_layer"]

    def solved(self, layout: VisualLayout) -> float:
        return round(1 - self._budget_target(layout) / layout.total, 4)

    def expected_tokens(self, layout: VisualLayout) -> int:
        return layout.frames * self._counts(layout)[0]  # a static frame keeps no more than a dynamic one

    def select_cells(self, cells: EncoderCells):
        import torch

        layout = cells.layout
        frames, per_frame = layout.frames, layout.tokens_per_frame
        dynamic, static = self._counts(layout)
        score = cells.attention_received()  # (F, C)
        kept = []
        for frame, role in enumerate(frame_roles(segments(cells.vectors(), self.values["tau"], self.values["window"],
                                                           self.values["ema"]))):
            row = score[frame]
            chosen = top_cells(row, dynamic) if role == "dynamic" else window_peaks(row, static)
            kept.append(chosen + frame * per_frame)
        return torch.cat(kept)

    def _counts(self, layout: VisualLayout) -> tuple[int, int]:
        """Cells a dynamic and a static frame keep."""
        per_frame = layout.tokens_per_frame
        if self.budget is None:
            r = 1 - self.values["rate"]
            return min(per_frame, math.ceil(per_frame * r)), max(1, min(per_frame, round(per_frame * r)))
        share = max(1, self._budget_target(layout) // layout.frames)
        return min(per_frame, share), min(per_frame, share)

    def _budget_target(self, layout: VisualLayout) -> int:
        target = self.budget_tokens(layout.total)
        if target < layout.frames:
            raise SettingsError(f"earlytom cannot keep fewer than {layout.frames} of {layout.total} visual tokens "
                                f"(one per frame): --budget {self.budget} asks for {target}")
        return target


def segments(vectors, tau: float, window: int, ema: float) -> list[tuple[int, int]]:
    """(first, last) frame of each segment of similar frames (step 1 of the module docstring).
    vectors: (F, C, D) float32."""
    import torch

    unit = torch.nn.functional.normalize(vectors, dim=-1)  # (F, C, D)
    found, start, smoothed = [], 0, 1.0
    for frame in range(1, unit.shape[0]):
        similarity = float((unit[start] * unit[frame]).sum(-1).mean())
        smoothed = ema * similarity + (1 - ema) * smoothed
        if smoothed < tau or frame - start + 1 >= window:
            found.append((start, frame - 1))
            start, smoothed = frame, 1.0
    return found + [(start, unit.shape[0] - 1)]


def frame_roles(spans: list[tuple[int, int]]) -> list[str]:
    """'dynamic' or 'static' for every frame, in order (step 2)."""
    roles = []
    for first, last in spans:
        length = last - first + 1
        roles += ["dynamic"] * length if length < 3 else ["dynamic"] + ["static"] * (length - 2) + ["dynamic"]
    return roles


def top_cells(score, count: int):
    """(count,) the cells of highest score, ties to the lower cell, in raster order."""
    return score.argsort(descending=True, stable=True)[:count].sort().values


def window_peaks(score, count: int):
    """(count,) the highest-scoring cell of each of `count` contiguous runs of the raster order."""
    import torch

    cells = score.shape[0]
    size, extra = divmod(cells, count)
    ends = torch.tensor([(i + 1) * size + min(i + 1, extra) for i in range(count)])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1]])
    return torch.stack([start + score[start:end].argmax() for start, end in zip(starts.tolist(), ends.tolist())])
