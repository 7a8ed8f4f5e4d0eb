"""Permutation alignment of two parameter vectors by weight matching (Ainsworth et al. 2023).

Permuting the hidden units of a network (the output units of every Dense/Conv2D layer but the
last, together with everything indexed by those units) leaves the network function, and so the
loss E, unchanged: E(g.theta) == E(theta). Weight matching picks, for model B, the permutation
g that brings B's weights closest to model A's, so that landscape probes between A and g.B
measure in the quotient space of the permutation symmetry (see docs/science.md, "Energy barriers").

The objective is sum over every trainable variable W of <W_A, g.W_B>, maximised by coordinate
descent: one hidden layer at a time (in a seeded random order each sweep), its permutation is
the solution of a linear assignment problem whose cost matrix collects the inner products of
every weight that touches those units: the layer's kernel columns (rows of units' incoming
weights), its bias, the gamma/beta of a following BatchNormalization, and the next layer's
kernel slices for those units (with the other layers' current permutations applied). A layer's
permutation changes only if that strictly raises the objective; sweeps stop when one changes
nothing or after `max_iterations` sweeps. Coordinate descent can stop at a local optimum, so it
is run from two starts and the better result is kept: the identity (which guarantees
distance_after <= distance_before) and a forward pass that matches each layer, input to output,
on the weights feeding its units only (which recovers an exactly permuted copy of A).

The aligned theta is an exact rearrangement of theta_b's entries, so the network function is
unchanged up to floating-point summation order. BatchNormalization moving statistics are
non-trainable and not part of theta; an aligned model that is exported or evaluated with B's
own statistics needs them permuted too: use `permute_non_trainable`.

Permutation convention: `permutations[name][i] = j` means the aligned model's unit i is B's
unit j, i.e. aligned = take(B, perm, axis=units).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from keras_landscape.engine.params import ParameterLayout
from keras_landscape.errors import UserError

SUPPORTED_LAYERS = (
    "Weight matching supports single-input, single-output Sequential or functional models that "
    "are a plain chain of layers (nested Sequential/functional chains are fine): Dense and "
    "Conv2D (channels_last, groups=1, with or without bias, not LoRA or quantized, trainable), "
    "BatchNormalization over the last axis, and the parameter-free layers Activation, ReLU, "
    "LeakyReLU, ELU, Softmax, Identity, Dropout, SpatialDropout1D/2D, GaussianNoise, "
    "GaussianDropout, AlphaDropout, ActivityRegularization, Flatten, MaxPooling2D, "
    "AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, ZeroPadding2D, Cropping2D "
    "and UpSampling2D (all channels_last). Every hidden Dense/Conv2D layer's output units are "
    "permuted; the last one's outputs are not. Recurrent, embedding, attention, custom and "
    "subclassed layers, Reshape/Lambda, and layers with several inputs (Add, Concatenate, "
    "residual connections) are not supported."
)


@dataclass
class Alignment:
    """The result of `weight_matching`.

    Attributes:
        theta: B's theta with its hidden units permuted to match A (same dtype as theta_b).
        permutations: per hidden Dense/Conv2D layer, keyed by its kernel's variable path, the
            permutation applied: aligned unit i is B's unit permutations[path][i].
        iterations: number of coordinate-descent sweeps of the start that was kept.
        distance_before: ||theta_b - theta_a||.
        distance_after: ||theta - theta_a||.
    """

    theta: np.ndarray
    permutations: dict[str, list[int]]
    iterations: int
    distance_before: float
    distance_after: float


@dataclass(frozen=True)
class _Role:
    """How one variable is indexed by permutation groups.

    `index` is the variable's position in model.trainable_variables (or non_trainable); the
    variable is viewed with shape `view` (C order) and `axes[k]` names the group permuting
    view axis k (None: not permuted). `owner` is the group whose units the variable feeds
    (a kernel's or bias's output group, a BatchNorm's group), None for the last layer.
    """

    index: int
    view: tuple[int, ...]
    axes: tuple[str | None, ...]
    owner: str | None


@dataclass
class _Plan:
    groups: dict[str, int] = field(default_factory=dict)  # group name -> number of units
    trainable: list[_Role] = field(default_factory=list)
    non_trainable: list[_Role] = field(default_factory=list)


def _unsupported(layer, reason: str) -> UserError:
    name = getattr(layer, "name", "?")
    return UserError(
        f"Weight matching cannot align layer {name!r} ({type(layer).__name__}): {reason}. "
        + SUPPORTED_LAYERS
    )


def _layer_classes():
    import keras

    L = keras.layers
    passthrough = (
        L.InputLayer,
        L.Activation,
        L.ReLU,
        L.LeakyReLU,
        L.ELU,
        L.Softmax,
        L.Identity,
        L.Dropout,
        L.SpatialDropout1D,
        L.SpatialDropout2D,
        L.GaussianNoise,
        L.GaussianDropout,
        L.AlphaDropout,
        L.ActivityRegularization,
    )
    spatial = (
        L.MaxPooling2D,
        L.AveragePooling2D,
        L.GlobalAveragePooling2D,
        L.GlobalMaxPooling2D,
        L.ZeroPadding2D,
        L.Cropping2D,
        L.UpSampling2D,
    )
    return L, passthrough, spatial


def _keras_tensors(value) -> list[dict]:
    """The Keras tensors a serialized node argument holds (its args and kwargs, nested)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value]
        return [t for item in value.values() for t in _keras_tensors(item)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _keras_tensors(item)]
    return []


def _ends(value) -> list:
    """A functional config's input_layers / output_layers as a list of [name, node, index]
    (one end is written flat: [name, node, index])."""
    if len(value) == 3 and isinstance(value[0], str):
        return [value]
    return list(value)


def _chain(model) -> list[tuple[object, tuple]]:
    """The model's layers as a chain [(layer, input shape)], input to output, or UserError.

    Read through Keras's public API only: a Sequential model's `layers` and each layer's
    `input`; a functional model (a `keras.Model` that is a `keras.Function`) through its
    `get_config()` graph (each operation's inbound nodes, with the shapes of the tensors
    they take) and its `operations`.
    """
    import keras

    if isinstance(model, keras.Sequential):
        if type(model).call is not keras.Sequential.call:
            raise _unsupported(model, "it is a Sequential subclass that overrides call()")
        try:
            model.inputs  # noqa: B018 (raises until an input shape is known)
            chain = [(layer, tuple(layer.input.shape)) for layer in model.layers]
        except (AttributeError, ValueError):
            raise _unsupported(
                model,
                "the Sequential model has no known input shape; start it with "
                "keras.Input(shape) or build it",
            ) from None
    else:
        if not (isinstance(model, keras.Model) and isinstance(model, keras.Function)):
            raise _unsupported(
                model,
                "subclassed models hide their wiring in call(), so the permutation "
                "structure cannot be read; rebuild it as a Sequential or functional model",
            )
        # the class whose call() runs: Keras's own for a functional model
        owner = next(k for k in type(model).__mro__ if "call" in vars(k))
        if not (issubclass(owner, keras.Function) and owner.__module__.startswith("keras.")):
            raise _unsupported(model, "it is a functional model subclass that overrides call()")
        try:
            config = model.get_config()  # the graph: each layer's inbound nodes and shapes
        except (NotImplementedError, TypeError, ValueError) as error:
            raise _unsupported(model, f"its config cannot be read ({error})") from None
        inputs, outputs = _ends(config["input_layers"]), _ends(config["output_layers"])
        if len(inputs) != 1 or len(outputs) != 1:
            raise _unsupported(
                model,
                f"it has {len(inputs)} inputs and {len(outputs)} outputs (one of each needed)",
            )
        entries = {entry["name"]: entry for entry in config["layers"]}
        operations = {op.name: op for op in model.operations}  # layers and raw ops
        chain = []
        name, node_index = outputs[0][0], outputs[0][1]
        while entries[name]["class_name"] != "InputLayer":
            op = operations[name]
            node_inputs = _keras_tensors(entries[name]["inbound_nodes"][node_index])
            if len(node_inputs) != 1:
                raise _unsupported(
                    op,
                    f"it takes {len(node_inputs)} input tensors (a branch, merge or residual "
                    "connection); only a plain chain of single-input layers is supported",
                )
            tensor = node_inputs[0]["config"]
            chain.append((op, tuple(tensor["shape"])))
            name, node_index = tensor["keras_history"][0], tensor["keras_history"][1]
        if name != inputs[0][0]:
            raise _unsupported(model, "its output does not depend on its input through one chain")
        chain.reverse()
    flat: list[tuple[object, tuple]] = []
    for op, shape in chain:
        if isinstance(op, keras.Model):
            flat.extend(_chain(op))
        else:
            flat.append((op, shape))
    layers = [op for op, _ in flat]
    for op in layers:
        if sum(o is op for o in layers) > 1:
            raise _unsupported(op, "it is called more than once (shared weights)")
    return flat


def _plan(model) -> _Plan:
    """Which variables each hidden-unit permutation touches, and along which axis."""
    L, passthrough, spatial = _layer_classes()
    chain = _chain(model)
    t_index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    n_index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    weighted = [i for i, (op, _) in enumerate(chain) if type(op) in (L.Dense, L.Conv2D)]
    last = weighted[-1] if weighted else -1
    plan = _Plan()
    covered: set[int] = set()
    group: str | None = None  # the group permuting the current tensor's last axis
    rep = 1  # spatial positions folded into the last axis by Flatten (channels-last)

    def role(layer, variable, axes_full, view, owner) -> None:
        if variable is None:
            return
        if id(variable) in t_index:
            plan.trainable.append(_Role(t_index[id(variable)], view, axes_full, owner))
            covered.add(t_index[id(variable)])
        elif id(variable) in n_index:
            plan.non_trainable.append(_Role(n_index[id(variable)], view, axes_full, owner))
        else:
            raise _unsupported(layer, f"its variable {variable.path} is not one of the model's")

    for i, (layer, in_shape) in enumerate(chain):
        kind = type(layer)
        if kind in (L.Dense, L.Conv2D):
            if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
                raise _unsupported(layer, "LoRA or quantized layers are not supported")
            if kind is L.Conv2D and (layer.data_format != "channels_last" or layer.groups != 1):
                raise _unsupported(layer, "only channels_last Conv2D with groups=1 is supported")
            kernel, bias = layer.kernel, layer.bias  # (no LoRA: the variable itself)
            if id(kernel) not in t_index or (bias is not None and id(bias) not in t_index):
                raise _unsupported(
                    layer, "its weights are not trainable (frozen), so they are not in theta"
                )
            unknown = [w.path for w in layer.trainable_weights if w is not kernel and w is not bias]
            if unknown:
                raise _unsupported(layer, f"it has unexpected trainable weights {unknown}")
            shape = tuple(int(d) for d in kernel.shape)
            out = kernel.path if i != last else None
            if out is not None:
                if out in plan.groups:
                    raise _unsupported(layer, f"its kernel path {out!r} is not unique")
                plan.groups[out] = shape[-1]
            if kind is L.Dense and group is not None and rep > 1:
                n_in = plan.groups[group]
                if shape[0] != rep * n_in:
                    raise _unsupported(layer, f"kernel rows {shape[0]} != {rep} x {n_in}")
                role(layer, kernel, (None, group, out), (rep, n_in, shape[-1]), out)
            else:
                role(layer, kernel, (None,) * (len(shape) - 2) + (group, out), shape, out)
            role(layer, bias, (out,), (shape[-1],), out)
            group, rep = out, 1
        elif kind is L.BatchNormalization:
            if layer.axis not in (-1, len(in_shape) - 1):
                raise _unsupported(layer, f"it normalises axis {layer.axis}, not the last axis")
            unknown = [
                w.path
                for w in layer.trainable_weights
                if w is not layer.gamma and w is not layer.beta
            ]
            if unknown:
                raise _unsupported(layer, f"it has unexpected trainable weights {unknown}")
            for variable in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance):
                if variable is None:
                    continue
                size = int(variable.shape[0])
                view = (rep, size // rep) if group is not None and rep > 1 else (size,)
                role(layer, variable, (None, group) if len(view) == 2 else (group,), view, group)
        elif kind is L.Flatten:
            if layer.data_format != "channels_last" and len(in_shape) > 2:
                raise _unsupported(layer, "only channels_last Flatten is supported")
            spatial_dims = in_shape[1:-1]
            if any(d is None for d in spatial_dims):
                raise _unsupported(layer, f"its input shape {in_shape} is not fully known")
            rep *= int(np.prod(spatial_dims, dtype=np.int64))
        elif kind in spatial:
            if layer.data_format != "channels_last":
                raise _unsupported(layer, "only channels_last spatial layers are supported")
        elif kind not in passthrough:
            if getattr(layer, "trainable_weights", None):
                raise _unsupported(layer, "it has trainable weights of an unsupported kind")
            raise _unsupported(
                layer,
                "it is not a known permutation-equivariant layer (custom, Lambda, "
                "Reshape-like layers and raw keras.ops calls are refused)",
            )
    missing = [
        ParameterLayout.from_model(model).paths[i]
        for i in range(len(model.trainable_variables))
        if i not in covered
    ]
    if missing:
        raise _unsupported(model, f"trainable variables {missing} are outside the layer chain")
    return plan


def _permute(arrays: list[np.ndarray], roles: list[_Role], perms: dict, skip: str | None = None):
    """`arrays` with every role's axes permuted (group `skip` left as is); others shared."""
    out = list(arrays)
    for r in roles:
        view = np.asarray(arrays[r.index]).reshape(r.view)
        for axis, g in enumerate(r.axes):
            if g is not None and g != skip and g in perms:
                view = np.take(view, perms[g], axis=axis)
        out[r.index] = view.reshape(np.shape(arrays[r.index]))
    return out


def _check_permutations(plan: _Plan, permutations: dict) -> dict[str, np.ndarray]:
    if set(permutations) != set(plan.groups):
        raise UserError(
            f"The permutations are keyed {sorted(permutations)} but this model's hidden layers "
            f"are {sorted(plan.groups)}: pass the permutations of an Alignment of this model."
        )
    perms = {}
    for g, p in permutations.items():
        p = np.asarray(p, dtype=np.int64)
        if p.shape != (plan.groups[g],) or not np.array_equal(np.sort(p), np.arange(len(p))):
            raise UserError(f"permutations[{g!r}] is not a permutation of {plan.groups[g]} units.")
        perms[g] = p
    return perms


def _as_theta(layout: ParameterLayout, theta, name: str) -> np.ndarray:
    theta = np.asarray(theta)
    if theta.shape != (layout.size,):
        raise UserError(
            f"{name} has shape {theta.shape} but the model has {layout.size} trainable "
            "parameters: pass flat vectors in ParameterLayout.from_model(model) order."
        )
    if not np.all(np.isfinite(theta)):
        raise UserError(f"{name} contains NaN or infinite values; it cannot be aligned.")
    return theta


def permute_theta(model, theta: np.ndarray, permutations: dict[str, list[int]]) -> np.ndarray:
    """Apply hidden-unit permutations (as in `Alignment.permutations`) to a flat theta.

    Args:
        model: built Keras model giving the architecture.
        theta: flat parameters in `ParameterLayout.from_model(model)` order.
        permutations: per hidden layer (kernel path), aligned unit i = theta's unit perm[i].

    Returns:
        The permuted theta (same dtype); the network function is unchanged.
    """
    layout, plan = ParameterLayout.from_model(model), _plan(model)
    theta = _as_theta(layout, theta, "theta")
    arrays = _permute(
        layout.unflatten(theta), plan.trainable, _check_permutations(plan, permutations)
    )
    return np.concatenate([a.ravel() for a in arrays]).astype(theta.dtype, copy=False)


def permute_non_trainable(
    model, non_trainable_values: list[np.ndarray], permutations: dict[str, list[int]]
) -> list[np.ndarray]:
    """Permute the non-trainable state that is indexed by hidden units.

    BatchNormalization moving mean/variance (and gamma/beta of a frozen BatchNormalization)
    are not in theta. A model evaluated or exported with the aligned theta and B's own
    non-trainable state computes B's function only if that state is permuted the same way.

    Args:
        model: built Keras model giving the architecture.
        non_trainable_values: arrays in `model.non_trainable_variables` order (e.g. from
            `keras_landscape.engine.params.non_trainable_state` of model B).
        permutations: `Alignment.permutations`.

    Returns:
        New arrays in the same order; entries not indexed by hidden units (RNG seeds,
        statistics of layers after the last hidden layer) are returned unchanged (copied).
    """
    plan = _plan(model)
    values = [np.asarray(v) for v in non_trainable_values]
    expected = [tuple(int(d) for d in v.shape) for v in model.non_trainable_variables]
    if [tuple(v.shape) for v in values] != expected:
        raise UserError(
            f"Expected {len(expected)} non-trainable arrays of shapes {expected}, got "
            f"{[tuple(v.shape) for v in values]} (model.non_trainable_variables order)."
        )
    permuted = _permute(values, plan.non_trainable, _check_permutations(plan, permutations))
    return [np.array(v, copy=True) for v in permuted]


def _cost(plan: _Plan, a_arrays, b_arrays, perms, g: str, roles: list[_Role]) -> np.ndarray:
    """cost[i, j] = inner product of A's weights at unit i with (permuted) B's at unit j."""
    n = plan.groups[g]
    cost = np.zeros((n, n))
    b_perm = _permute(b_arrays, roles, perms, skip=g)
    for r in roles:
        axis = r.axes.index(g)
        wa = np.moveaxis(a_arrays[r.index].reshape(r.view), axis, 0).reshape(n, -1)
        wb = np.moveaxis(b_perm[r.index].reshape(r.view), axis, 0).reshape(n, -1)
        cost += wa @ wb.T
    return cost


def _assign(cost: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The assignment maximising cost, or `current` unless that strictly improves on it."""
    from scipy.optimize import linear_sum_assignment

    _, cols = linear_sum_assignment(cost, maximize=True)
    rows = np.arange(len(cols))
    old, new = cost[rows, current].sum(), cost[rows, cols].sum()
    return cols if new > old + 1e-12 * max(1.0, abs(old)) else current


def _descend(plan: _Plan, a_arrays, b_arrays, start: dict, max_sweeps: int, seed: int):
    """Coordinate ascent on sum <W_A, g.W_B> from `start`: (permutations, sweeps done)."""
    perms = dict(start)
    touching = {g: [r for r in plan.trainable if g in r.axes] for g in plan.groups}
    names = list(plan.groups)
    rng = np.random.default_rng(seed)
    sweeps = 0
    while names and sweeps < max_sweeps:
        sweeps += 1
        changed = False
        for g in (names[k] for k in rng.permutation(len(names))):
            new = _assign(_cost(plan, a_arrays, b_arrays, perms, g, touching[g]), perms[g])
            changed |= new is not perms[g]
            perms[g] = new
        if not changed:
            break
    return perms, sweeps


def weight_matching(
    model, theta_a: np.ndarray, theta_b: np.ndarray, max_iterations: int = 100, seed: int = 0
) -> Alignment:
    """Permute B's hidden units to bring theta_b as close as possible to theta_a.

    Args:
        model: built Keras model giving the architecture (its weights are not read or changed).
        theta_a: flat parameters of model A, in `ParameterLayout.from_model(model)` order.
        theta_b: flat parameters of model B, same layout.
        max_iterations: maximum number of coordinate-descent sweeps over the hidden layers.
        seed: seed of the random layer order of each sweep (the result is deterministic).

    Returns:
        The `Alignment`; its theta computes the same function as theta_b.

    Raises:
        UserError: unsupported architecture (see `SUPPORTED_LAYERS`), or bad theta shapes.
    """
    if int(max_iterations) < 1:
        raise UserError(f"max_iterations must be at least 1, got {max_iterations}.")
    layout, plan = ParameterLayout.from_model(model), _plan(model)
    theta_a = _as_theta(layout, theta_a, "theta_a")
    theta_b = _as_theta(layout, theta_b, "theta_b")
    a_arrays = [x.astype(np.float64) for x in layout.unflatten(theta_a)]
    b_arrays = [x.astype(np.float64) for x in layout.unflatten(theta_b)]
    identity = {g: np.arange(n) for g, n in plan.groups.items()}
    forward = dict(identity)
    for g in plan.groups:  # input to output, matching only the weights feeding each unit
        feeding = [r for r in plan.trainable if r.owner == g]
        forward[g] = _assign(_cost(plan, a_arrays, b_arrays, forward, g, feeding), forward[g])
    best = None
    for start in (identity, forward):
        perms, sweeps = _descend(plan, a_arrays, b_arrays, start, int(max_iterations), seed)
        permuted = _permute(b_arrays, plan.trainable, perms)
        value = sum(float(np.vdot(a, b)) for a, b in zip(a_arrays, permuted))
        if best is None or value > best[0] + 1e-12 * max(1.0, abs(best[0])):
            best = (value, perms, sweeps)
    _, perms, iterations = best
    aligned = _permute(layout.unflatten(theta_b), plan.trainable, perms)
    theta = np.concatenate([a.ravel() for a in aligned]).astype(theta_b.dtype, copy=False)
    diff_before = theta_b.astype(np.float64) - theta_a
    return Alignment(
        theta=theta,
        permutations={g: [int(i) for i in p] for g, p in perms.items()},
        iterations=iterations,
        distance_before=float(np.linalg.norm(diff_before)),
        distance_after=float(np.linalg.norm(theta.astype(np.float64) - theta_a)),
    )


def weight_matching_on(
    landscape, theta_a: np.ndarray, theta_b: np.ndarray, max_iterations: int = 100, seed: int = 0
) -> Alignment:
    """`weight_matching` on the architecture of `landscape` (the engine's `Landscape`).

    Weight matching walks the Keras model's layers, which the contract the probes use
    (`keras_landscape.contract.LandscapeLike`) does not expose: a probe hands the landscape
    to this function and to `aligned_state` instead of reading its model.
    """
    return weight_matching(landscape.model, theta_a, theta_b, max_iterations, seed)


def aligned_state(landscape, state, permutations: dict[str, list[int]]):
    """A state vector s (see `keras_landscape.engine.state`) permuted with B's hidden units, so that
    the aligned model computes B's function with B's own BatchNorm statistics; None stays
    None (the landscape model's state is used). `landscape` is the engine's `Landscape`."""
    if state is None:
        return None
    layout = landscape.state_layout
    template = [np.asarray(v) for v in landscape.non_trainable]
    values = permute_non_trainable(
        landscape.model, layout.non_trainable_values(state, template), permutations
    )
    return layout.state_of_values(values)
