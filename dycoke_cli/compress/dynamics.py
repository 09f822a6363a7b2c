"""`dynamics`: the training-free half of Token Dynamics (VQToken, Zhang & Fu, NeurIPS 2025): cluster
all of a video's tokens with k-means and give the language model one averaged token per cluster.

A video repeats its content across space and time; k-means over every token of every frame finds
the few distinct kinds of content, and one mean per kind stands in for all of its copies. The
released code then feeds those means to a fine-tuned model through a trained attention module
(cross-dynamics attention); that part needs training and is not here.

Rule, on tokens x (F, T, D), N = `tokens` clusters (the budget in tokens when one is given):
  1. u = x / |x| over all F*T tokens, in float32.
  2. k-means++ init from torch.Generator().manual_seed(seed), one u ~ U[0, 1) (torch.rand, float64)
     per centre: the first centre is token floor(u * F*T); each next one is the first token whose
     cumulative weight exceeds u * (total weight), the weight being the squared Euclidean distance
     to the nearest chosen centre. When every token already coincides with a chosen centre (all
     weights 0: fewer distinct tokens than N) the init stops there, with fewer centres.
  3. Up to `iters` rounds: assign every token to the centre of highest cosine similarity (argmax,
     ties to the lower centre id); move every centre to the plain mean of its members (an empty
     cluster keeps its centre); stop early once the centres moved less than 1e-4 (Frobenius).
     The labels are those of the last round (the ones the final centres are the means of).
  4. Drop empty clusters and number the rest by first appearance: the cluster whose earliest member
     (smallest flat index) comes first is cluster 0.
  Selection: keep = each cluster's first member (ascending), merge = (F*T,) each token's cluster.
The engine feeds each cluster the mean of its members' ORIGINAL (unnormalised) features, placed at
its first member's position. The released code feeds means of the unit vectors (and in label order,
after a fine-tuned attention module); training-free we keep the features' scale, which the
language model expects, and a temporal order, which its positions expect.

Edge cases: N >= F*T makes every token its own cluster (keep = merge = arange(F*T), no k-means);
identical or repeated tokens give fewer clusters than N (step 2), never a duplicate centre.

Budget: `tokens` = B, so at most B tokens are kept (fewer only where the video has fewer distinct
tokens or a cluster empties); every B >= 1 is reachable. Cost: the assignment is one (F*T, D) x
(D, N) matmul per round on unit vectors, the init one matrix-vector product per centre.
"""

from __future__ import annotations

from dycoke_cli.compress.base import MAX_SEED, Method, Param, Selection, VisualLayout

TOLERANCE = 1e-4
NEAR = 1e-3  # far above the float32 error of |u|^2 + |c|^2 - 2 u.c on unit vectors (~1e-6 at D = 4096)


class Dynamics(Method):
    name = "dynamics"
    summary = "Token Dynamics (training-free): k-means over all tokens, one averaged token per cluster"
    params = (
        Param("tokens", int, 64, "number of clusters N, i.e. visual tokens the model sees", low=1),
        Param("iters", int, 20, "k-means iterations at most", low=1, high=1000),
        Param("seed", int, 0, "seed of the k-means++ initialisation", low=0, high=MAX_SEED),
    )
    budget_solves = "tokens"

    def solved(self, layout: VisualLayout) -> int:
        return self._clusters(layout.total)

    def select(self, tokens, layout: VisualLayout) -> Selection | None:
        import torch

        total = tokens.shape[0] * tokens.shape[1]
        clusters = self._clusters(total)
        if clusters >= total:
            every = torch.arange(total, device=tokens.device)
            return Selection(keep=every, merge=every.clone(), counters={"clusters": total})
        generator = torch.Generator().manual_seed(self.values["seed"])
        unit = torch.nn.functional.normalize(tokens.float().flatten(0, 1), dim=-1)  # (F*T, D)
        labels = kmeans(unit, kmeans_plus_plus(unit, clusters, generator), self.values["iters"])  # (F*T,)
        keep, merge = by_first_appearance(labels)
        return Selection(keep=keep, merge=merge, counters={"clusters": int(keep.numel())})

    def _clusters(self, total: int) -> int:
        if self.budget is None:
            return self.values["tokens"]
        return self.budget_tokens(total)


def kmeans_plus_plus(unit, clusters: int, generator):
    """(K, D) initial centres, K <= clusters: tokens drawn with probability proportional to their
    squared distance to the nearest centre so far (see the module docstring for the exact draw)."""
    import torch

    count = unit.shape[0]
    norms = (unit * unit).sum(-1)  # (F*T,) 1, or 0 for a zero token
    picks = [int(_uniform(generator) * count)]
    nearest = squared_distances(unit, norms, picks[0])  # (F*T,) to the nearest centre so far
    while len(picks) < clusters:
        cumulative = nearest.cumsum(0)  # (F*T,)
        if cumulative[-1] <= 0:
            break  # every token coincides with a centre already
        threshold = _uniform(generator) * cumulative[-1]
        picks.append(int(torch.searchsorted(cumulative, threshold, right=True).clamp(max=count - 1)))
        nearest = torch.minimum(nearest, squared_distances(unit, norms, picks[-1]))
    return unit[picks]  # (K, D)


def squared_distances(unit, norms, centre: int):
    """(F*T,) float64 |u - u[centre]|^2. One matrix-vector product (|u|^2 + |c|^2 - 2 u.c); where that
    cancels to near 0 the difference is recomputed directly, so a copy of the centre weighs exactly 0."""
    import torch

    c = unit[centre]  # (D,)
    distances = (norms + norms[centre] - 2 * (unit @ c)).clamp_min(0)  # (F*T,)
    close = torch.nonzero(distances < NEAR).flatten()
    distances[close] = ((unit[close] - c) ** 2).sum(-1)
    return distances.double()


def _uniform(generator) -> float:
    import torch

    return float(torch.rand((), generator=generator, dtype=torch.float64))


def kmeans(unit, centres, iters: int):
    """(F*T,) int64 labels after at most `iters` rounds of cosine assignment and mean update."""
    import torch

    clusters = centres.shape[0]
    for _ in range(iters):
        directions = torch.nn.functional.normalize(centres, dim=-1)  # (K, D)
        labels = (unit @ directions.T).argmax(1)  # (F*T,) first maximum: the lower centre id
        sums = torch.zeros_like(centres).index_add_(0, labels, unit)  # (K, D)
        sizes = torch.bincount(labels, minlength=clusters)  # (K,)
        moved = torch.where(sizes[:, None] > 0, sums / sizes.clamp_min(1)[:, None], centres)
        shift = float(torch.linalg.norm(moved - centres))
        centres = moved
        if shift < TOLERANCE:
            break
    return labels


def by_first_appearance(labels):
    """(keep, merge): each non-empty cluster's first member in ascending order, and every token's
    cluster renumbered 0..K'-1 in that order."""
    import torch

    count = labels.shape[0]
    index = torch.arange(count, device=labels.device)
    first = torch.full((int(labels.max()) + 1,), count, device=labels.device).scatter_reduce(
        0, labels, index, reduce="amin")  # (K,) first member, `count` where empty
    keep = first[first < count].sort().values  # (K',)
    rank = torch.empty_like(first)
    rank[labels[keep]] = torch.arange(keep.numel(), device=labels.device)
    return keep, rank[labels]
