"""Training glue for `transformers.Trainer`: recipes, data, transforms, the soft-mask callback, optimizer,
metrics (local evaluate modules) and plots. Entry point: `build_training` in `tasks.py`."""
