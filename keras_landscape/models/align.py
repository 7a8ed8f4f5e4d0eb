"""Permutation alignment of two parameter vectors by weight matching (Ainsworth et al. 2023).

Permuting the hidden units of a network leaves the network function, and so the loss E,
unchanged: E(g.theta) == E(theta). Weight matching picks, for model B, the permutation g that
brings B's weights closest to model A's, so that landscape probes between A and g.B measure in
the quotient space of the permutation symmetry (see docs/science.md, "Energy barriers").

Permutation groups. The units a permutation acts on are read from the Keras graph (each
layer's inbound nodes): every Dense/Conv2D layer creates a group (its output units); layers
that act unit by unit carry the group of their input to their output (activations, Dropout,
BatchNormalization, LayerNormalization, pooling, padding); Flatten folds the spatial positions
of channels-last maps into the feature axis (features p * C + c: the group permutes c in every
block p); an elementwise merge (Add, Subtract, Multiply, Average, Maximum, Minimum, or the raw
`x + y` / `x - y` / `x * y` of two tensors of one shape) needs the same permutation on all its
inputs, so it merges their groups (union-find): a residual stream shares one permutation. The
model's inputs and outputs are never permuted: a group that reaches an output (the last layer's
units), or is merged with an input's features (x + f(x) on the inputs), stays fixed.

The objective is sum over every trainable variable W of <W_A, g.W_B>, maximised by coordinate
descent: one group at a time (in a seeded random order each sweep), its permutation is the
solution of a linear assignment problem (scipy.optimize.linear_sum_assignment) whose cost
matrix sums, over every weight axis the group permutes, the inner products of A's and B's
slices along that axis with the other axes' current permutations applied: the producing
layers' kernel columns and biases, BatchNorm/LayerNorm gamma and beta, the consuming layers'
kernel rows. A kernel whose input and output are both in one group (a Dense inside a residual
stream, added back to its own input) makes the objective quadratic in that permutation; the
linear step is then an approximation, so a new permutation is kept only if it strictly raises
the true objective (which also holds for every other step). Sweeps stop when one changes nothing
or after `max_iterations` sweeps. Coordinate descent can stop at a local optimum, so it is run
from two starts and the better result is kept: the identity (which guarantees distance_after <=
distance_before) and a forward pass that matches the groups in graph order, each on the weights
whose other axes are already matched (which recovers an exactly permuted copy of A).

The aligned theta is an exact rearrangement of theta_b's entries, so the network function is
unchanged up to floating-point summation order. BatchNormalization moving statistics are
non-trainable and not part of theta; an aligned model that is exported or evaluated with B's
own statistics needs them permuted too: use `permute_non_trainable`.

Permutation convention: `permutations[name][i] = j` means the aligned model's unit i is B's
unit j, i.e. aligned = take(B, perm, axis=units). A group is named by the kernel path of the
first layer (in graph order) that produces it; `Alignment.groups` lists every layer in it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from keras_landscape.engine.params import ParameterLayout
from keras_landscape.errors import UserError

SUPPORTED_LAYERS = (
    "Weight matching supports Sequential and functional models (nested ones too) built from: "
    "Dense and Conv2D (channels_last, groups=1, with or without bias, not LoRA or quantized, "
    "trainable), BatchNormalization and LayerNormalization over the last axis, the elementwise "
    "merges Add, Subtract, Multiply, Average, Maximum and Minimum (residual connections; also "
    "x + y, x - y, x * y of two tensors of one shape), and the parameter-free layers "
    "Activation, ReLU, LeakyReLU, ELU, Softmax, Identity, Dropout, SpatialDropout1D/2D, "
    "GaussianNoise, GaussianDropout, AlphaDropout, ActivityRegularization, Flatten, "
    "MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, "
    "ZeroPadding2D, Cropping2D and UpSampling2D (all channels_last). Hidden units are "
    "permuted; a residual stream joined by a merge shares one permutation; the model's inputs "
    "and outputs are never permuted. Recurrent, embedding, attention, custom and subclassed "
    "layers or models, Reshape/Lambda, Concatenate, other raw keras.ops calls and layers "
    "called more than once (shared weights) are not supported."
)


@dataclass
class Alignment:
    """The result of `weight_matching`.

    Attributes:
        theta: B's theta with its hidden units permuted to match A (same dtype as theta_b).
        permutations: per permutation group, keyed by the kernel path of the first layer that
            produces it, the permutation applied: aligned unit i is B's unit
            permutations[name][i].
        iterations: number of coordinate-descent sweeps of the start that was kept.
        distance_before: ||theta_b - theta_a||.
        distance_after: ||theta - theta_a||.
        groups: per group (same keys), the kernel paths of every Dense/Conv2D layer whose output
            units it permutes (several where a merge joins a residual stream).
    """

    theta: np.ndarray
    permutations: dict[str, list[int]]
    iterations: int
    distance_before: float
    distance_after: float
    groups: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Role:
    """How one variable is indexed by permutation groups.

    `index` is the variable's position in model.trainable_variables (or non_trainable); the
    variable is viewed with shape `view` (C order) and `axes[k]` names the group permuting
    view axis k (None: not permuted).
    """

    index: int
    view: tuple[int, ...]
    axes: tuple[str | None, ...]


@dataclass
class _Plan:
    groups: dict[str, int] = field(default_factory=dict)  # group name -> units, graph order
    members: dict[str, list[str]] = field(default_factory=dict)  # group -> producing kernels
    trainable: list[_Role] = field(default_factory=list)
    non_trainable: list[_Role] = field(default_factory=list)


@dataclass(frozen=True)
class _Tensor:
    """The permutation structure of a tensor's last axis: the union-find element of its units
    and `rep`, the spatial positions folded into it by Flatten (view (rep, units))."""

    element: int
    rep: int = 1


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
    merges = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
    return L, passthrough, spatial, merges


@functools.cache
def _raw_elementwise_ops() -> tuple[type, ...]:
    """The operation classes of `x + y`, `x - y`, `x * y` on Keras tensors, read from the
    operations of a functional model built with them (public API only)."""
    import keras

    x = keras.Input((1,))
    model = keras.Model(x, [x + x, x - x, x * x])
    return tuple(type(op) for op in model.operations if not isinstance(op, keras.layers.Layer))


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


class _Graph:
    """Walks a model's Keras graph, creating a union-find element per Dense/Conv2D output and
    recording, for every variable, which element permutes each of its axes."""

    def __init__(self, model):
        self.model = model
        self.L, self.passthrough, self.spatial, self.merges = _layer_classes()
        self.t_index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self.n_index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        self.parent: list[int] = []
        self.units: list[int | None] = []
        self.fixed: list[bool] = []
        self.names: list[str | None] = []  # kernel path of the layer creating the element
        self.roles: list[tuple[bool, int, tuple, tuple]] = []  # trainable?, index, view, axes
        self.covered: set[int] = set()
        self.used: set[int] = set()

    # ---------------------------------------------------------------- union-find
    def new(self, units: int | None, name: str | None, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.units.append(units)
        self.fixed.append(fixed)
        self.names.append(name)
        return len(self.parent) - 1

    def find(self, e: int) -> int:
        while self.parent[e] != e:
            self.parent[e] = self.parent[self.parent[e]]
            e = self.parent[e]
        return e

    def union(self, a: int, b: int, layer) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if self.units[a] is not None and self.units[b] is not None:
            if self.units[a] != self.units[b]:
                raise _unsupported(
                    layer, f"it merges groups of {self.units[a]} and {self.units[b]} units"
                )
        a, b = min(a, b), max(a, b)  # the root is the element created first
        self.parent[b] = a
        self.fixed[a] = self.fixed[a] or self.fixed[b]
        if self.units[a] is None:
            self.units[a] = self.units[b]
        return a

    # ---------------------------------------------------------------- variables
    def role(self, layer, variable, view, axes) -> None:
        if variable is None:
            return
        if id(variable) in self.t_index:
            self.roles.append((True, self.t_index[id(variable)], tuple(view), tuple(axes)))
            self.covered.add(self.t_index[id(variable)])
        elif id(variable) in self.n_index:
            self.roles.append((False, self.n_index[id(variable)], tuple(view), tuple(axes)))
        else:
            raise _unsupported(layer, f"its variable {variable.path} is not one of the model's")

    # ---------------------------------------------------------------- the walk
    def walk(self, model, inputs: list[_Tensor] | None) -> list[_Tensor]:
        """The output tensors' structure of `model` called on `inputs` (None: the model's own
        inputs, never permuted)."""
        import keras

        if isinstance(model, keras.Sequential):
            if type(model).call is not keras.Sequential.call:
                raise _unsupported(model, "it is a Sequential subclass that overrides call()")
            try:
                model.inputs  # noqa: B018 (raises until an input shape is known)
                shapes = [tuple(layer.input.shape) for layer in model.layers]
            except (AttributeError, ValueError):
                raise _unsupported(
                    model,
                    "the Sequential model has no known input shape; start it with "
                    "keras.Input(shape) or build it",
                ) from None
            tensors = inputs or [_Tensor(self.new(None, None, fixed=True))]
            for layer, shape in zip(model.layers, shapes):
                tensors = self.apply(layer, tensors, [shape], None)
            return tensors
        if not (isinstance(model, keras.Model) and isinstance(model, keras.Function)):
            raise _unsupported(
                model,
                "subclassed models hide their wiring in call(), so the permutation groups "
                "cannot be read from a graph; rebuild it as a Sequential or functional model "
                "(keras.Model(inputs, outputs)) with the same layers",
            )
        # the class whose call() runs: Keras's own for a functional model
        owner = next(k for k in type(model).__mro__ if "call" in vars(k))
        if not (issubclass(owner, keras.Function) and owner.__module__.startswith("keras.")):
            raise _unsupported(model, "it is a functional model subclass that overrides call()")
        try:
            config = model.get_config()  # the graph: each layer's inbound nodes and shapes
        except (NotImplementedError, TypeError, ValueError) as error:
            raise _unsupported(model, f"its config cannot be read ({error})") from None
        ins, outs = _ends(config["input_layers"]), _ends(config["output_layers"])
        if inputs is None:
            inputs = [_Tensor(self.new(None, None, fixed=True)) for _ in ins]
        if len(ins) != len(inputs):
            raise _unsupported(model, f"it takes {len(ins)} inputs, called with {len(inputs)}")
        entries = {entry["name"]: entry for entry in config["layers"]}
        operations = {op.name: op for op in model.operations}  # layers and raw ops
        done: dict[tuple[str, int], list[_Tensor]] = {}
        for position, (name, node, _) in enumerate(ins):
            done[(name, node)] = [inputs[position]]

        def tensor(name: str, node: int, index: int) -> _Tensor:
            # iterative depth-first evaluation (deep residual nets exceed the recursion limit)
            stack = [(name, node)]
            while stack:
                key = stack[-1]
                if key in done:
                    stack.pop()
                    continue
                if entries[key[0]]["class_name"] == "InputLayer":
                    raise _unsupported(model, f"input {key[0]!r} is not one of its inputs")
                args = entries[key[0]]["inbound_nodes"][key[1]]
                sources = [t["config"] for t in _keras_tensors(args)]
                missing = [
                    (s["keras_history"][0], s["keras_history"][1])
                    for s in sources
                    if (s["keras_history"][0], s["keras_history"][1]) not in done
                ]
                if missing:
                    stack.extend(missing)
                    continue
                stack.pop()
                states = [
                    done[(s["keras_history"][0], s["keras_history"][1])][s["keras_history"][2]]
                    for s in sources
                ]
                shapes = [tuple(s["shape"]) for s in sources]
                done[key] = self.apply(operations[key[0]], states, shapes, args)
            return done[(name, node)][index]

        return [tensor(*end) for end in outs]

    def apply(self, op, inputs: list[_Tensor], shapes: list[tuple], args) -> list[_Tensor]:
        """The output structure of one call of `op` (args: its serialized inbound node, or
        None in a Sequential model), recording its variables' roles."""
        import keras

        L = self.L
        kind = type(op)
        if isinstance(op, keras.Model):
            if id(op) in self.used:
                raise _unsupported(op, "it is called more than once (shared weights)")
            self.used.add(id(op))
            return self.walk(op, inputs)
        if kind in self.merges or (kind in _raw_elementwise_ops() and not isinstance(op, L.Layer)):
            return [self.merge(op, inputs, shapes, args)]
        if len(inputs) != 1:
            raise _unsupported(
                op,
                f"it takes {len(inputs)} input tensors; only elementwise merges may take several",
            )
        if id(op) in self.used:
            raise _unsupported(op, "it is called more than once (shared weights)")
        self.used.add(id(op))
        (x,), (shape,) = inputs, shapes
        if kind in (L.Dense, L.Conv2D):
            return [self.dense(op, x)]
        if kind in (L.BatchNormalization, L.LayerNormalization):
            axis = op.axis
            axes = [axis] if isinstance(axis, int) else list(axis)
            if len(axes) != 1 or axes[0] not in (-1, len(shape) - 1):
                raise _unsupported(op, f"it normalises axis {axis}, not the last axis only")
            own = [w for w in (op.gamma, op.beta) if w is not None]
            unknown = [w.path for w in op.trainable_weights if not any(w is o for o in own)]
            if unknown:
                raise _unsupported(op, f"it has unexpected trainable weights {unknown}")
            stats = (op.moving_mean, op.moving_variance) if kind is L.BatchNormalization else ()
            for variable in (op.gamma, op.beta, *stats):
                if variable is None:
                    continue
                size = int(variable.shape[0])
                self.role(op, variable, (x.rep, size // x.rep), (None, x.element))
            return [x]
        if kind is L.Flatten:
            if op.data_format != "channels_last" and len(shape) > 2:
                raise _unsupported(op, "only channels_last Flatten is supported")
            spatial_dims = shape[1:-1]
            if any(d is None for d in spatial_dims):
                raise _unsupported(op, f"its input shape {shape} is not fully known")
            return [_Tensor(x.element, x.rep * int(np.prod(spatial_dims, dtype=np.int64)))]
        if kind in self.spatial:
            if op.data_format != "channels_last":
                raise _unsupported(op, "only channels_last spatial layers are supported")
            return [x]
        if kind in self.passthrough:
            return [x]
        if getattr(op, "trainable_weights", None):
            raise _unsupported(op, "it has trainable weights of an unsupported kind")
        raise _unsupported(
            op,
            "it is not a known permutation-equivariant layer (custom, Lambda, Reshape-like "
            "layers, Concatenate and raw keras.ops calls other than x + y, x - y, x * y are "
            "refused; write a residual connection with keras.layers.Add or x + y)",
        )

    def dense(self, layer, x: _Tensor) -> _Tensor:
        L = self.L
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise _unsupported(layer, "LoRA or quantized layers are not supported")
        if type(layer) is L.Conv2D:
            if layer.data_format != "channels_last" or layer.groups != 1:
                raise _unsupported(layer, "only channels_last Conv2D with groups=1 is supported")
            if x.rep != 1:
                raise _unsupported(layer, "it follows a Flatten")
        kernel, bias = layer.kernel, layer.bias  # (no LoRA: the variable itself)
        if id(kernel) not in self.t_index or (bias is not None and id(bias) not in self.t_index):
            raise _unsupported(
                layer, "its weights are not trainable (frozen), so they are not in theta"
            )
        unknown = [w.path for w in layer.trainable_weights if w is not kernel and w is not bias]
        if unknown:
            raise _unsupported(layer, f"it has unexpected trainable weights {unknown}")
        shape = tuple(int(d) for d in kernel.shape)
        units = self.units[self.find(x.element)]
        if units is not None and shape[-2] != x.rep * units:
            raise _unsupported(layer, f"kernel rows {shape[-2]} != {x.rep} x {units}")
        out = self.new(shape[-1], kernel.path)
        if x.rep > 1:  # a Dense after Flatten: rows p * C + c
            self.role(layer, kernel, (x.rep, shape[0] // x.rep, shape[-1]), (None, x.element, out))
        else:
            self.role(layer, kernel, shape, (None,) * (len(shape) - 2) + (x.element, out))
        self.role(layer, bias, (shape[-1],), (out,))
        return _Tensor(out)

    def merge(self, op, inputs: list[_Tensor], shapes: list[tuple], args) -> _Tensor:
        if args is not None:  # every positional argument must be a tensor (no constants)
            flat = args.get("args", ())
            flat = flat[0] if len(flat) == 1 and isinstance(flat[0], (list, tuple)) else flat
            if any(not _keras_tensors(a) for a in flat):
                raise _unsupported(op, "it combines a tensor with a constant")
        if len(inputs) < 2:
            raise _unsupported(op, f"it merges {len(inputs)} tensor(s)")
        if len({s[1:] for s in shapes}) != 1:
            raise _unsupported(op, f"it merges tensors of different shapes {shapes} (broadcast)")
        if len({x.rep for x in inputs if not self.fixed[self.find(x.element)]}) > 1:
            raise _unsupported(
                op, "it merges flattened maps with features of another layout (Flatten)"
            )
        root = inputs[0].element
        for x in inputs[1:]:
            root = self.union(root, x.element, op)
        rep = max(x.rep for x in inputs)
        return _Tensor(root, rep)


def _plan(model) -> _Plan:
    """Which variables each hidden-unit permutation group touches, and along which axis."""
    graph = _Graph(model)
    outputs = graph.walk(model, None)
    for x in outputs:  # the model's outputs are never permuted
        graph.fixed[graph.find(x.element)] = True
    plan = _Plan()
    names: dict[int, str | None] = {}
    for e in range(len(graph.parent)):
        root = graph.find(e)
        if graph.fixed[root] or graph.names[e] is None:
            continue
        if root not in names:
            names[root] = graph.names[root]
            if names[root] in plan.groups:
                raise _unsupported(model, f"its kernel path {names[root]!r} is not unique")
            plan.groups[names[root]] = int(graph.units[root])
            plan.members[names[root]] = []
        plan.members[names[root]].append(graph.names[e])
    for trainable, index, view, axes in graph.roles:
        resolved = tuple(None if a is None else names.get(graph.find(a)) for a in axes)
        (plan.trainable if trainable else plan.non_trainable).append(_Role(index, view, resolved))
    missing = [
        ParameterLayout.from_model(model).paths[i]
        for i in range(len(model.trainable_variables))
        if i not in graph.covered
    ]
    if missing:
        raise _unsupported(model, f"trainable variables {missing} are outside the layer graph")
    return plan


def _take(view: np.ndarray, role: _Role, perms: dict, skip_axis: int | None = None):
    """`view` (a variable in its role's view) with every group axis permuted but `skip_axis`."""
    for axis, g in enumerate(role.axes):
        if g is not None and axis != skip_axis and g in perms:
            view = np.take(view, perms[g], axis=axis)
    return view


def _permute(arrays: list[np.ndarray], roles: list[_Role], perms: dict) -> list[np.ndarray]:
    """`arrays` with every role's axes permuted; the others shared."""
    out = list(arrays)
    for r in roles:
        shape = np.shape(arrays[r.index])
        out[r.index] = _take(np.asarray(arrays[r.index]).reshape(r.view), r, perms).reshape(shape)
    return out


def _check_permutations(plan: _Plan, permutations: dict) -> dict[str, np.ndarray]:
    if set(permutations) != set(plan.groups):
        raise UserError(
            f"The permutations are keyed {sorted(permutations)} but this model's permutation "
            f"groups are {sorted(plan.groups)}: pass the permutations of an Alignment of this "
            "model."
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


def permutation_groups(model) -> dict[str, list[str]]:
    """The model's permutation groups: per group (named by the kernel path of the first layer
    producing it, in graph order), the kernel paths of every Dense/Conv2D layer whose output
    units it permutes. Groups fixed by the model's inputs or outputs are left out.

    Raises:
        UserError: unsupported architecture (see `SUPPORTED_LAYERS`).
    """
    return {g: list(m) for g, m in _plan(model).members.items()}


def permute_theta(model, theta: np.ndarray, permutations: dict[str, list[int]]) -> np.ndarray:
    """Apply hidden-unit permutations (as in `Alignment.permutations`) to a flat theta.

    Args:
        model: built Keras model giving the architecture.
        theta: flat parameters in `ParameterLayout.from_model(model)` order.
        permutations: per permutation group, aligned unit i = theta's unit perm[i].

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
        statistics of layers on fixed units) are returned unchanged (copied).
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


def _cost(n: int, a_arrays, b_arrays, perms, g: str, roles: list[_Role]) -> np.ndarray:
    """cost[i, j] = inner product of A's weights at unit i with B's at unit j, summed over
    every axis group g permutes (the other axes, and g's other axes, at their current
    permutations)."""
    cost = np.zeros((n, n))
    for r in roles:
        a, b = a_arrays[r.index].reshape(r.view), b_arrays[r.index].reshape(r.view)
        for axis, h in enumerate(r.axes):
            if h != g:
                continue
            wa = np.moveaxis(a, axis, 0).reshape(n, -1)
            wb = np.moveaxis(_take(b, r, perms, skip_axis=axis), axis, 0).reshape(n, -1)
            cost += wa @ wb.T
    return cost


def _value(a_arrays, b_arrays, perms, roles: list[_Role]) -> float:
    """sum over `roles` of <W_A, g.W_B>."""
    return sum(
        float(np.vdot(a_arrays[r.index], _take(b_arrays[r.index].reshape(r.view), r, perms)))
        for r in roles
    )


def _assign(n: int, a_arrays, b_arrays, perms: dict, g: str, roles: list[_Role]):
    """The linear assignment for group g, kept only if it strictly raises the objective over
    `roles` (the roles touching g); else the current permutation (the same object)."""
    from scipy.optimize import linear_sum_assignment

    cost = _cost(n, a_arrays, b_arrays, perms, g, roles)
    _, cols = linear_sum_assignment(cost, maximize=True)
    current = perms[g]
    if np.array_equal(cols, current):
        return current
    old = _value(a_arrays, b_arrays, perms, roles)
    new = _value(a_arrays, b_arrays, {**perms, g: cols}, roles)
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
            new = _assign(plan.groups[g], a_arrays, b_arrays, perms, g, touching[g])
            changed |= new is not perms[g]
            perms[g] = new
        if not changed:
            break
    return perms, sweeps


def _forward(plan: _Plan, a_arrays, b_arrays) -> dict:
    """Groups matched in graph order, each on the weights whose other group axes are already
    matched (or fixed) and that it permutes along one axis: a permuted copy of A is recovered
    exactly (the producing layer's incoming weights identify each unit)."""
    perms = {g: np.arange(n) for g, n in plan.groups.items()}
    matched: set[str] = set()
    for g, n in plan.groups.items():
        touching = [r for r in plan.trainable if g in r.axes]
        ready = [
            r
            for r in touching
            if r.axes.count(g) == 1 and all(h is None or h == g or h in matched for h in r.axes)
        ]
        perms[g] = _assign(n, a_arrays, b_arrays, perms, g, ready or touching)
        matched.add(g)
    return perms


def weight_matching(
    model, theta_a: np.ndarray, theta_b: np.ndarray, max_iterations: int = 100, seed: int = 0
) -> Alignment:
    """Permute B's hidden units to bring theta_b as close as possible to theta_a.

    Args:
        model: built Keras model giving the architecture (its weights are not read or changed).
        theta_a: flat parameters of model A, in `ParameterLayout.from_model(model)` order.
        theta_b: flat parameters of model B, same layout.
        max_iterations: maximum number of coordinate-descent sweeps over the groups.
        seed: seed of the random group order of each sweep (the result is deterministic).

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
    best = None
    for start in (identity, _forward(plan, a_arrays, b_arrays)):
        perms, sweeps = _descend(plan, a_arrays, b_arrays, start, int(max_iterations), seed)
        value = _value(a_arrays, b_arrays, perms, plan.trainable)
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
        groups={g: list(m) for g, m in plan.members.items()},
    )


def weight_matching_on(
    landscape, theta_a: np.ndarray, theta_b: np.ndarray, max_iterations: int = 100, seed: int = 0
) -> Alignment:
    """`weight_matching` on the architecture of `landscape` (the engine's `Landscape`).

    Weight matching walks the Keras model's graph, which the contract the probes use
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
