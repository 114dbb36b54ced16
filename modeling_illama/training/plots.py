"""Training curves (loss, accuracy, soft-mask rate against optimizer steps) from Trainer's log history."""

from __future__ import annotations

from pathlib import Path

from ..utils.figures import pyplot, save_figure


def curves(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Series (steps, values) for train loss, learning rate, soft-mask rate, eval loss/top-1/top-5."""
    keys = {
        "loss": "loss",
        "learning_rate": "learning_rate",
        "soft_mask_rate": "soft_mask_rate",
        "eval_loss": "eval_loss",
        "eval_top1": "eval_top1",
        "eval_top5": "eval_top5",
    }
    series: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in keys}
    for entry in log_history:
        for name, key in keys.items():
            if key in entry and "step" in entry:
                series[name][0].append(int(entry["step"]))
                series[name][1].append(float(entry[key]))
    return series


def plot_training_curves(log_history: list[dict], path: str | Path) -> Path:
    """Write a three-panel PNG: losses, accuracy, soft-mask rate and learning rate."""
    plt = pyplot()

    data = curves(log_history)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(*data["loss"], label="train loss")
    if data["eval_loss"][0]:
        ax.plot(*data["eval_loss"], "o-", label="eval loss")
    ax.set(title="loss", xlabel="step")
    ax.legend()
    ax = axes[1]
    for name, label in (("eval_top1", "eval top-1"), ("eval_top5", "eval top-5")):
        if data[name][0]:
            ax.plot(data[name][0], [100 * v for v in data[name][1]], "o-", label=label)
    ax.set(title="accuracy (%)", xlabel="step")
    ax.legend()
    ax = axes[2]
    ax.plot(*data["soft_mask_rate"], color="tab:red", label="soft-mask rate r")
    ax.set(title="soft-mask rate / learning rate", xlabel="step", ylim=(-0.05, 1.05))
    if data["learning_rate"][0]:
        twin = ax.twinx()
        twin.plot(*data["learning_rate"], color="tab:gray", linestyle="--", label="learning rate")
        twin.set_ylabel("learning rate")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return Path(save_figure(fig, path, dpi=100))
