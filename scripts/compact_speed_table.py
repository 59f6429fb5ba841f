"""The README's "What a ticket buys" table: per round of a finished run, density, dead units, the compacted size
and the measured CPU speed of the compacted network against the masked one (lth.compact, lth.speed).

    python scripts/compact_speed_table.py RUN_DIR [--repeats 40]

Masked and compact are timed alternately, `--trials` trials each (each trial: the median of repeated calls after
warm-up, lth.speed.timings); the best trial is reported, as a shared machine's bursts of load only ever slow a
trial down. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lth import compact, speed
from lth.checkpoint import finished_rounds, read_json, round_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--first", type=int, default=0, help="the first round to measure")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--trials", type=int, default=5, help="alternating trials per network")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {speed.machine()['cpu_count']} CPUs\n")
    print(
        "| round | density | fc1 / fc2 units kept | parameters (compact) | MACs/example (compact) | "
        "latency b=1 masked → compact (ms) | throughput b=256 masked → compact (/ms) | speedup b=1 | speedup b=256 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for index in range(args.first, finished_rounds(args.run)):
        variants, info, shape = speed.round_variants(args.run, index)
        masked, small = variants["masked"], variants["compact"] or variants["masked"]
        density = read_json(round_dir(args.run, index) / "metrics.json")["density"]
        runs: dict[str, list[dict]] = {"masked": [], "compact": []}
        for _ in range(args.trials):
            for name, model in (("masked", masked), ("compact", small)):
                runs[name].append(speed.timings(model, tuple(shape), cpu, args.repeats, warmup=5))
        latency = {name: min(r["latency_ms"] for r in got) for name, got in runs.items()}
        through = {name: max(r["throughput_per_s"] for r in got) / 1e3 for name, got in runs.items()}
        sizes = speed.sizes(small, tuple(shape))
        units = info.get("units") or {
            link.producer: [masked.get_submodule(link.producer).out_features] * 2 for link in compact.links(masked)
        }
        kept = " / ".join(f"{after}/{before}" for before, after in units.values())
        print(
            f"| {index} | {density:.1%} | {kept} | {sizes['parameters']:,} | {sizes['macs']:,} | "
            f"{latency['masked']:.3f} → {latency['compact']:.3f} | "
            f"{through['masked']:,.0f} → {through['compact']:,.0f} | "
            f"{latency['masked'] / latency['compact']:.2f}x | {through['compact'] / through['masked']:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
