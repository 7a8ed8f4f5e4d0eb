"""Components of sublevel sets over many minima: bottleneck levels, merge tree, N_u.

Given K minima with levels E_i and (upper bounds on) their pairwise saddle levels s(i, j),
minima i and j lie in one component of Omega_u when a chain of pairs joins them with every
saddle <= u. Single-linkage clustering of s (Kruskal's algorithm with union-find) gives
every u at once: the K - 1 merge levels form the merge tree, drawn as a disconnectivity
graph (Wales). N_u counts the components of Omega_u that hold at least one sampled minimum
(a minimum with E_i > u is not in Omega_u).
"""

from __future__ import annotations

import math

import numpy as np


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> bool:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return False
        self.parent[rj] = ri
        return True


def bottleneck_levels(saddle: np.ndarray) -> np.ndarray:
    """minimax path levels: b(i, j) = min over chains i..j of the largest saddle on the chain.

    `saddle` is symmetric (K, K) with inf for unknown pairs; b <= saddle everywhere, and b is
    itself an upper bound on s(i, j) (a path through other minima).
    """
    b = np.array(saddle, np.float64, copy=True)
    k = len(b)
    for m in range(k):
        b = np.minimum(b, np.maximum(b[:, m : m + 1], b[m : m + 1, :]))
    return b


def merge_tree(minimum_levels, saddle: np.ndarray) -> list[list[float]]:
    """Single-linkage merges [level, cluster_a, cluster_b, new_cluster] in increasing level.

    Leaves are 0..K-1; merged clusters get K, K+1, ... A merge happens at the pair's saddle
    level, never below either minimum's own level. Pairs with an infinite saddle never merge.
    """
    k = len(minimum_levels)
    edges = sorted(
        (max(saddle[i, j], minimum_levels[i], minimum_levels[j]), i, j)
        for i in range(k)
        for j in range(i + 1, k)
        if math.isfinite(saddle[i, j])
    )
    sets = UnionFind(k)
    cluster_of_root = {i: i for i in range(k)}
    merges, next_id = [], k
    for level, i, j in edges:
        ri, rj = sets.find(i), sets.find(j)
        if ri == rj:
            continue
        ca, cb = cluster_of_root[ri], cluster_of_root[rj]
        sets.union(ri, rj)
        cluster_of_root[sets.find(ri)] = next_id
        merges.append([float(level), int(ca), int(cb), next_id])
        next_id += 1
    return merges


def count_components(minimum_levels, merges, levels) -> list[int]:
    """N_u for each u: components of Omega_u holding a sampled minimum (below u)."""
    counts = []
    for u in levels:
        k = len(minimum_levels)
        present = [i for i in range(k) if minimum_levels[i] <= u]
        sets = UnionFind(k + len(merges))
        for level, a, b, new in merges:
            if level <= u:
                sets.union(new, a)
                sets.union(new, b)
        counts.append(len({sets.find(i) for i in present}))
    return counts
