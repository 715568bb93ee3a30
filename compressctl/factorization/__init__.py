"""Low-rank factorisation of Linear and Conv2d layers (the ``lowrank`` stage's math).

* ``svd`` (Linear): ``W ≈ B·A`` as two Linear layers, ``in → r → out``.
* ``tucker`` (Conv2d): Tucker-2 on the channel modes, ``1×1 → k×k core → 1×1``
  (Kim et al. 2016).
* ``cp`` (Conv2d): CP decomposition, ``1×1 → k×1 depthwise → 1×k depthwise → 1×1``
  (Lebedev et al. 2015).

``ranks`` chooses ranks, ``layers`` builds the factorised layers (tensorly for
Tucker and CP, ``torch.linalg`` for SVD), ``decompose`` picks the layers and
replaces those whose MACs fall.
"""
