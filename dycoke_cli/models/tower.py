"""A vision tower run in two halves around a method's selection inside it (the encoder stage).

    encode_to(pixels, j)     layers 0..j-1 on every patch                    -> TowerState
    tower_cells(state)       the layer-j hidden states grouped by cell       -> (f, C, K, D), weights
    encode_from(state, keep) layers j.. on the kept cells' patches only, then the family's projector,
                             merger or shuffle -> VideoFeatures with only the kept cells' tokens

Each family adapter implements the three with its own tower (that is family knowledge); what they
share lives here: the state between the halves, and running layers over frames whose kept patch counts
differ. SigLIP-style towers take a batch of equal-length sequences, so frames are grouped by how many
patches they kept, padded within a group (a key mask hides the padding), and never mixed into one
sequence: attention stays within a frame, as in the unmodified tower, and costs what the kept patches
cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Frames whose kept counts are within this share of a group's longest are batched together (padded).
PAD_SLACK = 0.125


@dataclass
class TowerState:
    """One chunk of frames inside the tower, entering layer `layer`. `hidden` and `extra` are read only
    by the adapter that made them (their layout is the family's)."""

    hidden: torch.Tensor
    layer: int
    frames: int  # model frames (Qwen: temporal groups) in the chunk
    times: tuple[float, ...]
    extra: dict = field(default_factory=dict)


def length_groups(lengths: list[int]) -> list[list[int]]:
    """Indices of sequences grouped for padded batches: longest first, a new group whenever a sequence
    is shorter than (1 - PAD_SLACK) of its group's longest (so padding wastes at most that share)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] >= (1 - PAD_SLACK) * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def ragged_layers(layers, sequences: list[torch.Tensor], config) -> list[torch.Tensor]:
    """Run encoder layers (each called as layer(hidden, attention_mask)) over sequences of different
    lengths, each (P_i, D), attending within its own sequence only. Returns each sequence's output (an
    empty sequence, a frame that kept nothing, stays empty)."""
    from transformers.masking_utils import create_bidirectional_mask

    out: list[torch.Tensor] = list(sequences)
    lengths = [s.shape[0] for s in sequences]
    for group in length_groups(lengths):
        if lengths[group[0]] == 0:
            continue
        longest = sequences[group[0]].shape[0]
        batch = sequences[0].new_zeros(len(group), longest, sequences[0].shape[-1])  # (B, P, D)
        valid = torch.zeros(len(group), longest, dtype=torch.bool, device=batch.device)  # (B, P)
        for row, i in enumerate(group):
            batch[row, : sequences[i].shape[0]] = sequences[i]
            valid[row, : sequences[i].shape[0]] = True
        mask = None if bool(valid.all()) else create_bidirectional_mask(
            config=config, inputs_embeds=batch, attention_mask=valid)
        for layer in layers:
            batch = layer(batch, mask)
        for row, i in enumerate(group):
            out[i] = batch[row, : sequences[i].shape[0]]
    return out


def attention_received(layer, hidden: torch.Tensor) -> torch.Tensor:
    """(f, P) float32: the attention each patch receives in `layer` (a SigLIP-style encoder layer:
    layer_norm1, then self_attn with q_proj, k_proj, num_heads, head_dim, scale), averaged over heads and
    queries. Frame by frame, so the (H, P, P) map of one frame is the most ever held."""
    attention, received = layer.self_attn, []
    for frame in hidden:  # (P, D)
        x = layer.layer_norm1(frame[None])  # (1, P, D)
        heads = (1, frame.shape[0], attention.num_heads, attention.head_dim)
        q = attention.q_proj(x).view(heads).transpose(1, 2).float()  # (1, H, P, hd)
        k = attention.k_proj(x).view(heads).transpose(1, 2).float()
        probs = (q @ k.transpose(-1, -2) * attention.scale).softmax(-1)  # (1, H, P, P)
        received.append(probs.mean(dim=(1, 2))[0])  # (P,)
    return torch.stack(received)


def cell_patches(footprint: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(P,) ascending patch indices read by the kept cells. footprint: (C, K) patches of each cell;
    keep: (C,) bool."""
    return footprint[keep].flatten().unique()
