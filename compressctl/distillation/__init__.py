"""Knowledge distillation (the ``distill`` stage's math): teachers, losses, feature hints, the training loop.

* ``teachers``: the baseline or a named model (torch, or ONNX through ONNX Runtime), frozen;
* ``losses``: soft targets (Hinton et al. 2015), relational RKD (Park et al. 2019), their weighted sum;
* ``features``: hint losses' taps and adapters (FitNets, Romero et al. 2015);
* ``loop``: trains the student against the teacher through ``compressctl.training.fit``.
"""
