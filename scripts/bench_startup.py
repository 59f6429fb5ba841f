"""Start-up of lth's commands as whole processes, against the interpreter alone and `import torch` in the same run.

    python scripts/bench_startup.py [--repeats 5] [--json]

Each command is started as its own process, repetitions interleaved, the median kept. `lth run` is timed from
process start to its first training step: the log line `round 0 · ... · training steps 1-N` that lth prints
right before it (Fashion-MNIST, LeNet-300-100, the default experiment), then the run is stopped. A run that
cannot find Fashion-MNIST (scripts/ensure_data.sh) is skipped. The reports read a finished `+debug=fast` run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LTH = [sys.executable, "-m", "lth"]
FIRST_STEP = "training steps 1-"


def process_seconds(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def first_step_seconds(command: list[str], cwd: Path) -> float:
    """Process start to the line lth prints as training begins; the run is then stopped (SIGTERM)."""
    started = time.perf_counter()
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
        assert run.stdout is not None
        for line in run.stdout:
            if FIRST_STEP in line:
                seconds = time.perf_counter() - started
                run.send_signal(signal.SIGTERM)
                run.communicate()
                return seconds
    raise RuntimeError(f"{' '.join(command)} ended before its first step (exit {run.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lth-startup-"))
    subprocess.run([*LTH, "run", "+debug=fast", f"hydra.run.dir={work / 'fast'}"], cwd=work, check=True,
                   capture_output=True)  # fmt: skip
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "lth --help": [*LTH, "--help"],
        "lth run --help": [*LTH, "run", "--help"],
        "lth run --cfg job": [*LTH, "run", "--cfg", "job"],
        "lth report RUN": [*LTH, "report", str(work / "fast")],
        "lth report RUN --json": [*LTH, "report", str(work / "fast"), "--json"],
    }
    timings: dict[str, list[float]] = {name: [] for name in commands}
    first_step: list[float] | None = []
    for repeat in range(args.repeats):
        for name, command in commands.items():
            timings[name].append(process_seconds(command, work))
        if first_step is not None:
            try:
                run = [*LTH, "run", "prune.rounds=0", f"hydra.run.dir={work / f'run{repeat}'}"]
                first_step.append(first_step_seconds(run, work))
            except RuntimeError as error:  # no Fashion-MNIST here: the start-up commands alone
                print(f"skipped lth run: {error}", file=sys.stderr)
                first_step = None
    if first_step:
        timings["lth run: process start to first step"] = first_step
    medians = {name: statistics.median(values) for name, values in timings.items()}
    torch_import = medians["python -c 'import torch'"]
    rows = [{"command": name, "seconds": s, "over_import_torch": s / torch_import} for name, s in medians.items()]
    if args.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "repeats": args.repeats, "rows": rows}, indent=2))  # fmt: skip
        return
    print(f"{os.cpu_count()} cores, median of {args.repeats}")
    print("| command | seconds | / `import torch` |\n|---|---|---|")
    for row in rows:
        print(f"| `{row['command']}` | {row['seconds']:.2f} | {row['over_import_torch']:.2f} |")


if __name__ == "__main__":
    main()
