"""Matplotlib for the plots the package writes: the non-interactive backend, imported only when a plot is drawn."""

from __future__ import annotations

import os


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (no display needed); matplotlib stays an optional import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike, **savefig_kwargs) -> str:
    """Write `figure` to `path` (creating its folder), close it, and return the path as a string."""
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    figure.savefig(path, **savefig_kwargs)
    pyplot().close(figure)
    return str(path)
