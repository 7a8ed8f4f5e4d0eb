"""Components of sublevel sets against known answers: union-find, merge tree, N_u, the probe.

* Hand-made saddle matrices: bottleneck (minimax) levels, single-linkage merge order and
  cluster ids, N_u with minima above u left out.
* Convex E (linear regression): every pair connects at max(E_i, E_j), so single linkage
  merges at the sorted minimum levels E_(2) .. E_(K) and N_u = 1 at every u >= min E_i.
* The two-valley E of conftest.TwoValleyFiles, with two minima sampled in each valley: the
  within-valley pairs merge at their own levels (far below 1/2), the valleys merge at the
  saddle level s = 1/2, so N_u = 2 below s and 1 above it.

DSS settings for the two valleys: learning_rate 0.05, points 40 (see tests/test_barriers.py).
"""

import math

import numpy as np
import pytest

from keras_landscape.data.specs import load_data
from keras_landscape.engine.landscape import Landscape
from keras_landscape.experiment.runner import RunSpec, execute
from keras_landscape.models.loading import load_model
from keras_landscape.science.merge_tree import (
    UnionFind,
    bottleneck_levels,
    count_components,
    merge_tree,
)
from keras_landscape.store.hdf5 import Store

TOL = 0.02
INF = math.inf

pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


# ----------------------------------------------------------------------- pure functions


def test_union_find():
    sets = UnionFind(5)
    assert sets.union(0, 1) and sets.union(3, 4)
    assert not sets.union(1, 0)
    assert sets.find(0) == sets.find(1) != sets.find(3)
    assert sets.union(1, 4)
    assert len({sets.find(i) for i in range(5)}) == 2  # {0, 1, 3, 4} and {2}


# Minimum levels and saddle levels of 5 minima: a chain 0 -1- 1 -2- 2 -3- 3, a direct 0-3
# pair at 5 (worse than the chain), and minimum 4 connected to nothing.
LEVELS = [0.1, 0.2, 0.0, 0.3, 0.05]
SADDLE = np.array(
    [
        [0.1, 1.0, INF, 5.0, INF],
        [1.0, 0.2, 2.0, INF, INF],
        [INF, 2.0, 0.0, 3.0, INF],
        [5.0, INF, 3.0, 0.3, INF],
        [INF, INF, INF, INF, 0.05],
    ]
)


def test_bottleneck_levels_are_minimax_chains():
    b = bottleneck_levels(SADDLE)
    expected = np.array(
        [
            [0.1, 1.0, 2.0, 3.0, INF],
            [1.0, 0.2, 2.0, 3.0, INF],
            [2.0, 2.0, 0.0, 3.0, INF],
            [3.0, 3.0, 3.0, 0.3, INF],
            [INF, INF, INF, INF, 0.05],
        ]
    )
    np.testing.assert_array_equal(b, expected)
    assert np.all(b <= SADDLE)
    np.testing.assert_array_equal(b, b.T)
    # the input is not modified
    assert SADDLE[0, 3] == 5.0 and SADDLE[0, 2] == INF


def test_bottleneck_levels_brute_force_on_random_matrices():
    """Against the minimax over every simple chain (5 minima: all orderings)."""
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(20):
        k = 5
        s = rng.uniform(1, 10, size=(k, k))
        s = np.minimum(s, s.T)
        s[rng.uniform(size=(k, k)) < 0.3] = INF
        s = np.minimum(s, s.T)
        np.fill_diagonal(s, 0.0)
        b = bottleneck_levels(s)
        for i, j in itertools.combinations(range(k), 2):
            best = s[i, j]
            others = [m for m in range(k) if m not in (i, j)]
            for r in range(1, len(others) + 1):
                for middle in itertools.permutations(others, r):
                    chain = (i, *middle, j)
                    best = min(best, max(s[p, q] for p, q in zip(chain, chain[1:])))
            assert b[i, j] == best and b[j, i] == best


def test_merge_tree_order_and_cluster_ids():
    merges = merge_tree(LEVELS, SADDLE)
    # Kruskal: 0-1 at 1 -> cluster 5; 5 with 2 at 2 -> 6; 6 with 3 at 3 -> 7; 0-3 at 5 is
    # already joined; minimum 4 never merges (all its saddles are infinite).
    assert merges == [[1.0, 0, 1, 5], [2.0, 5, 2, 6], [3.0, 6, 3, 7]]
    levels = [m[0] for m in merges]
    assert levels == sorted(levels)


def test_merge_is_never_below_a_minimum_level():
    """A saddle estimate below a minimum's own level merges at that level."""
    merges = merge_tree([0.1, 0.4], np.array([[0.1, 0.2], [0.2, 0.4]]))
    assert merges == [[0.4, 0, 1, 2]]


def test_merge_tree_of_two_valleys():
    levels = [0.0, 0.0002, 0.0, 0.0002]
    s = np.full((4, 4), 0.5)
    s[0, 1] = s[1, 0] = s[2, 3] = s[3, 2] = 0.0002
    np.fill_diagonal(s, levels)
    merges = merge_tree(levels, s)
    assert [m[1:] for m in merges] == [[0, 1, 4], [2, 3, 5], [4, 5, 6]]
    assert [m[0] for m in merges] == [0.0002, 0.0002, 0.5]


def test_count_components_leaves_out_minima_above_the_level():
    merges = merge_tree(LEVELS, SADDLE)
    grid = [-1.0, 0.0, 0.05, 0.15, 0.25, 0.5, 1.0, 2.0, 3.0, 10.0]
    # u = 0: only minimum 2; 0.05: + minimum 4 (isolated); 0.15: + 0; 0.25: + 1; 0.5: + 3;
    # then merges at 1, 2, 3 leave {0, 1, 2, 3} and {4}
    assert count_components(LEVELS, merges, grid) == [0, 1, 2, 3, 4, 5, 4, 3, 2, 2]
    assert count_components(LEVELS, [], [10.0]) == [5]
    assert count_components([], [], [0.0]) == [0]


def _reference(minimum_levels, saddle):
    """Brute force, independent of the module: Kruskal with a list-based union-find."""
    k = len(minimum_levels)
    parent = list(range(k))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    edges = sorted(
        (max(saddle[i, j], minimum_levels[i], minimum_levels[j]), i, j)
        for i in range(k)
        for j in range(i + 1, k)
        if math.isfinite(saddle[i, j])
    )
    cluster, tree = list(range(k)), []
    for level, i, j in edges:
        ri, rj = root(i), root(j)
        if ri != rj:
            tree.append([level, cluster[ri], cluster[rj], k + len(tree)])
            parent[rj] = ri
            cluster[ri] = k + len(tree) - 1

    def joined(u):  # leaf -> component at level u (pairs with level <= u joined)
        comp = list(range(k))
        for level, i, j in edges:
            if level <= u:
                old, new = comp[j], comp[i]
                comp = [new if c == old else c for c in comp]
        return comp

    def n_u(u):
        comp = joined(u)
        return len({comp[i] for i in range(k) if minimum_levels[i] <= u})

    def bottleneck(i, j):  # the lowest saddle-matrix value at which i and j are joined
        for u in sorted({v for v in saddle.ravel()} | {INF}):
            comp = list(range(k))
            for p in range(k):
                for q in range(p + 1, k):
                    if saddle[p, q] <= u:
                        comp = [comp[p] if c == comp[q] else c for c in comp]
            if comp[i] == comp[j]:
                return u
        return INF

    return tree, n_u, bottleneck


def _random_case(rng):
    k = int(rng.integers(2, 8))
    # integer levels give ties; some negative; minima drawn from the same range, so some
    # minima lie above saddles of their pairs
    s = rng.integers(-2, 6, size=(k, k)).astype(float) * rng.choice([1.0, 0.25])
    s = np.minimum(s, s.T)
    never = rng.uniform(size=(k, k)) < rng.uniform(0.0, 0.6)
    s[never | never.T] = INF
    levels = [float(v) for v in rng.integers(-2, 6, size=k) * 0.5]
    np.fill_diagonal(s, levels)
    return levels, s


def test_merge_tree_n_u_and_bottlenecks_against_brute_force():
    rng = np.random.default_rng(7)
    seen_ties = seen_never = seen_high_minimum = 0
    for case in range(50):
        levels, s = _random_case(rng)
        k = len(levels)
        tree, n_u, bottleneck = _reference(levels, s)
        merges = merge_tree(levels, s)
        assert merges == tree, case
        b = bottleneck_levels(s)
        for i in range(k):
            for j in range(i + 1, k):
                assert b[i, j] == b[j, i] == bottleneck(i, j), (case, i, j)
        np.testing.assert_array_equal(
            np.diag(b),
            np.minimum(np.diag(s), [min(s[i, j] for j in range(k) if j != i) for i in range(k)]),
        )
        # at every merge level and minimum level exactly (u == level joins), just below
        # and above them, and outside everything
        marks = {m[0] for m in tree} | set(levels)
        grid = sorted(
            marks | {v - 0.01 for v in marks} | {v + 0.01 for v in marks} | {-100.0, 100.0, INF}
        )
        assert count_components(levels, merges, grid) == [n_u(u) for u in grid], case
        merge_levels = [m[0] for m in tree]
        seen_ties += len(set(merge_levels)) < len(merge_levels)
        seen_never += len(tree) < k - 1
        seen_high_minimum += any(
            s[i, j] < max(levels[i], levels[j]) for i in range(k) for j in range(i + 1, k)
        )
    assert seen_ties and seen_never and seen_high_minimum  # the cases cover each


def test_lowest_level_n_u_does_not_depend_on_float_ties_between_equal_minima():
    """Two minima equal up to float32 rounding, merged (upper bound) only well above: at the
    lowest minimum's level both are in Omega_u, whichever came out a hair lower -- also at
    zero, where a relative tie needs the minima's own scale."""
    merges = [[0.5, 0, 1, 3]]
    for own in (
        [0.1, 0.1],
        [0.1, float(np.nextafter(np.float32(0.1), np.float32(1)))],
        [0.0, 1e-12],
    ):
        for order in (own, own[::-1]):
            assert count_components(order + [0.3], merges, [min(order), 0.5]) == [2, 2], order
    # a minimum clearly above the level is not in Omega_u
    assert count_components([0.0, 1e-3, 0.3], merges, [0.0]) == [1]


def test_count_components_exactly_at_a_merge_level():
    merges = [[1.0, 0, 1, 3], [2.0, 3, 2, 4]]
    u = [1.0 - 1e-4, 1.0, 2.0 - 2e-4, 2.0]
    assert count_components([0.0, 0.0, 0.0], merges, u) == [3, 2, 2, 1]
    # a level a float rounding below a merge (or a minimum) counts as at it
    u = [np.nextafter(1.0, -INF), 1.0 - 5e-6, np.nextafter(2.0, -INF)]
    assert count_components([0.0, 0.0, 0.0], merges, u) == [2, 2, 1]
    # a merge the tree never made (None) never joins; negative levels are fine
    assert count_components([-1.0, -1.0], [[None, 0, 1, 2]], [-1.0, 10.0, INF]) == [2, 2, 2]
    assert count_components([-3.0, -2.0], [[-1.5, 0, 1, 2]], [-2.5, -2.0, -1.5]) == [1, 2, 1]


# ------------------------------------------------------------------------------ convex


def test_convex_minima_form_one_component(linreg_models, tmp_path):
    paths, data = linreg_models["paths"], linreg_models["data"]
    out = tmp_path / "convex.h5"
    result = execute(RunSpec(models=paths, data=data, probes=["components"], out=str(out)))[
        "results"
    ]["components"]
    landscape = Landscape(load_model(paths[0]), load_data(data))
    levels = landscape.levels(np.stack([landscape.theta_of(load_model(p)) for p in paths]))
    assert len(set(np.round(levels, 6))) == 4  # four different levels
    assert result["minima"] == [f"linreg_{k}" for k in range(4)]
    assert result["minimum_levels"] == pytest.approx(list(levels), rel=1e-6)
    # every pair connects at max(E_i, E_j): single linkage merges at E_(2), ..., E_(K)
    ordered = sorted(levels)
    assert result["merge_levels"] == pytest.approx(ordered[1:], rel=1e-5)
    for merge in result["merge_tree"]:
        assert merge[0] <= max(levels) * (1 + TOL)
    assert [m[3] for m in result["merge_tree"]] == [4, 5, 6]
    assert result["highest_merge_level"] == pytest.approx(max(levels), rel=1e-5)
    # default grid: 25 levels from the lowest minimum to 10% above the highest merge
    grid = result["levels"]
    assert len(grid) == 25
    assert grid[0] == pytest.approx(min(levels), rel=1e-6)
    assert grid[-1] == pytest.approx(1.1 * result["highest_merge_level"], rel=1e-6)
    assert result["n_components"] == [1] * 25  # one component at every level
    assert len(result["pairs"]) == 6
    for key, pair in result["pairs"].items():
        i, j = map(int, key.split("-"))
        top = max(levels[i], levels[j])
        assert pair["bisections"] == 0 and pair["decided_by"] in ("linear", "union-find")
        assert pair["linear_max"] == pytest.approx(top, rel=1e-5)
        assert abs(pair["barrier"]) <= TOL * top
    with Store.open(out) as store:
        run = store.run("components")
        assert run.status == "complete"
        assert run.has("pair_0_3/linear_level")


def test_convex_components_on_an_explicit_grid(linreg_models, tmp_path):
    paths, data = linreg_models["paths"][:3], linreg_models["data"]
    landscape = Landscape(load_model(paths[0]), load_data(data))
    levels = landscape.levels(np.stack([landscape.theta_of(load_model(p)) for p in paths]))
    lo, hi = float(levels.min()), float(levels.max())
    grid = [0.5 * lo, lo * (1 + 1e-6), 0.5 * (lo + hi), hi * (1 + 1e-6), 2 * hi, 100 * hi]
    result = execute(
        RunSpec(
            models=paths,
            data=data,
            probes=["components"],
            options={"levels": ",".join(repr(u) for u in grid)},
            out=str(tmp_path / "grid.h5"),
        )
    )["results"]["components"]
    assert result["levels"] == pytest.approx(grid)
    # below every minimum: no component holds a sampled minimum; from the lowest on: one
    assert result["n_components"] == [0, 1, 1, 1, 1, 1]


# ------------------------------------------------------------------------- two valleys

VALLEY_MINIMA = {
    "left": (-1.0, 0.0),
    "left_up": (-1.0, 0.02),
    "right": (1.0, 0.0),
    "right_up": (1.0, 0.02),
}
VALLEY_GRID = [-0.1, 0.0001, 0.001, 0.1, 0.3, 0.45, 0.489, 0.52, 0.6, 1.0, 2.0]


@pytest.fixture(scope="module")
def valley_components(two_valley, tmp_path_factory):
    paths = [two_valley.save(name, w) for name, w in VALLEY_MINIMA.items()]
    out = tmp_path_factory.mktemp("valley_components") / "c.h5"
    spec = RunSpec(
        models=paths,
        data=two_valley.data,
        probes=["components"],
        options={
            "learning_rate": 0.05,
            "points": 40,
            "tolerance": TOL,
            "levels": ",".join(str(u) for u in VALLEY_GRID),
        },
        custom_objects=two_valley.custom_objects,
        out=str(out),
    )
    return execute(spec)["results"]["components"], out


def test_two_valleys_have_two_components_below_the_saddle(two_valley, valley_components):
    result, _ = valley_components
    s = two_valley.SADDLE
    expected_levels = two_valley.energy(np.array(list(VALLEY_MINIMA.values())))
    assert result["minima"] == list(VALLEY_MINIMA)
    assert result["minimum_levels"] == pytest.approx(list(expected_levels), abs=1e-7)
    assert max(result["minimum_levels"]) < VALLEY_GRID[2]
    assert result["levels"] == pytest.approx(VALLEY_GRID)
    counts = dict(zip(VALLEY_GRID, result["n_components"]))
    assert counts[-0.1] == 0
    assert counts[0.0001] == 2  # only the two exact minima lie below it, one per valley
    for u in VALLEY_GRID:
        if max(result["minimum_levels"]) < u < s * (1 - TOL):
            assert counts[u] == 2, u
        elif u > s * (1 + TOL):
            assert counts[u] == 1, u
    # N_u as bounds: the true N_u (2 between the minima and s, 1 above) lies within them at
    # every level, they agree away from s, and the band where they differ holds s
    assert result["n_components_upper"] == result["n_components"]
    lower = dict(zip(VALLEY_GRID, result["n_components_lower"]))
    for u in VALLEY_GRID:
        truth = 0 if u < 0 else (2 if u < s else 1)
        assert lower[u] <= truth <= counts[u], u
        if not s * (1 - 0.05) <= u <= s * (1 + TOL):
            assert lower[u] == counts[u], u
    # 0.489: the cross pairs' failed runs aimed at about 0.485 (alpha 0.97 of 0.5), so the
    # lower bound joins the valleys there while no path is known below s: unresolved
    assert (lower[0.489], counts[0.489]) == (1, 2)
    assert result["unresolved"] and all(
        s * (1 - 0.05) <= first <= last <= s * (1 + TOL) for first, last in result["unresolved"]
    )
    # merge tree: each valley's pair first (far below s), then the two valleys at s
    tree = result["merge_tree"]
    assert len(tree) == 3
    assert sorted(sorted(m[1:3]) for m in tree[:2]) == [[0, 1], [2, 3]]
    assert [m[3] for m in tree] == [4, 5, 6] and sorted(tree[2][1:3]) == [4, 5]
    assert all(m[0] <= 1e-3 for m in tree[:2])
    top = result["highest_merge_level"]
    assert top == result["merge_levels"][-1] == tree[2][0]
    assert s - 1e-3 <= top <= s * (1 + TOL)


def test_two_valley_pairs(two_valley, valley_components):
    result, out = valley_components
    s = two_valley.SADDLE
    pairs = result["pairs"]
    assert set(pairs) == {f"{i}-{j}" for i in range(4) for j in range(i + 1, 4)}
    for key in ("0-1", "2-3"):  # same valley: the straight line stays in it
        assert pairs[key]["decided_by"] == "linear" and pairs[key]["bisections"] == 0
        assert pairs[key]["linear_max"] <= 2.5e-4
        assert abs(pairs[key]["barrier"]) <= 1e-6
    cross = {k: p for k, p in pairs.items() if k not in ("0-1", "2-3")}
    minima = np.array(list(VALLEY_MINIMA.values()))
    for key, pair in cross.items():
        lower, upper = pair["saddle_level"]["lower"], pair["saddle_level"]["upper"]
        i, j = map(int, key.split("-"))
        t = np.linspace(0, 1, 101)[:, None]  # the probe's default grid
        line = two_valley.energy((1 - t) * minima[i] + t * minima[j])
        assert pair["linear_max"] == pytest.approx(line.max(), rel=1e-5)
        assert 0.98 <= pair["linear_max"] <= 1.0
        assert lower <= s + TOL * upper, key
        assert s - 1e-3 <= upper <= s * (1 + TOL), key
        assert upper - lower <= (TOL + 0.03) * upper, key  # DSS resolution: 1 - alpha
        assert pair["decided_by"] == "dss-bisection"
    # the cheapest cross pair (lowest straight-line maximum) is bisected first; its path,
    # chained with the within-valley pairs, bounds every other cross pair from above
    first = min(cross, key=lambda k: cross[k]["linear_max"])
    assert all(
        p["saddle_level"]["upper"] <= cross[first]["saddle_level"]["upper"] * (1 + 1e-9)
        for p in cross.values()
    )
    assert result["highest_merge_level"] == pytest.approx(
        min(p["saddle_level"]["upper"] for p in cross.values())
    )
    with Store.open(out) as store:
        run = store.run("components")
        assert run.status == "complete"
        assert run.has(f"pair_{first.replace('-', '_')}/bisect_0/order")
        assert not run.has("pair_0_1/bisect_0/order")


def test_n_u_bounds_reach_tables_and_frames(valley_components):
    """show's table prints N_u as 'lower-upper' where the bounds differ, and the levels
    DataFrame carries both bounds beside the level."""
    from keras_landscape.plugins.components import components_tables
    from keras_landscape.report.frames import frames

    result, out = valley_components
    levels = frames(out, "components")["levels"]
    assert list(levels["level"]) == pytest.approx(VALLEY_GRID)
    assert list(levels["n_components_lower"]) == result["n_components_lower"]
    assert list(levels["n_components_upper"]) == result["n_components_upper"]
    nu = next(t for t in components_tables("components", result) if t["title"].endswith("N_u"))
    cells = [row[2] for row in nu["rows"]]
    pairs = sorted(zip(VALLEY_GRID, result["n_components_lower"], result["n_components_upper"]))
    assert {f"{lo}-{hi}" if lo != hi else str(hi) for _, lo, hi in pairs} == set(map(str, cells))


def test_a_store_from_before_the_bounds_shows_upper_bounds_only():
    from keras_landscape.plugins.components import components_tables
    from keras_landscape.report.census import n_u_runs
    from keras_landscape.report.tables import n_u_bounds

    old = {"minima": ["a", "b"], "minimum_levels": [0.1, 0.1], "levels": [0.1, 0.5]}
    old.update({"n_components": [2, 1], "merge_tree": [[0.5, 0, 1, 2]]})
    nu = next(t for t in components_tables("c", old) if t["title"].endswith("N_u"))
    assert [row[2] for row in nu["rows"]] == ["<=2", "<=1"]
    assert any("upper bounds only" in note for note in nu["notes"])
    assert n_u_runs(n_u_bounds(old)) == "<=2 at 0.1; <=1 at 0.5"
