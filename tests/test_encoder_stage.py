"""Selections inside the vision tower, against the unmodified tower and against references written here.

- Keeping every cell at any layer j gives the tower's own tokens (every feature level) and the
  answer of plain compression-free generation, on every family.
- For a given keep set, the tokens equal a straightforward reference: the tower's own hidden states
  at layer j (its `output_hidden_states`), each later layer run separately on each frame's (or each
  window's) kept patches with their own positions, then the family's own merger, pooling or shuffle,
  with cell footprints, windows and positions worked out here from the grid, not from the adapters.
- Each method's kept cells equal an independent implementation of its rule.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dycoke_cli.compress.base import Budget, EncoderCells, VisualLayout
from dycoke_cli.compress.dycoke import DyCoke
from dycoke_cli.compress.earlytom import EarlyTom
from dycoke_cli.compress.evs import Evs
from dycoke_cli.engine import Session, encode_frames
from dycoke_cli.models.base import Clip
from dycoke_cli.settings import Generation
from dycoke_cli.video import Sampling, read_frames

FAMILIES = ["tiny", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-smolvlm2"]
FOUR = Generation(max_new_tokens=4, min_new_tokens=4)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from conftest import write_clip

    clip = write_clip(tmp_path_factory.mktemp("enc") / "wide.mp4", frames=16, size=(192, 128), rate=8)
    return clip, read_frames(clip, Sampling(frames=6))


_LOADED: dict = {}


def model(name: str):
    from dycoke_cli.models import load_model

    if name not in _LOADED:
        _LOADED[name] = load_model(f"random:{name}", device="cpu", dtype="float32", quant="none")
    return _LOADED[name]


def pixels_of(lm, decoded):
    return lm.adapter.preprocess(decoded, Clip(tuple(decoded.timestamps), decoded.duration))


# ------------------------------------------------------------------ keeping everything is the tower


@pytest.mark.parametrize("name", FAMILIES)
def test_keeping_every_cell_at_any_layer_is_the_unmodified_tower(frames, name):
    clip, decoded = frames
    lm = model(name)
    whole = encode_frames(lm, clip, decoded)
    none = Session(lm, whole, "none").ask("What happens?", FOUR, keep_logits=True)
    for layer in range(lm.adapter.tower_depth() + 1):
        spec = f"dycoke:stage=encoder,encoder_layer={layer},k=0,p=0"
        session = Session(lm, encode_frames(lm, clip, decoded, 0.0, spec), spec)
        ours = session.video.features
        assert ours.present is not None and bool(ours.present.all())
        assert (ours.tokens - whole.features.tokens).abs().max() <= 1e-5
        assert ours.extras.keys() == whole.features.extras.keys()
        assert all((ours.extras[k] - whole.features.extras[k]).abs().max() <= 1e-5 for k in ours.extras)
        answer = session.ask("What happens?", FOUR, keep_logits=True)
        assert answer.token_ids == none.token_ids
        assert (torch.stack(answer.logits) - torch.stack(none.logits)).abs().max() <= 1e-4


# ------------------------------------------------------------------ a keep set against a reference


def random_keep(frames: int, cells: int, seed: int) -> torch.Tensor:
    """(frames, cells) bool: about half of each frame's cells, one frame keeping nothing, one everything."""
    keep = torch.rand(frames, cells, generator=torch.Generator().manual_seed(seed)) < 0.5
    keep[0] = True
    keep[-1] = False
    return keep


def close(ours: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to float32 rounding (the reference sums in another order): 1e-5, relative to the values'
    size (the tiny models' wide weights make tokens of magnitude ~50)."""
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def adapter_tokens(lm, decoded, layer: int, keep: torch.Tensor):
    state = lm.adapter.encode_to(pixels_of(lm, decoded), layer)
    return lm.adapter.encode_from(state, keep)


def bilinear_footprints(side: int) -> torch.Tensor:
    """(C, P) weight of every patch in every pooled cell: F.interpolate applied to each patch alone."""
    unit = torch.eye(side * side).view(side * side, 1, side, side)
    half = math.ceil(side / 2)
    return F.interpolate(unit, size=(half, half), mode="bilinear").view(side * side, -1).T


@torch.no_grad()
def test_llava_onevision_kept_cells_against_a_reference(frames):
    clip, decoded = frames
    lm = model("tiny")
    tower, inner = lm.model.model.vision_tower, lm.model.model
    layer = 1
    values = pixels_of(lm, decoded).values[0]  # (f, 3, S, S)
    hidden = tower(values, output_hidden_states=True).hidden_states[layer]  # (f, P, D)
    weights = bilinear_footprints(int(math.isqrt(hidden.shape[1])))  # (C, P)
    keep = random_keep(hidden.shape[0], weights.shape[0], seed=1)
    ours = adapter_tokens(lm, decoded, layer, keep)
    expected = torch.zeros_like(ours.tokens)
    for f in range(hidden.shape[0]):
        patches = sorted({p for c in keep[f].nonzero().flatten().tolist() for p in weights[c].nonzero().flatten().tolist()})
        if not patches:
            continue
        x = hidden[f, patches][None]  # (1, P', D): this frame's kept patches alone
        for block in tower.encoder.layers[layer:]:
            x = block(x, None)
        projected = inner.multi_modal_projector(x[0])  # (P', D')
        for c in keep[f].nonzero().flatten().tolist():  # a cell is its patches' weighted sum
            expected[f, c] = sum(weights[c, p] * projected[patches.index(p)] for p in weights[c].nonzero().flatten().tolist())
    close(ours.tokens, expected)
    assert torch.equal(ours.present, keep.flatten())


@torch.no_grad()
def test_smolvlm2_kept_cells_against_a_reference(frames):
    clip, decoded = frames
    lm = model("tiny-smolvlm2")
    tower, connector = lm.model.model.vision_model, lm.model.model.connector
    layer, scale = 1, lm.model.config.scale_factor
    values = pixels_of(lm, decoded).values[0]
    hidden = tower(values, output_hidden_states=True).hidden_states[layer]  # (f, P, D)
    side = math.isqrt(hidden.shape[1])
    per = side // scale
    keep = random_keep(hidden.shape[0], per * per, seed=2)
    ours = adapter_tokens(lm, decoded, layer, keep)
    expected = torch.zeros_like(ours.tokens)
    for f in range(hidden.shape[0]):
        cells = keep[f].nonzero().flatten().tolist()
        # cell (i, j) covers the scale x scale block of patches at rows i*s.., columns j*s..
        block = {c: [(c // per * scale + a) * side + c % per * scale + b for a in range(scale) for b in range(scale)]
                 for c in cells}
        patches = sorted({p for c in cells for p in block[c]})
        if not patches:
            continue
        x = hidden[f, patches][None]
        for layer_module in tower.encoder.layers[layer:]:
            x = layer_module(x, None)
        x = tower.post_layernorm(x)[0]
        grid = x.new_zeros(hidden.shape[1], x.shape[-1])
        grid[patches] = x
        shuffled = connector.pixel_shuffle(grid[None], scale)[0]  # the model's own concatenation order
        expected[f, cells] = connector.modality_projection(shuffled[cells])
    close(ours.tokens, expected)


def qwen_reference(lm, decoded, layer: int, keep: torch.Tensor):
    """The rest of a Qwen tower on the kept merge groups: per frame (full-attention blocks) or per window of
    the unpruned grid (window blocks), each group's 4 patches together, rotary positions of the raster grid."""
    visual, adapter = lm.model.model.visual, lm.adapter
    pixels = pixels_of(lm, decoded)
    grid = pixels.extra["video_grid_thw"]
    out = visual(pixels.values, grid_thw=grid, output_hidden_states=True)
    frames, rows, cols = grid[0].tolist()
    merge, unit = adapter.merge, adapter.merge ** 2
    per_row = cols // merge
    groups = frames * (rows // merge) * per_row
    # tower order of the groups: window by window for Qwen2.5-VL (its hidden states come in that order)
    windows = getattr(visual, "window_size", None)
    side = windows // visual.patch_size // merge if windows else None  # merge groups per window side

    def window_of(g: int) -> tuple:
        f, r, c = g // (groups // frames), (g % (groups // frames)) // per_row, g % per_row
        return (f,) if side is None else (f, r // side, c // side)

    raster = sorted(range(groups), key=lambda g: (window_of(g), g))  # tower position -> raster group
    hidden = out.hidden_states[layer].view(groups, unit, -1)  # tower order
    # rotary positions of each patch: (row, column) of the patch in the raster grid
    ids = []
    for g in raster:
        f, r, c = g // (groups // frames), (g % (groups // frames)) // per_row, g % per_row
        ids += [(r * merge + a, c * merge + b) for a in range(merge) for b in range(merge)]
    rotary = visual.rotary_pos_emb(out.hidden_states[0], torch.tensor(ids))
    kept = [i for i, g in enumerate(raster) if keep.flatten()[g]]
    x = hidden[kept].flatten(0, 1)
    cos, sin = (r.view(groups, unit, -1)[kept].flatten(0, 1) for r in rotary)
    full = adapter.full_attention_layers()
    taps = {}
    levels = adapter.deepstack_layers()
    for d in levels:
        if d < layer:  # tapped on every patch, then cut
            all_rows = visual.deepstack_merger_list[levels.index(d)](out.hidden_states[d + 1])
            taps[d] = all_rows[kept]
    for n in range(layer, adapter.tower_depth()):
        key = (lambda g: window_of(g)[:1]) if n in full else window_of
        segments: dict = {}
        for i, g in enumerate(kept):
            segments.setdefault(key(raster[g]), []).append(i)
        new = torch.empty_like(x)
        for members in segments.values():
            rows_ = torch.tensor([i * unit + u for i in members for u in range(unit)])
            new[rows_] = visual.blocks[n](x[rows_], cu_seqlens=torch.tensor([0, len(rows_)], dtype=torch.int32),
                                          position_embeddings=(cos[rows_], sin[rows_]))
        x = new
        if n in levels:
            taps[n] = visual.deepstack_merger_list[levels.index(n)](x)
    tokens = torch.zeros(groups, visual.merger(x[:unit]).shape[-1])
    tokens[[raster[i] for i in kept]] = visual.merger(x)
    extras = {}
    for i, d in enumerate(levels):
        level = torch.zeros(groups, taps[d].shape[-1])
        level[[raster[k] for k in kept]] = taps[d]
        extras[f"deepstack.{i}"] = level
    return tokens, extras


@pytest.mark.parametrize("name, layer", [("tiny-qwen2.5-vl", 1), ("tiny-qwen3-vl", 1), ("tiny-qwen3-vl", 2)])
@torch.no_grad()
def test_qwen_kept_groups_against_a_reference(frames, name, layer):
    """Qwen2.5-VL: windows of the unpruned grid; Qwen3-VL: deepstack taps below and above the selection."""
    clip, decoded = frames
    lm = model(name)
    grid = pixels_of(lm, decoded).extra["video_grid_thw"][0].tolist()
    cells = (grid[1] // lm.adapter.merge) * (grid[2] // lm.adapter.merge)
    keep = random_keep(grid[0], cells, seed=3)
    ours = adapter_tokens(lm, decoded, layer, keep)
    tokens, extras = qwen_reference(lm, decoded, layer, keep)
    close(ours.tokens.flatten(0, 1), tokens)
    assert ours.extras.keys() == extras.keys()
    for key in extras:
        close(ours.extras[key].flatten(0, 1), extras[key])


def test_qwen2_5_vl_has_several_windows_in_a_frame(frames):
    """The premise of the window check above: the test clip's frames span more than one window."""
    lm = model("tiny-qwen2.5-vl")
    rows, cols = pixels_of(lm, frames[1]).extra["video_grid_thw"][0].tolist()[1:]
    side = lm.model.model.visual.window_size // lm.adapter.patch
    assert rows > side or cols > side


# ------------------------------------------------------------------ the methods' rules


def cells_of(frames_: int = 8, per_frame: int = 16, patches: int = 4, dim: int = 8, seed: int = 0,
             weights: bool = True, runs: tuple[int, ...] = ()) -> EncoderCells:
    """Random cells; `runs` makes scenes: consecutive frames that repeat one frame with a little noise."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(frames_, per_frame, patches, dim, generator=g)
    hidden[3] = hidden[2] + 0.05 * torch.randn(per_frame, patches, dim, generator=g)  # a near repeat
    start = 0
    for length in runs:
        for f in range(start + 1, start + length):
            hidden[f] = hidden[start] + 0.2 * torch.randn(per_frame, patches, dim, generator=g)
        start += length
    w = torch.rand(per_frame, patches, generator=g) if weights else None
    attention = torch.rand(frames_, per_frame, patches, generator=g)
    return EncoderCells(hidden=hidden, weights=w, layout=VisualLayout(frames=frames_, grid=(4, per_frame // 4)),
                        attention=attention)


def pooled(cells: EncoderCells) -> np.ndarray:
    x = cells.hidden.double().numpy()
    if cells.weights is None:
        return x.reshape(*x.shape[:2], -1)
    return (x * cells.weights.double().numpy()[None, :, :, None]).sum(2)


@pytest.mark.parametrize("weights", [True, False])
def test_dycoke_inside_the_tower_is_ttm_on_the_cells(weights):
    """TTM on the cell vectors (pooled as the tower pools, or concatenated): windows of 4, the anchor whole,
    frames 1-2 against the anchor, frame 3 against frame 2, the int((1-k)T) least similar slots kept."""
    cells = cells_of(weights=weights)
    x = pooled(cells)
    frames_, per_frame = x.shape[:2]
    n = int((1 - 0.7) * per_frame)
    expected = []
    for f in range(frames_):
        a, r = f - f % 4, f % 4
        if r == 0:
            expected += [f * per_frame + j for j in range(per_frame)]
            continue
        ref = a if r in (1, 2) else a + 2
        sims = [float(x[f, j] @ x[ref, j] / np.linalg.norm(x[f, j]) / np.linalg.norm(x[ref, j]))
                for j in range(per_frame)]
        expected += sorted(f * per_frame + j for j in sorted(range(per_frame), key=lambda j: (sims[j], j))[:n])
    method = DyCoke({"stage": "encoder", "encoder_layer": 1})
    assert method.select_cells(cells).tolist() == expected
    assert method.select(torch.zeros(frames_, per_frame, 4), cells.layout) is None  # nothing more after the tower


def test_evs_inside_the_tower_scores_the_mean_of_each_cells_patches():
    cells = cells_of(weights=True)
    x = cells.hidden.double().numpy().mean(2)  # (F, C, D)
    frames_, per_frame = x.shape[:2]
    count = max(per_frame, int(frames_ * per_frame * 0.25))  # vLLM's count at rate 0.75
    score = {}
    for t in range(frames_):
        for j in range(per_frame):
            if t == 0:
                score[j] = math.inf  # frame 0 whole: R >= 2T here
            else:
                a, b = x[t, j], x[t - 1, j]
                score[t * per_frame + j] = 1 - float(a @ b / math.sqrt(max(float((a @ a) * (b @ b)), 1e-16)))
    expected = sorted(sorted(score, key=lambda i: (-score[i], i))[:count])
    assert count >= 2 * per_frame
    assert Evs({"stage": "encoder", "encoder_layer": 1}).select_cells(cells).tolist() == expected


def earlytom_reference(cells: EncoderCells, rate: float, tau: float, window: int, ema: float,
                       budget: int | None = None) -> list[int]:
    x = pooled(cells)
    frames_, per_frame = x.shape[:2]
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    spans, start, s = [], 0, 1.0
    for i in range(1, frames_):
        c = float((unit[start] * unit[i]).sum(-1).mean())
        s = ema * c + (1 - ema) * s
        if s < tau or i - start + 1 >= window:
            spans.append((start, i - 1))
            start, s = i, 1.0
    spans.append((start, frames_ - 1))
    roles = []
    for a, b in spans:
        n = b - a + 1
        roles += ["d"] * n if n < 3 else ["d"] + ["s"] * (n - 2) + ["d"]
    att = cells.attention.double().numpy()
    w = cells.weights.double().numpy() if cells.weights is not None else None
    score = (att * w[None]).sum(2) if w is not None else att.mean(2)
    if budget is None:
        dynamic, static = math.ceil(per_frame * (1 - rate)), max(1, round(per_frame * (1 - rate)))
    else:
        dynamic = static = max(1, budget // frames_)
    kept = []
    for f, role in enumerate(roles):
        row = score[f]
        if role == "d":
            chosen = sorted(sorted(range(per_frame), key=lambda j: (-row[j], j))[:dynamic])
        else:
            size, extra = divmod(per_frame, static)
            chosen, lo = [], 0
            for i in range(static):
                hi = lo + size + (1 if i < extra else 0)
                chosen.append(max(range(lo, hi), key=lambda j: (row[j], -j)))
                lo = hi
        kept += [f * per_frame + j for j in chosen]
    return kept


@pytest.mark.parametrize("settings, budget", [({}, None), ({"tau": 0.0, "window": 4}, None),
                                              ({"tau": 0.9}, None), ({}, 40)])
@pytest.mark.parametrize("weights", [True, False])
def test_earlytom_keeps_what_its_rule_says(settings, budget, weights):
    cells = cells_of(frames_=12, weights=weights, seed=4, runs=(4, 3, 5))
    values = {"rate": 0.8, "tau": 0.5, "window": 6, "ema": 0.9, **settings}
    method = EarlyTom(settings, Budget.of(budget) if budget is not None else None)
    expected = earlytom_reference(cells, values["rate"], values["tau"], values["window"], values["ema"], budget)
    assert method.select_cells(cells).tolist() == expected
    assert budget is None or len(expected) <= budget


def test_earlytom_segments_split_where_frames_change():
    """The premise of the rule test: with the default tau, the test cells give segments of several lengths,
    static frames among them."""
    from dycoke_cli.compress.earlytom import frame_roles, segments

    cells = cells_of(frames_=12, seed=4, runs=(4, 3, 5))
    spans = segments(cells.vectors(), 0.5, 6, 0.9)
    assert spans == [(0, 3), (4, 6), (7, 11)] and frame_roles(spans).count("static") == 2 + 1 + 3
    same = EncoderCells(hidden=cells.hidden[:1].repeat(12, 1, 1, 1), weights=cells.weights, layout=cells.layout)
    assert segments(same.vectors(), 0.5, 6, 0.9) == [(0, 4), (5, 9), (10, 11)]  # identical frames: the window cap


# ------------------------------------------------------------------ refusals before any load


@pytest.mark.parametrize("spec, message", [
    ("earlytom:encoder_layer=1", "computed here for SigLIP towers only"),
    ("dycoke:stage=encoder,encoder_layer=3", "encoder_layer=3 is past this vision tower's 2 layers; use 0 to 2"),
])
def test_settings_a_tower_cannot_take_are_refused_before_loading(frames, spec, message):
    from typer.testing import CliRunner

    from dycoke_cli.cli import app

    clip, _ = frames
    result = CliRunner().invoke(app, ["ask", str(clip), "q?", "--model", "random:tiny-qwen2.5-vl", "--device", "cpu",
                                      "--frames", "4", "-c", spec])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_vision_flops_count_the_kept_patches_after_the_selection():
    from dycoke_cli.profile.flops import TowerDims, vision_flops

    dims = TowerDims(hidden=8, mlp=16, layers=4)

    def layer(n: int) -> int:
        return 2 * (4 * n * 64 + 2 * n * n * 8 + 2 * n * 8 * 16)

    whole = {"frames": 3, "frames_per_group": 1, "tower_patches": 10, "tower_patches_kept": [], "encoder_layer": None}
    assert vision_flops(whole, dims) == 4 * 3 * layer(10)
    cut = dict(whole, encoder_layer=1, tower_patches_kept=[10, 4, 0])
    assert vision_flops(cut, dims) == 1 * 3 * layer(10) + 3 * (layer(10) + layer(4) + layer(0))
    qwen = dict(whole, frames=5, frames_per_group=2)  # 5 frames in 3 temporal groups
    assert vision_flops(qwen, dims) == 4 * 3 * layer(10)
