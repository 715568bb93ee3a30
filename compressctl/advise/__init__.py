"""Search for the compression that fits a budget, measured on the user's execution provider.

``advisor`` runs the whole thing; ``workbench`` measures one candidate cheaply;
``sensitivity`` analyses layers; ``search`` drives Optuna's NSGA-II;
``recipes`` turns candidates into ordinary recipes; ``page`` writes advise.html.
"""

from compressctl.advise.budget import Budget

__all__ = ["Budget"]
