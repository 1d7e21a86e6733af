"""Evaluation: what a validation pass computes from a model and a batch (loss, option scores, generation)."""
