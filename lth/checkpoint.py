"""The on-disk record of a run: atomic files, published rounds, and run.json.

Every file is written under a temporary name in its destination folder, flushed, fsynced and renamed into
place, so a reader never sees half a file. A round is assembled in a hidden `.round_NN.partial/` folder and
published by one rename to `round_NN/`: a round directory either holds everything or does not exist, and a
published round is never rewritten. Tensors are stored with safetensors (no pickle on load).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save
from torch import Tensor

RUN_FILE = "run.json"
REWIND_FILE = "rewind.safetensors"
ROUND_FILES = ("mask.safetensors", "start.safetensors", "final.safetensors", "metrics.json")


def atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        try:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    os.chmod(tmp.name, 0o644)  # NamedTemporaryFile creates 0600; outputs are meant to be shared and read
    os.replace(tmp.name, path)
    _fsync_dir(path.parent)


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    atomic_write(path, save({name: t.detach().cpu().contiguous() for name, t in tensors.items()}))


def load_tensors(path: Path, device: str = "cpu") -> dict[str, Tensor]:
    return load_file(path, device=device)


def round_dir(run_dir: Path, round_index: int) -> Path:
    return run_dir / f"round_{round_index:02d}"


def finished_rounds(run_dir: Path) -> int:
    """How many rounds are published: rounds 0..n-1 exist, so the next round to run is n."""
    count = 0
    while round_dir(run_dir, count).is_dir():
        count += 1
    return count


def publish_round(
    run_dir: Path, round_index: int, tensors: dict[str, dict[str, Tensor]], metrics: dict[str, Any]
) -> Path:
    """Write a finished round's files into a hidden folder, then rename it to round_NN/ in one step."""
    final = round_dir(run_dir, round_index)
    if final.exists():
        raise FileExistsError(f"{final} is already published; a finished round is never rewritten")
    partial = run_dir / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a crash mid-publish: never valid
    partial.mkdir()
    for stem, group in tensors.items():
        save_tensors(partial / f"{stem}.safetensors", group)
    write_json(partial / "metrics.json", metrics)
    os.rename(partial, final)
    _fsync_dir(run_dir)
    return final


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def update_run_record(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge fields into run.json (created if missing) and stamp the update time."""
    path = run_dir / RUN_FILE
    record = read_json(path) if path.exists() else {}
    record.update(fields, updated=now())
    write_json(path, record)
    return record


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
