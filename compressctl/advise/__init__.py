"""Search for the compression that fits a budget, measured on the user's execution provider.

``advisor`` runs the whole thing; ``workbench`` builds one candidate cheaply;
``timing`` times it with the baseline in a sitting, in the measuring process;
``trials`` builds candidates here, in local processes or on Ray; ``sensitivity``
analyses layers; ``layers`` and ``space`` build the search space from the
runners' search tags; ``search`` runs a strategy (``strategies``: NSGA-II,
random, or the RL ``agent``); ``recipes`` turns candidates into ordinary
recipes; ``findings`` says what was found; ``page`` writes advise.html.
"""

from compressctl.advise.budget import Budget

__all__ = ["Budget"]
