"""A method's selection applied to an encoded video: the rows every question's prefill receives.

Apart from the engine because it is pure tensor work on features (no model, no cache): keep indices
checked for frame order, every feature level gathered, or averaged per cluster for merging methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dycoke_cli.compress.base import Method, Selection
from dycoke_cli.models.base import VideoFeatures


@dataclass
class KeptVideo:
    """A video after the method's selection: what every question's prefill receives."""

    keep: torch.Tensor  # (N,) flat indices into F*T: the position each kept row sits at
    tokens: torch.Tensor  # (N, D)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N, D')
    counters: dict = field(default_factory=dict)


def apply_selection(features: VideoFeatures, method: Method) -> KeptVideo:
    """Run the method's selection and gather (or average, for merged clusters) every feature level.
    Cells a selection inside the tower dropped never come back: a later selection keeps within them."""
    flat = features.tokens.flatten(0, 1)  # (F*T, D)
    present = features.present
    selection = method.select(features.tokens, features.layout())
    if selection is None and present is None:
        keep = torch.arange(flat.shape[0], device=flat.device)
        return KeptVideo(keep=keep, tokens=flat, extras={k: v.flatten(0, 1) for k, v in features.extras.items()})
    if selection is None:
        selection = Selection(keep=present.nonzero().flatten())
    elif present is not None:
        if selection.merge is not None:
            raise ValueError("a selection that merges tokens cannot follow a selection inside the tower")
        selection.keep = selection.keep[present.to(selection.keep.device)[selection.keep]]
    keep = selection.keep.to(flat.device).long()
    _check_frame_order(keep, features.tokens.shape[1])

    def gather(x: torch.Tensor) -> torch.Tensor:  # (F*T, D') -> (N, D')
        if selection.merge is None:
            return x[keep]
        return _cluster_means(x, selection.merge.to(x.device), keep.numel())

    return KeptVideo(keep=keep, tokens=gather(flat), counters=dict(selection.counters),
                     extras={name: gather(x.flatten(0, 1)) for name, x in features.extras.items()})


def _check_frame_order(keep: torch.Tensor, per_frame: int) -> None:
    """A frame's kept tokens must stay within its own run of the prompt (text may separate frames)."""
    frames = torch.div(keep, per_frame, rounding_mode="floor")
    if keep.numel() > 1 and bool((frames[1:] < frames[:-1]).any()):
        raise ValueError("a selection must list frames in temporal order")


def _cluster_means(x: torch.Tensor, merge: torch.Tensor, clusters: int) -> torch.Tensor:
    """(F*T, D') rows averaged per cluster id (-1 = dropped) -> (clusters, D'), in x's dtype."""
    member = merge >= 0
    sums = torch.zeros(clusters, x.shape[1], dtype=torch.float32, device=x.device)
    sums.index_add_(0, merge[member], x[member].float())
    counts = torch.bincount(merge[member], minlength=clusters).clamp(min=1).unsqueeze(1)
    return (sums / counts).to(x.dtype)
