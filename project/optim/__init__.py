"""Optimization in plain torch (WarmupCosine scheduler, MuonSGD optimizer); configure.py wires them into Lightning."""
