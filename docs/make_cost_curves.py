"""Draw docs/cost_curves.png and the cost table of docs/performance.md from docs/cost_curves.json.

python -m benchmarks.cost_curves --save docs/cost_curves.json   # measure (about 15 min here)
python -m docs.make_cost_curves                                 # then draw and write the table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no screen needed
import matplotlib.pyplot as plt  # noqa: E402

from lungdx.atomic import atomic_path, write_text  # noqa: E402

DOCS = Path(__file__).resolve().parent
START, END = "<!-- cost table: python -m docs.make_cost_curves -->", "<!-- end of cost table -->"


def figure(result: dict, out: Path) -> None:
    sizes = result["images"]
    real = {f"{n} ({name})": n for name, n in result["real_sizes"].items()}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for col, model in enumerate(("cnn", "vgg19")):
        stages = [s for s in result["fits"][model] if s not in ("total", "dvc (the rest)")]
        for row, what, label in ((0, "seconds", "seconds"), (1, "peak_rss_mb", "peak memory (MB)")):
            ax = axes[row, col]
            for stage in stages:
                fit = result["fits"][model][stage].get(what)
                if fit is None:
                    continue
                measured = [result["measured"][str(n)][model][stage][what] for n in sizes]
                line = ax.plot(sizes, measured, "o", label=stage)[0]
                xs = np.geomspace(min(sizes), max(real.values()), 50)
                ys = fit["fixed"] + fit["per_1000_images"] * xs / 1000
                ax.plot(xs[ys > 0], ys[ys > 0], "-", color=line.get_color(), alpha=0.6)  # log axes: > 0 only
            for name, n in real.items():
                ax.axvline(n, color="grey", lw=0.8, ls=":")
                ax.text(
                    n,
                    0.98,
                    name,
                    transform=ax.get_xaxis_transform(),
                    rotation=90,
                    va="top",
                    ha="right",
                    fontsize=8,
                    color="grey",
                )
            ax.set_xscale("log"), ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.set_title(
                f"{model}: {label}"
                + (
                    f" (train: {result['cnn_epochs_measured']} epochs, as measured)"
                    if model == "cnn" and row == 0
                    else ""
                )
            )
            ax.grid(True, which="both", alpha=0.3)
        axes[1, col].set_xlabel("images in the database")
    for ax in axes[0]:
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(
        f"Cost per stage: measured (dots) and fitted fixed + per-image (lines); "
        f"{result['machine']['cpu']}, {result['machine']['cores']} cores, no GPU",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def table(result: dict) -> str:
    sizes, real = result["images"], result["real_sizes"]
    head = (
        "| model | stage | "
        + " | ".join(f"{n} img: s / MB" for n in sizes)
        + " | fit: fixed s + s per 1000 img | "
        + " | ".join(f"{n} img ({name})" for name, n in real.items())
        + " |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for model in ("cnn", "vgg19"):
        for stage, fit in result["fits"][model].items():
            if stage == "total":
                continue
            cells = []
            for n in sizes:
                m = result["measured"][str(n)][model][stage]
                cells.append(f"{m['seconds']:.1f}" + (f" / {m['peak_rss_mb']:.0f}" if "peak_rss_mb" in m else ""))
            sec = fit["seconds"]
            epochs = (
                f" ({result['cnn_epochs_measured']} epochs; projected: {result['cnn_epochs_projected']})"
                if (model, stage) == ("cnn", "train")
                else ""
            )
            rows.append(
                f"| {model} | {stage} | "
                + " | ".join(cells)
                + f" | {sec['fixed']:.1f} + {sec['per_1000_images']:.1f}{epochs} | "
                + " | ".join(f"{max(sec['projected'][name], 0) / 60:.1f} min" for name in real)
                + " |"
            )
    totals = result["projected_total_minutes"]
    rows.append("")
    rows.append(
        "Whole `dvc repro` from scratch, projected: "
        + "; ".join(
            f"{model} " + ", ".join(f"{t[name]} min at {n} images" for name, n in real.items())
            for model, t in totals.items()
        )
        + ". Longest stage: "
        + "; ".join(
            f"{model}: " + ", ".join(f"{k} → {v}" for k, v in d.items())
            for model, d in result["dominant_stage"].items()
        )
        + "."
    )
    return "\n".join(rows)


def main(
    result_path: Path = DOCS / "cost_curves.json",
    png: Path = DOCS / "cost_curves.png",
    page: Path = DOCS / "performance.md",
) -> None:
    try:
        result = json.loads(result_path.read_text())
        text = page.read_text()
    except (OSError, ValueError) as exc:
        sys.exit(
            f"cannot read {getattr(exc, 'filename', None) or result_path}: {exc}; measure first with "
            f"python -m benchmarks.cost_curves --save {result_path}"
        )
    if not isinstance(result, dict) or result.get("benchmark") != "cost_curves":
        sys.exit(f"{result_path}: not a result of benchmarks.cost_curves")
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        sys.exit(f"{page}: needs the line {START}, then later {END}, where the table goes")
    figure(result, png)
    write_text(page, f"{text[:start]}{START}\n{table(result)}\n{text[end:]}")
    print(f"wrote {png} and the table in {page}")


if __name__ == "__main__":
    main()
