"""Draw the ratios of a benchmark result as a horizontal bar chart.

Usage::

    python bench/plot.py RESULT.json OUT.png

Each bar is one metric of one transport relative to kombu's redis transport,
oriented so that above 1 is better: the ratio of medians for rates, and its
inverse for latency and cost. The x axis is logarithmic, so that twice as fast
and twice as slow are bars of equal length. Needs matplotlib
(``pip install kombu-redis-streams[bench]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render straight to a file

import matplotlib.pyplot as plt  # noqa: E402

#: Bar colours by transport name; others get matplotlib's default cycle.
COLOURS = {"redis-streams": "#c0392b", "pyamqp": "#7f8c8d"}


def collect(report: dict[str, Any]) -> tuple[list[str], dict[str, list[float | None]]]:
    """Return the metric labels and, per transport, the relative performance."""
    baseline = report["baseline"]
    transports = [name for name in report["brokers"] if name != baseline]
    labels: list[str] = []
    values: dict[str, list[float | None]] = {name: [] for name in transports}
    for metric in report["metrics"]:
        relative = {
            name: metric["results"].get(name, {}).get("relative_performance")
            for name in transports
        }
        if not any(relative.values()):
            continue  # n/a everywhere, or the baseline has no figure
        labels.append(f"{metric['title']} ({metric['unit']})")
        for name in transports:
            values[name].append(relative[name])
    return labels, values


def draw(report: dict[str, Any], out: Path) -> None:
    """Render the chart of ``report`` to the PNG file ``out``."""
    labels, values = collect(report)
    if not labels:
        raise SystemExit("The result has no ratio to draw.")

    transports = list(values)
    height = 0.8 / len(transports)
    figure, axes = plt.subplots(figsize=(9, 0.32 * len(labels) * len(transports) + 2))
    positions = range(len(labels))
    for index, name in enumerate(transports):
        offsets = [position - 0.4 + height * (index + 0.5) for position in positions]
        # A missing figure is drawn as no bar, at ratio 1.
        widths = [value if value else 1.0 for value in values[name]]
        bars = axes.barh(
            offsets,
            [width - 1 for width in widths],
            left=1,
            height=height,
            color=COLOURS.get(name),
            label=f"{name} vs {report['baseline']}",
        )
        for bar, value in zip(bars, values[name]):
            if value:
                x = bar.get_x() + bar.get_width()
                axes.annotate(
                    f"{value:.2f}",
                    (x, bar.get_y() + bar.get_height() / 2),
                    xytext=(3 if value >= 1 else -3, 0),
                    textcoords="offset points",
                    ha="left" if value >= 1 else "right",
                    va="center",
                    fontsize=7,
                )

    axes.set_xscale("log")
    # Room on both sides for the labels of the longest bars.
    drawn = [value for series in values.values() for value in series if value]
    axes.set_xlim(min(min(drawn), 1.0) / 3, max(max(drawn), 1.0) * 3)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_yticks(list(positions), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(
        f"relative to kombu's {report['baseline']} transport (log scale, >1 is better)"
    )
    machine = report.get("machine", {})
    axes.set_title(
        f"kombu transports, {report.get('mode', '')} run of {report.get('date', '')}\n"
        f"{machine.get('nproc', '?')} CPUs, {machine.get('cpu_model', '')}",
        fontsize=9,
    )
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(axis="x", which="both", linewidth=0.3)

    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Read the JSON result and write the chart."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="JSON written by bench/run.py")
    parser.add_argument("out", type=Path, help="PNG file to write")
    args = parser.parse_args(argv)
    report = json.loads(args.result.read_text())
    draw(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
