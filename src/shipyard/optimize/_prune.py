"""Pruning that makes the model smaller and faster, on the ONNX graph the bundle serves.

Tree ensembles (a TreeEnsembleClassifier/Regressor, whatever trained it: scikit-learn,
LightGBM, XGBoost): every tree's contribution on the holdout rows is worked out (the mean
absolute weight of the leaves the rows reach, over all classes), and the `ratio` of trees that
contribute least are dropped. Boosted trees add up, so the rest stand as they are; an averaging
forest (its trees' weights sum to one per row) has its remaining weights rescaled.

Networks (dense layers with constant weights, MatMul/Gemm with an optional bias, joined by an
element-wise activation): in each hidden layer the `ratio` of units with the smallest product of
incoming and outgoing weight norms are removed, columns and rows alike (structured pruning: the
matrices shrink, so the model runs faster, not just sparser). With labelled training rows and
PyTorch installed, the pruned layers are then fine-tuned for a few epochs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipyard.core import Columns
from shipyard.core.values import category_text
from shipyard.optimize._graph import (
    ML_DOMAIN,
    NotApplicable,
    attribute,
    initializers,
    load,
    set_attribute,
    tap,
)

__all__ = ["prune"]

_TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
_ACTIVATIONS = {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "Elu", "Selu", "Softplus", "Gelu"}
_MAX_ROWS = 2000  # ranking rows: the votes of every tree for each of them are held at once


def prune(
    model: bytes,
    ratio: float,
    plan: dict[str, Any],
    holdout: Columns,
    train: tuple[Columns, np.ndarray, list[Any] | None] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The graph with `ratio` (0 < ratio < 1) of its trees or hidden units removed."""
    if not 0 < ratio < 1:
        raise NotApplicable(f"--prune takes the share to remove, between 0 and 1; got {ratio}")
    graph = load(model)
    trees = [n for n in graph.graph.node if n.domain == ML_DOMAIN and n.op_type in _TREE_OPS]
    if len(trees) == 1:
        rows = {k: v[:_MAX_ROWS] for k, v in holdout.items()}
        return _prune_trees(graph, trees[0], ratio, model, plan, rows)
    if len(trees) > 1:
        raise NotApplicable(
            f"the graph holds {len(trees)} tree ensembles; pruning handles one (a single model)"
        )
    return _prune_network(graph, ratio, model, plan, train)


# -- tree ensembles --------------------------------------------------------------------------


@dataclass
class _Ensemble:
    """A tree ensemble node's arrays, indexed by node position."""

    trees: np.ndarray  # tree id per node
    ids: np.ndarray  # node id within its tree
    features: np.ndarray
    values: np.ndarray
    modes: list[str]
    true_pos: np.ndarray
    false_pos: np.ndarray
    missing_true: np.ndarray
    prefix: str  # "class" or "target"
    position: dict[tuple[int, int], int]  # (tree id, node id) -> position

    @classmethod
    def read(cls, node: Any) -> _Ensemble:
        trees = attribute(node, "nodes_treeids").astype(np.int64)
        ids = attribute(node, "nodes_nodeids").astype(np.int64)
        values = attribute(node, "nodes_values")
        if values is None:
            values = attribute(node, "nodes_values_as_tensor")
        if values is None:
            raise NotApplicable("the tree ensemble has no split values this version can read")
        position = {
            (t, i): p for p, (t, i) in enumerate(zip(trees.tolist(), ids.tolist(), strict=True))
        }
        true_ids = attribute(node, "nodes_truenodeids").astype(np.int64)
        false_ids = attribute(node, "nodes_falsenodeids").astype(np.int64)
        modes = list(attribute(node, "nodes_modes"))
        true_pos = np.array(
            [
                position.get((t, c), -1)
                for t, c in zip(trees.tolist(), true_ids.tolist(), strict=True)
            ]
        )
        false_pos = np.array(
            [
                position.get((t, c), -1)
                for t, c in zip(trees.tolist(), false_ids.tolist(), strict=True)
            ]
        )
        missing = attribute(node, "nodes_missing_value_tracks_true")
        prefix = "class" if node.op_type == "TreeEnsembleClassifier" else "target"
        return cls(
            trees, ids, attribute(node, "nodes_featureids").astype(np.int64),
            np.asarray(values, dtype=np.float64), modes, true_pos, false_pos,
            np.zeros(len(trees), bool) if missing is None or len(missing) == 0 else missing.astype(bool),
            prefix, position,
        )  # fmt: skip

    def leaves(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every row and tree, the position of the leaf the row reaches; and the tree ids."""
        tree_ids = np.unique(self.trees)
        roots = np.array(
            [np.flatnonzero((self.trees == t) & (self.ids == self._root(t)))[0] for t in tree_ids]
        )
        leaf = np.array([m == "LEAF" for m in self.modes])
        codes = {
            "BRANCH_LEQ": 0,
            "BRANCH_LT": 1,
            "BRANCH_GTE": 2,
            "BRANCH_GT": 3,
            "BRANCH_EQ": 4,
            "BRANCH_NEQ": 5,
            "LEAF": 6,
        }
        mode = np.array([codes[m] for m in self.modes])
        current = np.broadcast_to(roots, (len(x), len(roots))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(len(self.modes)):
            active = ~leaf[current]
            if not active.any():
                break
            feature = self.features[current]
            value = x[rows, np.clip(feature, 0, x.shape[1] - 1)]
            split = self.values[current]
            m = mode[current]
            go_true = np.select(
                [m == 0, m == 1, m == 2, m == 3, m == 4, m == 5],
                [
                    value <= split,
                    value < split,
                    value >= split,
                    value > split,
                    value == split,
                    value != split,
                ],
                False,
            )
            go_true = np.where(np.isnan(value), self.missing_true[current], go_true)
            nxt = np.where(go_true, self.true_pos[current], self.false_pos[current])
            current = np.where(active, nxt, current)
        return current, tree_ids

    def _root(self, tree: int) -> int:
        ids = set(self.ids[self.trees == tree].tolist())
        children = set(
            self.ids[self.true_pos[(self.trees == tree) & (self.true_pos >= 0)]].tolist()
            + self.ids[self.false_pos[(self.trees == tree) & (self.false_pos >= 0)]].tolist()
        )
        roots = sorted(ids - children)
        return int(roots[0] if roots else min(ids))


def _prune_trees(
    graph: Any, node: Any, ratio: float, model: bytes, plan: dict[str, Any], rows: Columns
) -> tuple[bytes, dict[str, Any]]:
    ensemble = _Ensemble.read(node)
    (x,) = tap(model, plan, rows, [node.input[0]])
    x = np.asarray(x, dtype=np.float64)
    leaf_pos, tree_ids = ensemble.leaves(x)
    p = ensemble.prefix
    w_trees = attribute(node, f"{p}_treeids").astype(np.int64)
    w_nodes = attribute(node, f"{p}_nodeids").astype(np.int64)
    w_ids = attribute(node, f"{p}_ids").astype(np.int64)
    weights_name = (
        f"{p}_weights" if attribute(node, f"{p}_weights") is not None else f"{p}_weights_as_tensor"
    )
    w_values = np.asarray(attribute(node, weights_name), dtype=np.float64)
    # each node's leaf weight per output (class or target)
    rows_of = np.array(
        [ensemble.position[(t, i)] for t, i in zip(w_trees.tolist(), w_nodes.tolist(), strict=True)]
    )
    leaf_weights = np.zeros((len(ensemble.trees), int(w_ids.max()) + 1 if len(w_ids) else 1))
    np.add.at(leaf_weights, (rows_of, w_ids), w_values)
    votes = leaf_weights[leaf_pos]  # rows x trees x outputs
    n_trees = len(tree_ids)
    keep_count = max(1, math.ceil(n_trees * (1 - ratio)))
    if keep_count >= n_trees:
        raise NotApplicable(f"the ensemble has {n_trees} tree(s); pruning {ratio:.0%} removes none")
    # a classifier whose trees' weights are used as they are (no logistic or softmax after
    # them) averages its trees' votes: a random forest or extra trees, as converters write them
    averaging = p == "class" and attribute(node, "post_transform", "NONE") == "NONE"
    total = votes.sum(axis=1)  # rows x outputs: the ensemble before any transform
    if averaging and votes.shape[2] > 1:
        # the trees that back the ensemble's answer the most
        winner = total.argmax(axis=1)
        contribution = votes[np.arange(len(x)), :, winner].mean(axis=0)
        ranked_by = "mean vote for the ensemble's class on the ranking rows"
    elif averaging:
        # one weight per tree (a binary forest keeps the positive class's): closest to the mean
        contribution = -np.abs(votes[..., 0] * n_trees - total[:, None, 0]).mean(axis=0)
        ranked_by = "closeness to the ensemble's score on the ranking rows"
    else:
        contribution = np.abs(votes).sum(axis=2).mean(axis=0)
        ranked_by = "mean |leaf weight| reached by the ranking rows"
    order = np.argsort(-contribution, kind="stable")
    kept = np.sort(tree_ids[order[:keep_count]])
    kept_index = np.isin(tree_ids, kept)
    if averaging:
        scale = n_trees / keep_count
    elif p == "target" and attribute(node, "aggregate_function", "SUM") == "SUM":
        # a forest regressor written as a SUM of weights divided by the tree count looks like a
        # boosted one: take the scale that keeps the output closer to the ensemble's
        kept_sum = votes[:, kept_index, :].sum(axis=1)
        candidates = (1.0, n_trees / keep_count)
        errors = [float(np.abs(kept_sum * c - total).mean()) for c in candidates]
        scale = candidates[int(np.argmin(errors))]
        averaging = scale != 1.0
    else:
        scale = 1.0
    renumber = {int(t): k for k, t in enumerate(kept)}
    on_node = np.isin(ensemble.trees, kept)
    for name in [a.name for a in node.attribute if a.name.startswith("nodes_")]:
        values = attribute(node, name)
        if values is None or len(values) != len(on_node):
            continue
        selected = (
            np.asarray(values)[on_node]
            if not isinstance(values, list)
            else [v for v, k in zip(values, on_node, strict=True) if k]
        )
        if name == "nodes_treeids":
            selected = np.array([renumber[int(t)] for t in selected])
        set_attribute(node, name, selected)
    on_weight = np.isin(w_trees, kept)
    for name in [
        a.name
        for a in node.attribute
        if a.name.startswith(f"{p}_") and a.name not in (f"{p}labels_int64s", f"{p}labels_strings")
    ]:
        values = attribute(node, name)
        if values is None or isinstance(values, list) or len(values) != len(on_weight):
            continue
        selected = np.asarray(values)[on_weight]
        if name == f"{p}_treeids":
            selected = np.array([renumber[int(t)] for t in selected])
        elif name == weights_name:
            selected = selected * scale
        set_attribute(node, name, selected)
    del graph.graph.value_info[:]
    return bytes(graph.SerializeToString()), {
        "kind": "trees",
        "trees_before": n_trees,
        "trees_after": keep_count,
        "nodes_before": len(ensemble.trees),
        "nodes_after": int(on_node.sum()),
        "ranked_by": ranked_by,
        "averaging": averaging,
        "weights_scaled_by": scale,
        "kept_trees": [int(t) for t in kept],
    }


# -- networks --------------------------------------------------------------------------------


@dataclass
class _Dense:
    """One dense layer: y = x @ W (+ b); `transposed` when W is stored (out, in) (Gemm transB)."""

    node: Any
    weight: str
    bias: str | None
    bias_node: Any | None
    transposed: bool
    output: str  # the tensor after the bias

    def width(self, constants: dict[str, Any]) -> int:
        from onnx import numpy_helper

        w = numpy_helper.to_array(constants[self.weight])
        return int(w.shape[0] if self.transposed else w.shape[1])


def _dense_layers(graph: Any) -> list[tuple[_Dense, Any | None]]:
    """Dense layers in graph order, each with the activation node that follows it (if any)."""
    constants = initializers(graph)
    consumers: dict[str, list[Any]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers = []
    for node in graph.graph.node:
        if (
            node.op_type not in ("MatMul", "Gemm")
            or len(node.input) < 2
            or node.input[1] not in constants
        ):
            continue
        if node.op_type == "Gemm" and (
            attribute(node, "transA", 0) or (len(node.input) > 2 and node.input[2] not in constants)
        ):
            continue
        dense = _Dense(node, node.input[1], node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 else None,
                       None, bool(node.op_type == "Gemm" and attribute(node, "transB", 0)), node.output[0])  # fmt: skip
        after = consumers.get(dense.output, [])
        if node.op_type == "MatMul" and len(after) == 1 and after[0].op_type == "Add":
            add = after[0]
            other = [n for n in add.input if n != dense.output]
            if len(other) == 1 and other[0] in constants:
                dense.bias, dense.bias_node, dense.output = other[0], add, add.output[0]
                after = consumers.get(dense.output, [])
        activation = after[0] if len(after) == 1 and after[0].op_type in _ACTIVATIONS else None
        layers.append((dense, activation))
    return layers


def _prune_network(
    graph: Any,
    ratio: float,
    model: bytes,
    plan: dict[str, Any],
    train: tuple[Columns, np.ndarray, list[Any] | None] | None,
) -> tuple[bytes, dict[str, Any]]:
    from onnx import numpy_helper

    layers = _dense_layers(graph)
    # hidden layers: a dense layer whose activation feeds exactly the next dense layer
    consumers: dict[str, int] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    outputs = {o.name for o in graph.graph.output}
    pairs = []
    for (dense, activation), (nxt, _) in itertools.pairwise(layers):
        if (
            activation is not None
            and nxt.node.input[0] == activation.output[0]
            # a unit whose value is read anywhere else (a residual, a graph output) cannot go
            and consumers.get(activation.output[0]) == 1
            and activation.output[0] not in outputs
            and consumers.get(dense.output) == 1
        ):
            pairs.append((dense, nxt))
    if not pairs:
        raise NotApplicable(
            "the model has neither a tree ensemble nor hidden dense layers to prune (pruning "
            "works on tree ensembles and on networks of dense layers); try --distill"
        )
    constants = initializers(graph)
    arrays = {name: numpy_helper.to_array(t).copy() for name, t in constants.items()}
    widths = []
    for dense, nxt in pairs:
        w_in = arrays[dense.weight]
        w_out = arrays[nxt.weight]
        incoming = w_in if not dense.transposed else w_in.T  # (in, units)
        outgoing = w_out if not nxt.transposed else w_out.T  # (units, out)
        units = incoming.shape[1]
        score = np.linalg.norm(incoming, axis=0) * np.linalg.norm(outgoing, axis=1)
        keep_count = max(1, math.ceil(units * (1 - ratio)))
        keep = np.sort(np.argsort(-score, kind="stable")[:keep_count])
        arrays[dense.weight] = (
            incoming[:, keep] if not dense.transposed else incoming[:, keep].T
        ).copy()
        if dense.bias is not None:
            bias = arrays[dense.bias]
            arrays[dense.bias] = (bias[..., keep] if bias.ndim else bias).copy()
        arrays[nxt.weight] = (
            outgoing[keep, :] if not nxt.transposed else outgoing[keep, :].T
        ).copy()
        widths.append((units, keep_count))
    details: dict[str, Any] = {
        "kind": "network",
        "hidden_units_before": [w[0] for w in widths],
        "hidden_units_after": [w[1] for w in widths],
        "ranked_by": "|incoming weights| x |outgoing weights| per unit",
        "fine_tuned": False,
    }
    if train is not None:
        details.update(_fine_tune(layers, pairs[0][0], arrays, model, plan, train))
    for tensor in graph.graph.initializer:
        if tensor.name in arrays:
            tensor.CopyFrom(
                numpy_helper.from_array(
                    arrays[tensor.name].astype(numpy_helper.to_array(tensor).dtype), tensor.name
                )
            )
    del graph.graph.value_info[:]
    return bytes(graph.SerializeToString()), details


def _fine_tune(
    layers: list[tuple[_Dense, Any | None]],
    first: _Dense,
    arrays: dict[str, np.ndarray],
    model: bytes,
    plan: dict[str, Any],
    train: tuple[Columns, np.ndarray, list[Any] | None],
    epochs: int = 5,
) -> dict[str, Any]:
    """A few epochs of Adam on the pruned chain of dense layers, against the training labels,
    the preprocessing before the chain and the output after it left as they are."""
    try:
        import torch
    except ImportError:
        return {"fine_tune_skipped": "PyTorch is not installed (pip install 'shipyard[torch]')"}
    columns, truth, classes = train
    chain = _chain(layers, first)
    (x,) = tap(model, plan, columns, [chain[0][0].node.input[0]])
    _last_dense, last_activation = chain[-1]
    head = last_activation.op_type if last_activation is not None else None
    if classes is None and head is not None:
        return {"fine_tune_skipped": "a regressor whose last layer has an activation"}
    if classes is not None and head not in ("Sigmoid", "Softmax", None):
        return {"fine_tune_skipped": f"the network's output activation {head} is not handled"}
    torch.manual_seed(0)
    params = {n: torch.tensor(a, dtype=torch.float32, requires_grad=True) for n, a in arrays.items()
              if any(n in (d.weight, d.bias) for d, _ in chain)}  # fmt: skip
    inputs = torch.tensor(np.asarray(x, dtype=np.float32))
    if classes is not None:
        index = {category_text(c): k for k, c in enumerate(classes)}
        target = torch.tensor([index.get(category_text(t), -1) for t in truth])
        usable = target >= 0
        inputs, target = inputs[usable], target[usable]
    else:
        target = torch.tensor(np.asarray(truth, dtype=np.float32))
    optimiser = torch.optim.Adam(list(params.values()), lr=1e-3)
    acts = {"Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid}

    def forward(batch: Any) -> Any:
        h = batch
        for k, (dense, activation) in enumerate(chain):
            w = params[dense.weight]
            h = h @ (w.T if dense.transposed else w)
            if dense.bias is not None:
                h = h + params[dense.bias]
            if activation is not None and k < len(chain) - 1:
                h = acts[activation.op_type](h)
        return h

    if any(a is not None and a.op_type not in acts for _, a in chain[:-1]):
        return {"fine_tune_skipped": "an activation other than Relu, Tanh or Sigmoid"}
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(inputs))
        total = 0.0
        for start in range(0, len(inputs), 256):
            idx = perm[start : start + 256]
            out = forward(inputs[idx])
            if classes is None:
                loss = torch.nn.functional.mse_loss(out.reshape(-1), target[idx])
            elif out.shape[1] == 1:  # one logit for the positive class
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    out.reshape(-1), target[idx].float()
                )
            else:
                loss = torch.nn.functional.cross_entropy(out, target[idx])
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        losses.append(round(total / max(1, len(inputs)), 6))
    for name, tensor in params.items():
        arrays[name] = tensor.detach().numpy()
    return {
        "fine_tuned": True,
        "fine_tune_epochs": epochs,
        "fine_tune_rows": len(inputs),
        "fine_tune_loss": losses,
    }


def _chain(
    layers: list[tuple[_Dense, Any | None]], first: _Dense
) -> list[tuple[_Dense, Any | None]]:
    """The run of dense layers from `first` (the first pruned one), each fed by the previous
    one's activation."""
    start = next(i for i, (dense, _) in enumerate(layers) if dense is first)
    chain = [layers[start]]
    for dense, activation in layers[start + 1 :]:
        previous_activation = chain[-1][1]
        if previous_activation is not None and dense.node.input[0] == previous_activation.output[0]:
            chain.append((dense, activation))
        else:
            break
    return chain
