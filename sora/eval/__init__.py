"""Evaluation without Lightning: metrics, the moving-shapes probe, end-of-run evaluations of a model bundle."""
