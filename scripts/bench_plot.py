"""Draw the benchmark's PNG from its JSON (run by scripts/bench in the bench venv: matplotlib).

Left: end-to-end records/s of each contender, the raw consume ceiling as a line, each bar
labelled with its rate and its ratio to the ceiling. Middle: resident memory over time. Right,
when the run drained more than one codec (``--compression``): the bridge's records/s and peak
RSS per codec.

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
    codecs = [c for c in data.get("codecs") or [] if c.get("ok")]
    panels = 3 if len(codecs) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(12 + 4.5 * (panels - 2), 4.6),
                             gridspec_kw={"width_ratios": [1.1, 1, 0.8][:panels]})
    bars_ax, rss_ax = axes[0], axes[1]
    if panels == 3:
        plot_codecs(axes[2], codecs)

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


def plot_codecs(ax: plt.Axes, codecs: list[dict]) -> None:
    """The bridge per ``compression.type``: records/s as bars, peak RSS written on each."""
    positions = range(len(codecs))
    ax.barh(positions, [c["records_per_s"] for c in codecs], color=COLOURS["bridge"])
    ax.set_yticks(list(positions), [c["codec"] for c in codecs])
    ax.invert_yaxis()
    top = max(c["records_per_s"] for c in codecs)
    for y, codec in zip(positions, codecs, strict=True):
        ax.text(codec["records_per_s"] + top * 0.01, y,
                f"{codec['records_per_s']:,.0f}  {codec['peak_rss_mib']:.0f} MiB", va="center",
                fontsize=9)
    ax.set_xlim(0, top * 1.6)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x / 1000:,.0f}k"))
    ax.set_xlabel("wal-bridge records/s (peak RSS)")
    ax.set_title("per compression.type of the topic", fontsize=10)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
