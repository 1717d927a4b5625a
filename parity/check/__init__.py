"""Checking: the pipeline (a target converted once, captured in one pass, every output compared) and
what it measures with: capture, the comparison rule and its noise, layer-local runs, tolerance gates,
decisions and sets of boxes, the first divergence. Kept free of re-exports, so that importing one of
these modules does not import the whole pipeline."""
