"""Search for the compression that fits a budget, measured on the user's execution provider.

``advisor`` runs the whole thing; ``workbench`` builds one candidate cheaply;
``timing`` times it with the baseline in a sitting, in the measuring process;
``trials`` builds candidates here, in local processes or on Ray; ``sensitivity``
analyses layers; ``search`` drives Optuna's NSGA-II; ``recipes`` turns candidates
into ordinary recipes; ``findings`` says what was found; ``page`` writes advise.html.
"""

from compressctl.advise.budget import Budget

__all__ = ["Budget"]
