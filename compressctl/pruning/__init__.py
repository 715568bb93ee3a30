"""Helpers of the ``prune`` stage: channel pruning (Torch-Pruning) and sparsity masks."""
