"""``python -m fmnist_pl serve``: a trained checkpoint as an HTTP service on LitServe, with a page to try it.

Nothing here is imported by the rest of the package: LitServe is an optional extra (``.[serve]``).
"""
