"""`s2mlp bench --plot`: throughput against the paper's top-1 and against parameters, with each point's
interquartile range across timed calls as an error bar, a legend, and the conditions in a caption, so a
noisy CPU ranking does not pass for a result."""

from __future__ import annotations

from typing import Any

from s2mlp_cli import families
from s2mlp_cli.bench.measurement import Row
from s2mlp_cli.files import atomic_path


def caption(env: dict[str, Any], rows: list[Row]) -> str:
    """The conditions the numbers were measured under, in one line."""
    batches = ",".join(str(b) for b in dict.fromkeys(r.batch_size for r in rows if r.batch_size))
    load = env.get("load_before")
    parts = [
        f"{env.get('device_name', '?')} ({env.get('device', '?')})",
        f"dtype {env.get('dtype', '?')}",
        f"batch {batches or '?'}",
        f"{env.get('date', '')[:10] or 'date not recorded'}",
        f"load before {load[0]:.2f} on {env.get('cpu_count', '?')} cores" if load else "load not recorded",
        f"{env.get('iters', '?')} timed calls in {env.get('rounds', '?')} rounds",
    ]
    return "; ".join(parts)


def error_bars(rows: list[Row]) -> tuple[list[float], list[float]]:
    """Each point's distance to its interquartile range's ends, from the measured (unrounded) values: a
    small spread still draws a bar."""
    lo = [max(0.0, r.throughput - r.throughput_iqr[0]) if r.throughput_iqr else 0.0 for r in rows]
    hi = [max(0.0, r.throughput_iqr[1] - r.throughput) if r.throughput_iqr else 0.0 for r in rows]
    return lo, hi


def draw_plot(rows: list[Row], path: str, env: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    env = env or {}
    ok = [r for r in rows if r.status == "ok" and r.throughput]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, key, label in (
        (axes[0], "paper_top1", "paper ImageNet top-1 (%)"),
        (axes[1], "params_m", "params (M)"),
    ):
        for ours, colour, name in ((True, "C0", "S²-MLPv2 (ours)"), (False, "C1", "peers")):
            group = [
                r for r in ok if (r.family == families.REFERENCE) == ours and getattr(r, key) is not None
            ]
            if not group:
                continue
            x, y = [r.throughput for r in group], [getattr(r, key) for r in group]
            lo, hi = error_bars(group)
            ax.errorbar(x, y, xerr=[lo, hi], fmt="o", color=colour, capsize=3, label=name)
            for r, xv, yv in zip(group, x, y, strict=True):
                tag = f"{r.model} @{r.batch_size}" if len({g.batch_size for g in ok}) > 1 else r.model
                ax.annotate(tag, (xv, yv), fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("throughput (images/s; bars: interquartile range of the timed calls)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("s2mlp bench: throughput against accuracy and size")
    fig.text(0.5, 0.01, caption(env, ok), ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
