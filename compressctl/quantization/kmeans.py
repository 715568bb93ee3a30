"""Non-uniform weight quantization: k-means clustering of ONNX weight tensors.

Each selected weight becomes a codebook of ``2**bits`` float centroids and an
index tensor (4-bit indices packed two to a byte). A few standard ONNX ops
decode them in the graph (``BitwiseAnd``/``BitShift`` to unpack, ``Gather``
into the codebook), so the file on disk is really smaller while ONNX Runtime
folds the decoder into a float weight once, when the session is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_OP_TYPES = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def kmeans_1d(values: np.ndarray, clusters: int, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm on scalars with linear initialisation (as in Deep Compression).

    Returns ``(codebook, indices)``; the codebook is sorted, so on one dimension
    the assignment is a binary search between centroid midpoints.
    """
    flat = values.astype(np.float64).ravel()
    low, high = float(flat.min()), float(flat.max())
    if high <= low:
        return np.full(clusters, low, dtype=np.float32), np.zeros(flat.size, dtype=np.uint8)
    centroids = np.linspace(low, high, clusters)
    indices = np.zeros(flat.size, dtype=np.int64)
    for _ in range(iterations):
        indices = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
        sums = np.bincount(indices, weights=flat, minlength=clusters)
        counts = np.bincount(indices, minlength=clusters)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        updated.sort()
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = updated
    indices = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
    return centroids.astype(np.float32), indices.astype(np.uint8)


def pack_uint4(indices: np.ndarray) -> np.ndarray:
    """Two 4-bit indices per byte: element 2i in the low nibble, 2i+1 in the high one."""
    flat = indices.astype(np.uint8).ravel()
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, dtype=np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack_uint4(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of ``pack_uint4`` (numpy twin of the in-graph decoder)."""
    pairs = np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)
    return pairs[:count]


@dataclass
class ClusteredTensor:
    """A weight as a codebook and indices: one codebook ``[K]``, or one per row ``[rows, K]``."""

    name: str
    shape: list[int]
    codebook: np.ndarray
    indices: np.ndarray  # uint8, one index per element, shaped [elements] or [rows, elements / rows]

    @property
    def per_row(self) -> bool:
        return self.codebook.ndim == 2

    def decoded(self) -> np.ndarray:
        idx = self.indices.astype(np.int64)
        values = np.take_along_axis(self.codebook, idx, axis=1) if self.per_row else self.codebook[idx]
        return values.reshape(self.shape)


def cluster_tensor(name: str, weights: np.ndarray, bits: int, granularity: str, iterations: int) -> ClusteredTensor:
    """k-means over the whole tensor, or separately for each output channel (first axis)."""
    if granularity == "tensor":
        codebook, indices = kmeans_1d(weights, 2**bits, iterations)
        return ClusteredTensor(name, list(weights.shape), codebook, indices)
    rows = [kmeans_1d(row, 2**bits, iterations) for row in weights.reshape(weights.shape[0], -1)]
    return ClusteredTensor(name, list(weights.shape), np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))


def weight_initializers(model: Any, op_types: tuple[str, ...], exclude_nodes: set[str], min_elements: int) -> list[str]:
    """Names of initializers used as the weight (input 1) of a selected node."""
    from onnx import TensorProto

    initializers = {t.name: t for t in model.graph.initializer}
    chosen: list[str] = []
    for node in model.graph.node:
        if node.op_type not in op_types or node.name in exclude_nodes or len(node.input) < 2:
            continue
        tensor = initializers.get(node.input[1])
        if tensor is None or tensor.data_type != TensorProto.FLOAT or tensor.name in chosen:
            continue
        if int(np.prod(tensor.dims)) >= min_elements:
            chosen.append(tensor.name)
    return chosen


def _decoder_nodes(item: ClusteredTensor, bits: int) -> tuple[list[Any], list[Any]]:
    """Nodes and initializers that rebuild ``item.name`` from its codebook and indices."""
    from onnx import helper, numpy_helper

    stem = item.name.replace("/", "_").replace(".", "_")
    count = int(item.indices.size)
    inits = [
        numpy_helper.from_array(item.codebook.astype(np.float32), f"{stem}__codebook"),
        numpy_helper.from_array(np.asarray(item.shape, dtype=np.int64), f"{stem}__shape"),
    ]
    nodes = []
    if bits <= 4:
        inits += [
            numpy_helper.from_array(pack_uint4(item.indices), f"{stem}__packed"),
            numpy_helper.from_array(np.array([0x0F], dtype=np.uint8), f"{stem}__mask"),
            numpy_helper.from_array(np.array([4], dtype=np.uint8), f"{stem}__four"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), f"{stem}__axis"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{stem}__flat"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), f"{stem}__start"),
            numpy_helper.from_array(np.array([count], dtype=np.int64), f"{stem}__count"),
        ]
        nodes += [
            helper.make_node("BitwiseAnd", [f"{stem}__packed", f"{stem}__mask"], [f"{stem}__low"]),
            helper.make_node("BitShift", [f"{stem}__packed", f"{stem}__four"], [f"{stem}__high"], direction="RIGHT"),
            helper.make_node("Unsqueeze", [f"{stem}__low", f"{stem}__axis"], [f"{stem}__low2"]),
            helper.make_node("Unsqueeze", [f"{stem}__high", f"{stem}__axis"], [f"{stem}__high2"]),
            helper.make_node("Concat", [f"{stem}__low2", f"{stem}__high2"], [f"{stem}__pairs"], axis=1),
            helper.make_node("Reshape", [f"{stem}__pairs", f"{stem}__flat"], [f"{stem}__padded"]),
            helper.make_node("Slice", [f"{stem}__padded", f"{stem}__start", f"{stem}__count"], [f"{stem}__idx8"]),
        ]
    else:
        inits.append(numpy_helper.from_array(item.indices.astype(np.uint8), f"{stem}__idx8"))
    nodes.append(helper.make_node("Cast", [f"{stem}__idx8"], [f"{stem}__idx"], to=6))  # INT32: Gather's index type
    if item.per_row:
        inits.append(numpy_helper.from_array(np.asarray(item.indices.shape, dtype=np.int64), f"{stem}__rows"))
        nodes += [
            helper.make_node("Reshape", [f"{stem}__idx", f"{stem}__rows"], [f"{stem}__idx_rows"]),
            helper.make_node("GatherElements", [f"{stem}__codebook", f"{stem}__idx_rows"], [f"{stem}__values"], axis=1),
        ]
    else:
        nodes.append(helper.make_node("Gather", [f"{stem}__codebook", f"{stem}__idx"], [f"{stem}__values"], axis=0))
    nodes.append(helper.make_node("Reshape", [f"{stem}__values", f"{stem}__shape"], [item.name]))
    for i, node in enumerate(nodes):
        node.name = f"{stem}__kmeans_{i}"
    return nodes, inits


def cluster_model(
    model: Any,
    bits: int,
    *,
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES,
    exclude_nodes: set[str] | None = None,
    min_elements: int = 2048,
    granularity: str = "tensor",
    iterations: int = 50,
) -> tuple[Any, list[dict[str, Any]]]:
    """Cluster the weights of ``model`` (a ModelProto, changed in place); returns it and per-tensor details."""
    from onnx import numpy_helper

    check_opset(model)
    names = weight_initializers(model, op_types, exclude_nodes or set(), min_elements)
    initializers = {t.name: t for t in model.graph.initializer}
    decoders: list[Any] = []
    details = []
    for name in names:
        weights = numpy_helper.to_array(initializers[name])
        item = cluster_tensor(name, weights, bits, granularity, iterations)
        error = float(np.sqrt(np.mean((item.decoded() - weights) ** 2)) / (np.std(weights) + 1e-12))
        nodes, inits = _decoder_nodes(item, bits)
        model.graph.initializer.remove(initializers[name])
        model.graph.initializer.extend(inits)
        decoders.extend(nodes)
        details.append({"tensor": name, "elements": int(weights.size), "relative_rmse": round(error, 5)})
    graph_inputs = [i for i in model.graph.input if i.name in names]
    for value in graph_inputs:  # old-IR models list initializers as inputs too
        model.graph.input.remove(value)
    existing = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(decoders + existing)
    return model, details


def check_opset(model: Any) -> None:
    """The decoder's BitwiseAnd needs opset 18; raising the opset of a graph could change other ops."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version < 18:
        raise ValueError(
            f"k-means decoding needs ONNX opset >= 18, the model has opset {version}; export with opset: 18"
        )
