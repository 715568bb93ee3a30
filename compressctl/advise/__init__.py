"""Search for the compression that fits a budget, measured on the user's execution provider.

``advisor`` runs the whole thing; ``workbench`` measures one candidate cheaply;
``sensitivity`` analyses layers; ``layers`` and ``space`` build the search space
from the runners' search tags; ``search`` runs a strategy (``strategies``: NSGA-II,
random, or the RL ``agent``); ``recipes`` turns candidates into ordinary recipes;
``page`` writes advise.html.
"""

from compressctl.advise.budget import Budget

__all__ = ["Budget"]
