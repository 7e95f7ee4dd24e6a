"""Draw the benchmark's PNG from its JSON (run by scripts/bench in the bench venv: matplotlib).

Left: end-to-end records/s of each contender, the raw consume ceiling as a line, each bar
labelled with its rate and its ratio to the ceiling. Right: resident memory over time.

    python scripts/bench_plot.py docs/performance.json docs/performance.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

COLOURS = {"ceiling": "#9e9e9e", "ceiling-bridge": "#cfcfcf", "bridge": "#1565c0",
           "bridge-avro": "#64b5f6", "naive": "#ef6c00", "quix": "#6a1b9a"}


def main(source: Path, target: Path) -> int:
    data = json.loads(source.read_text())
    runs = [r for r in data["runs"] if r.get("ok")]
    if not runs:
        print("nothing to plot: no run finished", file=sys.stderr)
        return 1
    ceiling = next((r for r in runs if r["name"] == "ceiling"), None)
    fig, (bars_ax, rss_ax) = plt.subplots(1, 2, figsize=(12, 4.6),
                                          gridspec_kw={"width_ratios": [1.1, 1]})

    names = [r["label"] for r in runs]
    rates = [r["records_per_s"] for r in runs]
    colours = [COLOURS.get(r["name"], "#607d8b") for r in runs]
    positions = range(len(runs))
    bars_ax.barh(positions, rates, color=colours)
    bars_ax.set_yticks(list(positions), names)
    bars_ax.invert_yaxis()
    bars_ax.set_xlabel("records/s, end to end (higher is better)")
    top = max(rates)
    for y, run in zip(positions, runs, strict=True):
        text = f"{run['records_per_s']:,.0f}"
        if ceiling and not run["name"].startswith("ceiling"):
            text += f"  ({run['records_per_s'] / ceiling['records_per_s']:.2f}x ceiling)"
        bars_ax.text(run["records_per_s"] + top * 0.01, y, text, va="center", fontsize=9)
    bars_ax.set_xlim(0, top * 1.45)
    bars_ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x / 1000:,.0f}k"))
    events = data["config"]["events"]
    bars_ax.set_title(f"{events:,} events, {data['config']['partitions']} partitions, "
                      f"batch {data['config']['batch_size']:,}", fontsize=10)

    for run in runs:
        samples = run.get("rss_samples") or []
        if samples:
            xs = [t for t, _ in samples]
            ys = [rss / 2**20 for _, rss in samples]
            rss_ax.plot(xs, ys, label=run["label"], color=COLOURS.get(run["name"], "#607d8b"))
    rss_ax.axhline(256, color="#c62828", linestyle="--", linewidth=1)
    rss_ax.annotate("256 MiB target", xy=(1, 256), xycoords=("axes fraction", "data"),
                    xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom",
                    color="#c62828", fontsize=8)
    rss_ax.set_xlabel("seconds since start")
    rss_ax.set_ylabel("resident memory, MiB")
    rss_ax.set_title("memory while draining the backlog", fontsize=10)
    rss_ax.legend(fontsize=8, loc="lower right")
    peak = max((rss for r in runs for _, rss in r.get("rss_samples") or []), default=0) / 2**20
    rss_ax.set_ylim(0, max(300, peak * 1.1))

    load = data["machine"]["loadavg_start"]
    fig.suptitle(f"wal-bridge drain benchmark ({data['machine']['cpus']} CPUs, "
                 f"load average at start {load[0]:.2f})", fontsize=11)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
