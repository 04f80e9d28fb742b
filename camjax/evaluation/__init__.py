"""Evaluation of a trained model: the loop over the eval split (loop.py) and the centre baseline (baseline.py)."""
