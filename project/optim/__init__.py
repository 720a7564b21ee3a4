"""Optimization: the WarmupCosine scheduler (plain torch) and the wiring that hands it to Lightning."""
