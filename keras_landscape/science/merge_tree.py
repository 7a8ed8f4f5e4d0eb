"""Components of sublevel sets over many minima: bottleneck levels, merge tree, N_u.

Given K minima with levels E_i and (upper bounds on) their pairwise saddle levels s(i, j),
minima i and j lie in one component of Omega_u when a chain of pairs joins them with every
saddle <= u. Single-linkage clustering of s gives every u at once: the K - 1 merge levels
form the merge tree, drawn as a disconnectivity graph (Wales). N_u counts the components of
Omega_u that hold at least one sampled minimum (a minimum with E_i > u is not in Omega_u).

scipy.cluster.hierarchy does the clustering: `linkage(method="single")` builds the tree,
`cophenet` gives the bottleneck (minimax chain) levels and `fcluster(criterion="distance")`
cuts the tree at u (a pair joins when its level is <= u, ties included, and levels within
`keras_landscape.levels.TIE_RTOL` of u count as u). Single linkage
depends only on the order of the levels, so scipy is handed ranks instead (exact integers,
never negative; scipy rejects inf and, in a tree, negative levels) and the levels are
looked up again afterwards. For the merge tree every pair gets its own rank in (level, i, j)
order, so ties are broken as Kruskal's algorithm breaks them; pairs that never connect get
a rank above all others, and the merges at that rank are dropped.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.cluster.hierarchy import DisjointSet, cophenet, fcluster, linkage

from keras_landscape.levels import at_or_below


class UnionFind:
    """Disjoint sets over 0..n-1 (scipy's DisjointSet)."""

    def __init__(self, n: int):
        self.sets = DisjointSet(range(n))

    def find(self, i: int) -> int:
        return self.sets[i]

    def union(self, i: int, j: int) -> bool:
        """Join the sets of i and j; False when they were already one set."""
        return self.sets.merge(i, j)


def _pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each entry of a condensed (K, K) matrix, scipy's order."""
    return np.triu_indices(k, 1)


def bottleneck_levels(saddle: np.ndarray) -> np.ndarray:
    """minimax path levels: b(i, j) = min over chains i..j of the largest saddle on the chain.

    `saddle` is symmetric (K, K) with inf (or NaN) for unknown pairs; b <= saddle everywhere,
    and b is itself an upper bound on s(i, j) (a path through other minima). Off the
    diagonal b is the cophenetic level of single linkage; on it, b(i, i) = min(s(i, i),
    min over j of s(i, j)) (the cheapest closed chain through i).
    """
    s = np.array(saddle, np.float64, copy=True)
    k = len(s)
    b = s.copy()
    if k < 2:
        return b
    rows, cols = _pairs(k)
    condensed = s[rows, cols]
    condensed[np.isnan(condensed)] = math.inf  # unknown
    distinct, ranks = np.unique(condensed, return_inverse=True)
    tree = linkage(ranks.reshape(-1).astype(np.float64), method="single")
    chained = distinct[cophenet(tree).astype(np.int64)]
    b[rows, cols] = b[cols, rows] = chained
    off = np.where(np.eye(k, dtype=bool), math.inf, b)
    np.fill_diagonal(b, np.minimum(np.diag(s), off.min(axis=1)))
    return b


def merge_tree(minimum_levels, saddle: np.ndarray) -> list[list[float]]:
    """Single-linkage merges [level, cluster_a, cluster_b, new_cluster] in increasing level.

    Leaves are 0..K-1; merged clusters get K, K+1, ... A merge happens at the pair's saddle
    level, never below either minimum's own level (a NaN minimum level is ignored there).
    Pairs with a non-finite saddle never merge. Pairs at one level are taken in the order
    (i, j), i < j, as Kruskal's algorithm takes them: that fixes the tree under ties, and
    cluster_a is the cluster holding i of the pair that joined the two clusters.
    """
    k = len(minimum_levels)
    if k < 2:
        return []
    s = np.asarray(saddle, np.float64)
    own = np.asarray(minimum_levels, np.float64)
    rows, cols = _pairs(k)
    condensed = s[rows, cols]
    level = np.fmax(condensed, np.fmax(own[rows], own[cols]))
    edges = np.flatnonzero(np.isfinite(condensed) & ~np.isnan(level))
    edges = edges[np.argsort(level[edges], kind="stable")]  # (level, i, j) order
    never = float(len(edges))  # a rank above every pair that connects
    encoded = np.full(len(condensed), never)
    encoded[edges] = np.arange(len(edges))  # distinct ranks: one tree, Kruskal's
    cluster_of = list(range(k))  # leaf -> the cluster holding it
    merges = []
    for a, b, rank, _ in linkage(encoded, method="single"):
        if rank >= never:  # scipy sorts merges by level: the rest never connect
            break
        edge = edges[int(rank)]
        first, new = cluster_of[rows[edge]], k + len(merges)
        a, b = (int(a), int(b)) if int(a) == first else (int(b), int(a))
        cluster_of = [new if c in (a, b) else c for c in cluster_of]
        merges.append([float(level[edge]), a, b, new])
    return merges


def count_components(minimum_levels, merges, levels) -> list[int]:
    """N_u for each u: components of Omega_u holding a sampled minimum (below u).

    `merges` is a merge tree as merge_tree returns it (cluster ids K, K+1, ... in order,
    levels non-decreasing towards the root); a merge with level None or NaN never joins.
    A minimum is in Omega_u, and a merge has happened, when its level is at or below u up
    to float ties (`at_or_below`).
    """
    k = len(minimum_levels)
    own = np.asarray(minimum_levels, np.float64)
    finite = np.abs(own[np.isfinite(own)])
    scale = float(finite.max()) if finite.size else 0.0
    if k < 2:
        return [int(np.sum(at_or_below(own, u, scale))) if u is not None else 0 for u in levels]
    known = [float(m[0]) for m in merges if m[0] is not None and not math.isnan(m[0])]
    distinct = np.unique(known)
    never = float(len(distinct))
    # scipy wants a whole tree: merges as given, then the remaining roots at `never`
    rows, size, used = [], [1] * k, set()
    for level, a, b, _ in merges:
        a, b = int(a), int(b)
        joined = level is not None and not math.isnan(level)
        rank = float(np.searchsorted(distinct, float(level))) if joined else never
        rows.append([a, b, rank, size[a] + size[b]])
        size.append(size[a] + size[b])
        used.update((a, b))
    roots = [c for c in range(len(size)) if c not in used]
    while len(roots) > 1:
        a, b = roots.pop(0), roots.pop(0)
        rows.append([a, b, never, size[a] + size[b]])
        roots.append(len(size))
        size.append(size[a] + size[b])
    tree = np.array(rows, np.float64)
    counts = []
    for u in levels:
        if u is None or math.isnan(u):
            counts.append(0)
            continue
        present = at_or_below(own, u, scale)
        # joined iff level <= u  <=>  rank <= (number of distinct levels <= u) - 1
        cut = float(np.sum(at_or_below(distinct, u, scale))) - 1.0
        labels = fcluster(tree, cut, criterion="distance")
        counts.append(len(set(labels[present].tolist())))
    return counts


def unresolved_bands(levels, lower, upper) -> list[list[float]]:
    """[first, last] measured level of each run of levels where the bounds differ."""
    bands: list[list[float]] = []
    previous = False
    for u, lo, hi in sorted(zip(levels, lower, upper)):
        open_ = lo != hi
        if open_ and previous:
            bands[-1][1] = float(u)
        elif open_:
            bands.append([float(u), float(u)])
        previous = open_
    return bands
