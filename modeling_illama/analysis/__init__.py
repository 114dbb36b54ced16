"""Analyses of trained models: attention maps and rank, activation ("information filtering") maps."""
