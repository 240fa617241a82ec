"""Shared pieces of the distillation scripts: data, metrics, models, the training loop."""
