"""The token-selection methods evs, vidcom2, random, dynamics and uniform against their written rules.

Each method's kept indices are compared with a straightforward re-implementation written here from
the rule in the module docstring (loops over frames and positions, float64 NumPy), on random
tokens, on identical frames (where the tie rules decide) and on a single frame. Budgets are checked
against exact counts worked out by hand, unreachable budgets must be refused in one line, and no
method module may import torch when imported (the CLI's --help stays light).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from dycoke_cli.compress.base import Budget, VisualLayout
from dycoke_cli.compress.dynamics import Dynamics
from dycoke_cli.compress.evs import Evs
from dycoke_cli.compress.random_drop import RandomDrop
from dycoke_cli.compress.registry import METHODS
from dycoke_cli.compress.spec import parse_spec
from dycoke_cli.compress.uniform import Uniform
from dycoke_cli.compress.vidcom2 import VidCom2
from dycoke_cli.errors import SettingsError

TOKEN_METHODS = (Evs, VidCom2, RandomDrop, Dynamics)
INPUTS = ("random", "identical", "single")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tensors are tiny, and on a shared 2-core machine every small
    multithreaded matmul waits for the busy core (k-means++ makes hundreds of them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tokens(kind: str, frames: int = 4, per_frame: int = 16, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """(F, T, D) float32: random tokens, one random frame repeated F times, or a single frame."""
    g = torch.Generator().manual_seed(seed)
    if kind == "identical":
        return torch.randn(1, per_frame, dim, generator=g).repeat(frames, 1, 1)
    if kind == "single":
        frames = 1
    return torch.randn(frames, per_frame, dim, generator=g)


def layout_of(tokens: torch.Tensor) -> VisualLayout:
    frames, per_frame = tokens.shape[:2]
    return VisualLayout(frames=frames, grid=(1, per_frame))


def sampled(frames: int, per_frame: int, group: int = 1) -> VisualLayout:
    """The layout of `frames` decoded frames in model frames of `group` (an odd count padded)."""
    return VisualLayout(frames=math.ceil(frames / group), grid=(1, per_frame), group=group, inputs=frames)


def kept(method, tokens: torch.Tensor) -> list[int]:
    """The flat indices a method keeps (all of them when it returns None)."""
    selection = method.select(tokens, layout_of(tokens))
    if selection is None:
        return list(range(tokens.shape[0] * tokens.shape[1]))
    assert selection.keep.dtype == torch.int64 and selection.keep.dim() == 1
    return selection.keep.tolist()


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / math.sqrt(max(float((a @ a) * (b @ b)), 1e-16)))


# ---------------------------------------------------------------------------------------- references


def evs_reference(x: np.ndarray, keep_count: int) -> list[int]:
    frames, per_frame, _ = x.shape
    score = {}
    for t in range(frames):
        for j in range(per_frame):
            if t >= 1:
                d = 1 - cos(x[t, j], x[t - 1, j])
            elif frames == 1:
                d = 1 - cos(x[0, j], x[0].mean(0))
            elif keep_count >= 2 * per_frame:
                d = math.inf
            else:
                d = 1 - cos(x[0, j], x[1, j])
            score[t * per_frame + j] = d
    ranked = sorted(score, key=lambda i: (-score[i], i))
    return sorted(ranked[:keep_count])


def vidcom2_reference(x: np.ndarray, target: int | None, base: float | None = None) -> list[int]:
    """VidCom2's kept indices: under a budget `target` (base = target / N, then reconciled to exactly
    target); under a rate, the released code's base = 1 - rate and its per-frame counts as they fall."""
    frames, per_frame, dim = x.shape
    flat = x.reshape(frames * per_frame, dim)
    variance = flat.var(0)
    width = max(1, dim // 2)
    channels = sorted(sorted(range(dim), key=lambda c: (variance[c], c))[:width])
    y = flat[:, channels]
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    y = y.reshape(frames, per_frame, width)
    video_centre = y.reshape(-1, width).mean(0)

    def gaussian(a, c):
        sq = float(((a - c) ** 2).sum())
        return sum(math.exp(-sq / (2 * s)) for s in (1 / 8, 1 / 4, 1 / 2, 1, 2))

    score, counts = {}, []
    v = [[gaussian(y[t, j], video_centre) for j in range(per_frame)] for t in range(frames)]
    s = [-sum(row) / per_frame for row in v]
    e = [math.exp((st - max(s)) / 0.01) for st in s]
    p = [ei / sum(e) for ei in e]
    base = target / (frames * per_frame) if target is not None else base
    for t in range(frames):
        frame_centre = y[t].mean(0)
        for j in range(per_frame):
            score[t * per_frame + j] = v[t][j] + gaussian(y[t, j], frame_centre)
        scale = min(1.0, base * (1 + p[t] - sum(p) / frames))
        counts.append(min(per_frame, max(1, round(scale * per_frame))))  # Python round: half to even

    chosen = set()
    protected = set()
    for t in range(frames):
        slots = sorted(range(t * per_frame, (t + 1) * per_frame), key=lambda i: (score[i], i))
        chosen.update(slots[:counts[t]])
        protected.add(slots[0])
    if target is None:
        return sorted(chosen)
    if len(chosen) > target:
        droppable = sorted(chosen - protected, key=lambda i: (-score[i], i))
        chosen -= set(droppable[:len(chosen) - target])
    elif len(chosen) < target:
        addable = sorted(set(score) - chosen, key=lambda i: (score[i], i))
        chosen |= set(addable[:target - len(chosen)])
    return sorted(chosen)


def dynamics_reference(x: np.ndarray, clusters: int, iters: int, seed: int) -> tuple[list[int], list[int]]:
    """(keep, merge) by the module docstring: k-means++ with one torch.rand draw per centre."""
    frames, per_frame, dim = x.shape
    count = frames * per_frame
    if clusters >= count:
        return list(range(count)), list(range(count))
    u = x.reshape(count, dim)
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    g = torch.Generator().manual_seed(seed)

    def draw() -> float:
        return float(torch.rand((), generator=g, dtype=torch.float64))

    centres = [u[int(draw() * count)]]
    while len(centres) < clusters:
        weight = [min(float(((u[i] - c) ** 2).sum()) for c in centres) for i in range(count)]
        if sum(weight) <= 0:
            break
        threshold, running = draw() * sum(weight), 0.0
        for i, w in enumerate(weight):
            running += w
            if running > threshold:
                break
        centres.append(u[i])
    centres = np.array(centres)
    for _ in range(iters):
        similarity = [[cos(u[i], c) if c @ c > 0 else 0.0 for c in centres] for i in range(count)]
        labels = [int(np.argmax(row)) for row in similarity]  # first maximum
        moved = centres.copy()
        for k in range(len(centres)):
            members = [u[i] for i in range(count) if labels[i] == k]
            if members:
                moved[k] = np.mean(members, axis=0)
        shift = float(np.linalg.norm(moved - centres))
        centres = moved
        if shift < 1e-4:
            break
    first_seen: dict[int, int] = {}
    for i, label in enumerate(labels):
        first_seen.setdefault(label, i)
    rank = {label: r for r, label in enumerate(first_seen)}  # dict order is first appearance
    return list(first_seen.values()), [rank[label] for label in labels]


def uniform_reference(frames: int, kept_groups: int, group: int) -> list[int]:
    n = min(frames, kept_groups * group)
    return [math.floor((i + 0.5) * frames / n) for i in range(n)]


# ---------------------------------------------------------------------------------------- selections


def evs_count(frames: int, per_frame: int, rate: float) -> int:
    return max(per_frame, int(frames * per_frame * (1 - rate)))


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("rate, budget", [(0.75, None), (0.5, None), (0.25, None), (0.9, None), (0.75, 0.4), (0.75, 5)])
def test_evs_matches_reference(kind, rate, budget):
    tokens = make_tokens(kind)
    method = Evs({"rate": rate}, Budget.of(budget) if budget is not None else None)
    frames, per_frame = tokens.shape[:2]
    keep_count = Budget.of(budget).tokens(frames * per_frame) if budget is not None else evs_count(
        frames, per_frame, rate)
    assert kept(method, tokens) == evs_reference(tokens.double().numpy(), keep_count)


def test_evs_guard_keeps_frame0_whole_only_with_room_for_more():
    tokens = make_tokens("random", frames=8)  # T = 16, N = 128
    roomy = kept(Evs({"rate": 0.75}), tokens)  # R = 32 = 2T: frame 0 whole
    assert len(roomy) == 32 and roomy[:16] == list(range(16)) and max(roomy) >= 16
    short = kept(Evs({"rate": 0.75}), tokens[:4])  # R = 16 < 2T: frame 0 competes
    assert len(short) == 16 and max(short) >= 16 and short != list(range(16))


def test_evs_scores_low_precision_in_float32():
    tokens = make_tokens("random").bfloat16()
    assert kept(Evs({"rate": 0.6}), tokens) == kept(Evs({"rate": 0.6}), tokens.float())


def native_reference(x: torch.Tensor, keep_count: int) -> list[int]:
    """vLLM's EVS in the tokens' own dtype: F.cosine_similarity to the previous frame, frame 0 at 255,
    a stable descending sort, the first R kept."""
    frames, per_frame, _ = x.shape
    score = {}
    for t in range(frames):
        for j in range(per_frame):
            if t == 0:
                score[j] = 255.0
            else:
                sim = torch.nn.functional.cosine_similarity(x[t, j], x[t - 1, j], dim=-1)
                score[t * per_frame + j] = float(1 - sim)  # computed (and rounded) in x's dtype
    ranked = sorted(score, key=lambda i: (-score[i], i))
    return sorted(ranked[:keep_count])


def test_evs_native_scoring_is_vllms_choice_in_the_features_dtype():
    tokens = (make_tokens("random", frames=6) * 0.05 + make_tokens("identical", frames=6)).bfloat16()
    native = kept(Evs({"rate": 0.7, "score": "native"}), tokens)
    assert native == native_reference(tokens, evs_count(6, 16, 0.7))
    # bf16 dissimilarities are coarse: here the float32 scorer keeps a different set
    assert native != kept(Evs({"rate": 0.7}), tokens)


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("rate, budget", [(0.75, None), (0.7, None), (0.5, None), (0.75, 0.3), (0.75, 7)])
def test_vidcom2_matches_reference(kind, rate, budget):
    tokens = make_tokens(kind)
    method = VidCom2({"rate": rate}, Budget.of(budget) if budget is not None else None)
    frames, per_frame = tokens.shape[:2]
    total = frames * per_frame
    target = Budget.of(budget).tokens(total) if budget is not None else None
    result = kept(method, tokens)
    assert target is None or len(result) == target
    assert result == vidcom2_reference(tokens.double().numpy(), target, 1 - rate)


def test_vidcom2_under_a_rate_keeps_the_released_per_frame_counts():
    """32 frames x 196 tokens at rate 0.9: every frame keeps round(scale * 196) with no correction to
    int(6272 * 0.1) = 627; on identical frames every scale is the base, 0.1 * 196 = 19.6 -> 20 a frame."""
    tokens = make_tokens("identical", frames=32, per_frame=196, dim=16)
    assert len(kept(VidCom2({"rate": 0.9}), tokens)) == 32 * 20
    random = make_tokens("random", frames=32, per_frame=196, dim=16, seed=3)
    assert kept(VidCom2({"rate": 0.9}), random) == vidcom2_reference(random.double().numpy(), None, 0.1)


# Random inputs where the per-frame counts miss R: (frames, budget, seed) found to drop (sum k_t > R),
# to add (sum k_t < R), and to drop where the highest-scoring kept token is a frame's only one.
@pytest.mark.parametrize("frames, budget, seed", [(3, 3, 1), (5, 0.2, 0), (3, 4, 0), (5, 8, 0), (5, 5, 1)])
def test_vidcom2_reconciles_to_exactly_r(frames, budget, seed):
    tokens = make_tokens("random", frames=frames, seed=seed)
    result = kept(VidCom2({}, Budget.of(budget)), tokens)
    assert result == vidcom2_reference(tokens.double().numpy(), Budget.of(budget).tokens(frames * 16))
    assert sorted({i // 16 for i in result}) == list(range(frames))  # no frame left empty


def test_vidcom2_gives_a_distinctive_frame_more_tokens():
    tokens = make_tokens("identical", frames=6)
    tokens[3] = make_tokens("random", frames=1, seed=7)[0]  # one frame unlike the others
    counts = torch.tensor(kept(VidCom2({"rate": 0.75}), tokens)).div(16, rounding_mode="floor").bincount()
    # base 0.25, p ~ one-hot on frame 3: k_3 = round(0.25 * (2 - 1/6) * 16) = 7, the others
    # round(0.25 * (1 - 1/6) * 16) = 3; under a rate the counts stand as they fall (22 tokens).
    assert counts.tolist() == [3, 3, 3, 7, 3, 3]
    # under a budget of 24 the two missing tokens are added, to the earliest of the tied frames
    budgeted = torch.tensor(kept(VidCom2({}, Budget.of(24)), tokens)).div(16, rounding_mode="floor").bincount()
    assert budgeted.tolist() == [4, 4, 3, 7, 3, 3]


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("seed", [0, 3])
def test_random_is_a_seeded_permutation_whatever_the_content(kind, seed):
    tokens = make_tokens(kind)
    total = tokens.shape[0] * tokens.shape[1]
    keep_count = max(1, int(total * 0.5))
    expected = sorted(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:keep_count].tolist())
    torch.manual_seed(123)  # the global RNG must not matter
    assert kept(RandomDrop({"seed": seed}), tokens) == expected
    assert kept(RandomDrop({"seed": seed}), tokens) == expected


def test_random_seeds_differ():
    tokens = make_tokens("random")
    assert kept(RandomDrop({"seed": 0}), tokens) != kept(RandomDrop({"seed": 1}), tokens)
    assert kept(RandomDrop({"rate": 0.0}), tokens) == list(range(64))


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("clusters, iters, seed", [(8, 20, 0), (5, 3, 1), (24, 20, 2)])
def test_dynamics_matches_reference(kind, clusters, iters, seed):
    tokens = make_tokens(kind)
    selection = Dynamics({"tokens": clusters, "iters": iters, "seed": seed}).select(tokens, layout_of(tokens))
    keep, merge = dynamics_reference(tokens.double().numpy(), clusters, iters, seed)
    assert selection.keep.tolist() == keep
    assert selection.merge.tolist() == merge
    assert selection.counters == {"clusters": len(keep)}


def test_dynamics_edge_cases():
    identical = make_tokens("identical")  # 16 distinct tokens, repeated over 4 frames
    selection = Dynamics({"tokens": 24}).select(identical, layout_of(identical))
    assert selection.keep.tolist() == list(range(16))  # no duplicate centre: 16 clusters, not 24
    assert selection.merge.tolist() == list(range(16)) * 4
    whole = Dynamics({"tokens": 64}).select(identical, layout_of(identical))  # N >= F*T
    assert whole.keep.tolist() == list(range(64)) and whole.merge.tolist() == list(range(64))
    single = torch.ones(2, 3, 8)  # one distinct token: one cluster
    selection = Dynamics({"tokens": 4}).select(single, layout_of(single))
    assert selection.keep.tolist() == [0] and selection.merge.tolist() == [0] * 6


def test_dynamics_members_and_first_members_agree():
    tokens = make_tokens("random", frames=8, dim=64, seed=5)
    selection = Dynamics({"tokens": 16}).select(tokens, layout_of(tokens))
    keep, merge = selection.keep, selection.merge
    assert keep.tolist() == sorted(keep.tolist())
    for rank, first in enumerate(keep.tolist()):
        members = torch.nonzero(merge == rank).flatten()
        assert int(members.min()) == first


@pytest.mark.parametrize("frames, group, rate", [
    (32, 1, 0.5), (32, 1, 0.75), (32, 1, 0.9), (31, 1, 0.5), (7, 1, 0.5), (1, 1, 0.5), (3, 1, 0.99),
    (32, 2, 0.5), (33, 2, 0.5), (9, 2, 0.75), (2, 2, 0.5), (1, 2, 0.5),
])
def test_uniform_matches_reference(frames, group, rate):
    groups = math.ceil(frames / group)
    kept_groups = max(1, int(groups * (1 - rate)))
    expected = uniform_reference(frames, kept_groups, group)
    subset = Uniform({"rate": rate}).frame_subset(sampled(frames, 196, group))
    assert (list(range(frames)) if subset is None else subset) == expected
    assert Uniform({"rate": rate}).select(make_tokens("random"), layout_of(make_tokens("random"))) is None


def test_uniform_takes_segment_centres():
    assert Uniform({"rate": 0.5}).frame_subset(sampled(8, 196, 1)) == [1, 3, 5, 7]
    assert Uniform({"rate": 0.75}).frame_subset(sampled(32, 196, 1)) == [2, 6, 10, 14, 18, 22, 26, 30]
    assert Uniform({"rate": 0.5}).frame_subset(sampled(16, 49, 2)) == [1, 3, 5, 7, 9, 11, 13, 15]  # 4 groups of 2
    assert Uniform({"rate": 0.0}).frame_subset(sampled(16, 49, 1)) is None


# ---------------------------------------------------------------------------------------- budgets

# (F, T, budget, tokens kept by evs/random/dynamics, by vidcom2 (None: refused), by uniform (None: refused)).
# Token-level methods keep exactly B = floor(share * F*T) or the count; vidcom2 needs B >= F (one per
# frame); uniform keeps floor(B / T) whole frames and needs at least one.
BUDGETS = [
    (1, 16, 0.5, 8, 8, None), (1, 16, 0.25, 4, 4, None), (1, 16, 5, 5, 5, None),
    (4, 16, 0.5, 32, 32, 32), (4, 16, 0.25, 16, 16, 16), (4, 16, 20, 20, 20, 16),
    (8, 16, 0.5, 64, 64, 64), (8, 16, 0.25, 32, 32, 32), (8, 16, 20, 20, 20, 16),
    (32, 16, 0.5, 256, 256, 256), (32, 16, 0.25, 128, 128, 128), (32, 16, 20, 20, None, 16),
    (4, 196, 0.5, 392, 392, 392), (4, 196, 0.25, 196, 196, 196), (4, 196, 300, 300, 300, 196),
]


def count_kept(method_class, tokens: torch.Tensor, budget: float) -> int:
    method = method_class({}, Budget.of(budget))
    if method_class is Uniform:
        frames, per_frame = tokens.shape[:2]
        subset = method.frame_subset(sampled(frames, per_frame, 1))
        return (frames if subset is None else len(subset)) * per_frame
    return len(kept(method, tokens))


@pytest.mark.parametrize("frames, per_frame, budget, tokens_kept, vidcom2_kept, uniform_kept", BUDGETS)
def test_budget_counts(frames, per_frame, budget, tokens_kept, vidcom2_kept, uniform_kept):
    tokens = make_tokens("random", frames=frames, per_frame=per_frame)
    expected = {Evs: tokens_kept, RandomDrop: tokens_kept, Dynamics: tokens_kept, VidCom2: vidcom2_kept,
                Uniform: uniform_kept}
    for method_class, count in expected.items():
        if count is None:
            with pytest.raises(SettingsError) as refused:
                count_kept(method_class, tokens, budget)
            assert "\n" not in str(refused.value) and "cannot keep fewer than" in str(refused.value)
            continue
        assert count_kept(method_class, tokens, budget) == count, method_class.name
        assert count <= Budget.of(budget).tokens(frames * per_frame)


def test_budget_solves_the_parameter_it_replaces():
    tokens = make_tokens("random", frames=8)  # N = 128
    cases = [(Evs, {"rate": 0.75, "score": "float32", "stage": "prefill", "encoder_layer": 8}), (VidCom2, {"rate": 0.75}),
             (RandomDrop, {"rate": 0.75, "seed": 0}), (Dynamics, {"tokens": 32, "iters": 20, "seed": 0})]
    for method_class, solved in cases:
        method = method_class({}, Budget.of(0.25))
        assert method.solve(layout_of(tokens)) == solved
    uniform = Uniform({}, Budget.of(50))  # 3 of 8 frames of 16 tokens
    assert len(uniform.frame_subset(sampled(8, 16, 1))) == 3 and uniform.solve(sampled(8, 16, 1)) == {"rate": 0.62}


def test_solving_is_pure():
    """The same method answers the same whatever it did before (nothing is written while selecting)."""
    tokens, other = make_tokens("random", frames=8), make_tokens("random", frames=2)
    for method_class in (*TOKEN_METHODS, Uniform):
        method = method_class({}, Budget.of(0.5))
        first = method.solve(layout_of(tokens))
        method.solve(layout_of(other))
        if method_class is not Uniform:
            method.select(other, layout_of(other))
        assert method.solve(layout_of(tokens)) == first, method_class.name


def test_reported_rates_reproduce_the_selection():
    """Under a budget the reported rate, given without the budget, keeps the same tokens (where the
    method's own rule can keep that many)."""
    tokens = make_tokens("random", frames=8)  # N = 128, T = 16
    for method_class in (Evs, RandomDrop):
        for budget in (0.5, 0.3, 37, 100):
            method = method_class({}, Budget.of(budget))
            again = method_class(method.solve(layout_of(tokens)))
            assert kept(again, tokens) == kept(method, tokens), (method_class.name, budget)
    for budget in (50, 64, 0.4):
        method = Uniform({}, Budget.of(budget))
        again = Uniform(method.solve(sampled(8, 16)))
        assert again.frame_subset(sampled(8, 16)) == method.frame_subset(sampled(8, 16))


def test_a_count_above_the_video_keeps_every_token():
    tokens = make_tokens("random")  # 64 tokens
    for method_class in TOKEN_METHODS:
        method = method_class({}, Budget.of(65))
        assert kept(method, tokens) == list(range(64)), method_class.name
    assert Uniform({}, Budget.of(65)).frame_subset(sampled(4, 16, 1)) is None
    assert Budget.of(65).exceeds(64) and not Budget.of(64).exceeds(64) and not Budget.of(1.0).exceeds(64)


def test_refusals_give_the_numbers():
    tokens = make_tokens("random", frames=32)
    with pytest.raises(SettingsError) as vidcom2:
        VidCom2({}, Budget.of(20)).select(tokens, layout_of(tokens))
    assert str(vidcom2.value) == ("vidcom2 cannot keep fewer than 32 of 512 visual tokens (one per frame): "
                                  "--budget 20 asks for 20")
    with pytest.raises(SettingsError) as uniform:
        Uniform({}, Budget.of(0.1)).frame_subset(sampled(8, 196, 2))
    assert str(uniform.value) == ("uniform cannot keep fewer than 196 of 784 visual tokens (one frame): "
                                  "--budget 0.1 asks for 78")


def test_dynamics_is_fast_at_the_largest_budget():
    import time

    tokens = make_tokens("random", frames=32, per_frame=196, dim=256)
    started = time.perf_counter()
    selection = Dynamics({}, Budget.of(256)).select(tokens, layout_of(tokens))
    assert selection.keep.numel() == 256
    assert time.perf_counter() - started < 5


# ---------------------------------------------------------------------------------------- declarations


def test_methods_are_registered_after_none_and_dycoke():
    names = list(METHODS)
    assert names[:2] == ["none", "dycoke"]
    assert {"evs", "vidcom2", "random", "dynamics", "uniform"} <= set(names)


@pytest.mark.parametrize("spec, method_class, values", [
    ("evs:rate=0.75", Evs, {"rate": 0.75, "score": "float32", "stage": "prefill", "encoder_layer": 8}),
    ("evs", Evs, {"rate": 0.75, "score": "float32", "stage": "prefill", "encoder_layer": 8}),
    ("evs:score=native", Evs, {"rate": 0.75, "score": "native", "stage": "prefill", "encoder_layer": 8}),
    ("vidcom2:rate=0.5", VidCom2, {"rate": 0.5}),
    ("random:rate=0.3,seed=7", RandomDrop, {"rate": 0.3, "seed": 7}),
    ("dynamics:tokens=32,iters=5,seed=1", Dynamics, {"tokens": 32, "iters": 5, "seed": 1}),
    ("dynamics", Dynamics, {"tokens": 64, "iters": 20, "seed": 0}),
    ("uniform:rate=0", Uniform, {"rate": 0.0}),
])
def test_specs_build_methods(spec, method_class, values):
    method = parse_spec(spec).build()
    assert type(method) is method_class and method.values == values


@pytest.mark.parametrize("spec", [
    "evs:rate=1", "evs:rate=-0.1", "vidcom2:rate=1.5", "random:rate=1", "random:seed=-1", "random:seed=0.5",
    "dynamics:tokens=0", "dynamics:iters=0", "dynamics:seed=-2", "dynamics:tokens=2.5", "uniform:rate=1",
    "evs:k=0.5", "evs:score=bf16", "random:seed=1180591620717411303424", "dynamics:seed=18446744073709551616",
    "dynamics:iters=1001",
])
def test_specs_out_of_range_are_refused(spec):
    with pytest.raises(SettingsError) as refused:
        parse_spec(spec)
    assert "\n" not in str(refused.value)


def test_specs_take_a_budget():
    method = parse_spec("vidcom2:budget=0.25").build()
    assert method.budget == Budget(0.25) and VidCom2.budget_solves == "rate"
    assert Dynamics.budget_solves == "tokens" and Uniform.budget_solves == "rate"


def test_method_modules_do_not_import_torch():
    modules = ["evs", "vidcom2", "random_drop", "dynamics", "uniform", "registry"]
    code = "import sys\n" + "".join(f"import dycoke_cli.compress.{m}\n" for m in modules) + \
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True)
