"""Give an ONNX model exported with a fixed batch of 1 a dynamic batch axis.

Exporters such as Ultralytics' write ``Reshape`` targets with the batch size
baked in (``[1, 144, -1]``). Setting the input and output batch to a symbolic
dim and every such leading 1 to 0 ("copy this dim from the input") makes the
graph run at any batch size; ``check`` compares batch 1 with batch 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def make_batch_dynamic(source: Path, target: Path) -> Path:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            dims[0].dim_param = "batch"
    shapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name in shapes:
            shape = numpy_helper.to_array(tensor).copy()
            if shape.ndim == 1 and len(shape) > 1 and shape[0] == 1:
                shape[0] = 0
                model.graph.initializer[index].CopyFrom(numpy_helper.from_array(shape, tensor.name))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in shapes:
            for attribute in node.attribute:
                shape = numpy_helper.to_array(attribute.t).copy()
                if shape.ndim == 1 and len(shape) > 1 and shape[0] == 1:
                    shape[0] = 0
                    attribute.t.CopyFrom(numpy_helper.from_array(shape))
    del model.graph.value_info[:]
    onnx.save(model, str(target))
    return target


def check(path: Path, size: int) -> float:
    """Largest difference between batch-1 runs and one batch-2 run."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    both = session.run(None, {name: x})[0]
    one = np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(2)])
    return float(np.abs(both - one).max())


if __name__ == "__main__":
    out = make_batch_dynamic(Path(sys.argv[1]), Path(sys.argv[2]))
    print(out, "max batch difference", check(out, int(sys.argv[3])))
