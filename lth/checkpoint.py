"""The on-disk record of a run: atomic files, published rounds, in-progress states, run.json, the lock.

Every file is written under a temporary name in its destination folder, flushed, fsynced and renamed into
place, so a reader never sees half a file. A round is assembled in a hidden `.round_NN.partial/` folder and
published by one rename to `round_NN/`: a round directory either holds everything or does not exist, and a
published round is never rewritten. Round tensors are safetensors files; in-progress training states are
`torch.save` files read back with `weights_only=True` (no arbitrary unpickling). Every round and every state
carries SHA-256 checksums, so a truncated or corrupted file is named instead of being read. Under torchrun only
rank 0 writes (`main_only`) or locks; the other ranks read what it wrote after a barrier (lth.distributed).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.distributed import is_main, main_only
from lth.errors import ConfigError, RunFailed

if TYPE_CHECKING:  # torch is imported where tensors are read or written, so the read side starts without it
    from torch import Tensor

FORMAT_VERSION = 1  # of the outputs tree; a run written in another format is not resumed
RUN_FILE = "run.json"
SWEEP_FILE = "sweep.json"  # in a multirun folder, beside its jobs' run directories (lth.sweeps)
LOCK_FILE = ".lock"
INIT_FILE = "init.safetensors"
REWIND_FILE = "rewind.safetensors"
STATE_DIR = "state"
CHECKSUM_FILE = "checksums.json"
ROUND_FILES = ("mask.safetensors", "start.safetensors", "final.safetensors", "metrics.json", CHECKSUM_FILE)


def atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        try:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException as error:
            Path(tmp.name).unlink(missing_ok=True)
            if isinstance(error, OSError) and error.filename is None:  # a full disk: say which file it was
                error.filename = str(path)
            raise
    try:
        os.chmod(tmp.name, 0o644)  # NamedTemporaryFile creates 0600; outputs are meant to be shared and read
        os.replace(tmp.name, path)
    except BaseException:  # e.g. `path` is a folder: leave no temporary file behind
        Path(tmp.name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def check_writable(path: Path, what: str) -> None:
    """OutputError (exit 1) unless a file can be created at `path`'s nearest existing folder, tried with an unnamed
    temporary file (nothing appears there), so an unwritable output fails before the work that would fill it."""
    from lth.errors import OutputError

    folder = next((p for p in (path, *path.parents) if p.exists()), Path.cwd())
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(f"cannot write {what} {path}: {error.strerror or error}") from None


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save

    atomic_write(path, save({name: t.detach().cpu().contiguous() for name, t in tensors.items()}))


def load_tensors(path: Path, device: str = "cpu") -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(path, device=device)


def round_dir(run_dir: Path, round_index: int) -> Path:
    return run_dir / f"round_{round_index:02d}"


def finished_rounds(run_dir: Path) -> int:
    """How many rounds are published: rounds 0..n-1 exist, so the next round to run is n."""
    count = 0
    while round_dir(run_dir, count).is_dir():
        count += 1
    return count


def published_rounds(run_dir: Path) -> int:
    """`finished_rounds`, refusing a damaged run: RunFailed when a round folder is missing between published ones
    (rounds are published in order, so a gap means files were removed; resuming would retrain the missing round
    and then fail to publish the next one, which exists)."""
    count = finished_rounds(run_dir)
    later = sorted(
        p.name for p in run_dir.glob("round_*") if p.is_dir() and p.name[6:].isdigit() and int(p.name[6:]) > count
    )
    if later:
        raise RunFailed(
            f"{round_dir(run_dir, count)} is missing, but {', '.join(later)} exist(s); this run directory is damaged "
            f"(rounds are published in order): restore round {count} or move the later rounds away"
        )
    return count


@main_only
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
    write_json(partial / CHECKSUM_FILE, {p.name: sha256_file(p) for p in sorted(partial.iterdir())})
    os.rename(partial, final)
    _fsync_dir(run_dir)
    return final


def finished_round(run_dir: Path, round_index: int) -> Path:
    """A published round's folder after checking it: ConfigError when the round does not exist (naming the
    rounds that do), RunFailed when its files do not match their checksums or a round before it is missing."""
    count = published_rounds(run_dir)
    if not 0 <= round_index < count:
        have = f"rounds 0..{count - 1} are finished" if count else "it has no finished rounds"
        raise ConfigError(f"{run_dir}: round {round_index} does not exist; {have}")
    return verify_round(run_dir, round_index)


def sha256_file(path: Path) -> str:
    return _sha256(path.read_bytes())


def verify_round(run_dir: Path, round_index: int) -> Path:
    """Check a published round's files against its checksums; RunFailed names the first bad file."""
    folder = round_dir(run_dir, round_index)
    try:
        expected = read_json(folder / CHECKSUM_FILE)
    except (OSError, ValueError):
        expected = None
    if not isinstance(expected, dict) or set(expected) != set(ROUND_FILES) - {CHECKSUM_FILE}:
        raise RunFailed(f"{folder / CHECKSUM_FILE} is missing, unreadable or incomplete; this round cannot be trusted")
    for name, digest in expected.items():
        _require_intact(folder / name, digest)
    return folder


@main_only
def seal_tensors(run_dir: Path, name: str, tensors: dict[str, Tensor]) -> None:
    """Save a run-level tensor file (θ0, θk) and then record its checksum: until then it does not count."""
    path = run_dir / name
    save_tensors(path, tensors)
    write_json(run_dir / CHECKSUM_FILE, {**_run_checksums(run_dir), name: sha256_file(path)})


def is_sealed(run_dir: Path, name: str) -> bool:
    return name in _run_checksums(run_dir)


def load_sealed(run_dir: Path, name: str, device: str) -> dict[str, Tensor]:
    path = run_dir / name
    _require_intact(path, _run_checksums(run_dir).get(name))
    return load_tensors(path, device)


def _run_checksums(run_dir: Path) -> dict[str, str]:
    try:
        sums = read_json(run_dir / CHECKSUM_FILE)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise RunFailed(f"{run_dir / CHECKSUM_FILE} is unreadable; the run's θ0/θk cannot be trusted") from None
    return sums if isinstance(sums, dict) else {}


def _require_intact(path: Path, digest: str | None) -> None:
    if digest is None or not path.is_file() or sha256_file(path) != digest:
        raise RunFailed(f"{path} is missing or corrupted (its SHA-256 does not match {CHECKSUM_FILE})")


@main_only
def save_state(run_dir: Path, round_index: int, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write an in-progress training state with its checksum; keep only the newest `keep` of the round."""
    folder = run_dir / STATE_DIR
    folder.mkdir(exist_ok=True)
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = folder / f"round_{round_index:02d}.step_{step:07d}.pt"
    atomic_write(path, data)
    # The sidecar is written last: a state without one is incomplete and never read.
    write_json(path.with_suffix(".json"), {"round": round_index, "step": step, "sha256": _sha256(data)})
    for old in _states(run_dir, round_index)[keep:]:
        old.with_suffix(".pt").unlink(missing_ok=True)
        old.unlink()
    return path


def load_state(run_dir: Path, round_index: int, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest intact in-progress state of a round, or None; a corrupted one is named and skipped."""
    for sidecar in _states(run_dir, round_index):
        path = sidecar.with_suffix(".pt")
        try:
            expected = read_json(sidecar)["sha256"]
            data = path.read_bytes()
        except (OSError, ValueError, KeyError):
            warn(f"{path} is missing or unreadable; trying an older state")
            continue
        if _sha256(data) != expected:
            warn(f"{path} is corrupted (its SHA-256 does not match {sidecar.name}); trying an older state")
            continue
        import pickle

        import torch

        try:
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")  # moved on load_state_dict
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:  # forged with a fitting sidecar
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            warn(f"{path} is not a state lth wrote ({reason[:120]}); trying an older state")
    return None


@main_only
def clear_states(run_dir: Path) -> None:
    """Drop in-progress states once their round is published (they can never be needed again)."""
    shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)


def _states(run_dir: Path, round_index: int) -> list[Path]:
    """Sidecars of a round's states, newest first."""
    return sorted((run_dir / STATE_DIR).glob(f"round_{round_index:02d}.step_*.json"), reverse=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Keep a second process off a run directory.

    An exclusive `flock` on `.lock`: the kernel drops it when its process dies, however it dies, so a stale lock
    can never block a resume and two processes can never both hold it. The file names the holder for the error
    message.
    """
    if not is_main():  # the other ranks of a torchrun job work under rank 0's lock
        yield
        return
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = _lock_owner(path) or {"pid": "?", "host": "?", "since": "?"}
            raise ConfigError(
                f"{run_dir} is in use by pid {owner['pid']} on {owner['host']} (since {owner['since']}); "
                "wait for it or stop it"
            ) from None
        if _still_at(fd, path):
            break
        os.close(fd)  # its previous holder removed the file between our open and our lock: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}).encode())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _still_at(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _lock_owner(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def find_runs(path: Path) -> list[Path]:
    """The run directories at or under `path` (a run, or a folder of runs such as a sweep)."""
    if (path / RUN_FILE).is_file():
        return [path]
    runs = sorted(p.parent for p in path.rglob(RUN_FILE)) if path.is_dir() else []
    if not runs:
        raise ConfigError(f"{path} is not an lth run directory (no {RUN_FILE} in it or below it)")
    return runs


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """run.json, or a ConfigError naming it when it is damaged."""
    path = run_dir / RUN_FILE
    try:
        record = read_json(path)
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} is not an lth run directory (no {RUN_FILE} in it)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not an lth run record; this run directory is damaged") from None
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror or error})") from None
    except ValueError:  # UnicodeDecodeError too
        raise ConfigError(f"{path} is not valid JSON; this run directory is damaged") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path} is not an lth run record (it holds no JSON object)")
    return record


@main_only
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
