"""`s2mlp bench --plot`: throughput against the paper's top-1 and against parameters."""

from __future__ import annotations

from s2mlp_cli import families
from s2mlp_cli.bench.measurement import Row
from s2mlp_cli.files import atomic_path


def draw_plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ok = [r for r in rows if r.status == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in (
        (axes[0], "paper_top1", "paper ImageNet top-1 (%)"),
        (axes[1], "params_m", "params (M)"),
    ):
        for r in ok:
            value = getattr(r, key)
            if value is None:
                continue
            ax.scatter(r.throughput, value, color="C0" if r.family == families.REFERENCE else "C1")
            ax.annotate(r.model, (r.throughput, value), fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("throughput (images/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
