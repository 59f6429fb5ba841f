"""Finding a dataset's files on disk, the same way for every file-based source.

Search order: `dataset.root` alone when it is set; otherwise `$LTH_DATA`, then the system folder
/usr/share/datasets (Debian's dataset-* packages), then, with `dataset.download=true`, the download folder. In each
of those base folders a source looks in the base itself and in its known subfolders (Debian's folder name,
torchvision's layout), so files put there by apt, by hand or by torchvision are all found. A source subclasses
`FileSource`, says which files make a complete copy (`files_in`) and how to decode them (`decode`); the errors
for missing data and the torchvision download are shared.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth.data.registry import RawData, Source, register
from lth.errors import ConfigError
from lth.schema import DatasetConfig

SYSTEM_DATA_DIR = Path("/usr/share/datasets")


def download_root(cfg: DatasetConfig) -> Path:
    """Where `dataset.download=true` puts the files: dataset.root, else $LTH_DATA, else ./data."""
    return Path(cfg.root or os.environ.get("LTH_DATA") or "data").expanduser()


def base_dirs(cfg: DatasetConfig) -> list[Path]:
    """The base folders searched, in order (an explicit dataset.root is the only one, so it is never shadowed)."""
    if cfg.root is not None:
        return [Path(cfg.root).expanduser()]
    bases = [Path(p).expanduser() for p in [os.environ.get("LTH_DATA")] if p]
    bases.append(SYSTEM_DATA_DIR)
    if cfg.download:
        bases.append(download_root(cfg))
    return bases


@dataclass(frozen=True)
class FileSource:
    """A dataset read from files; subclasses implement `files_in` and `decode`."""

    name: str  # registry and config name, e.g. cifar10
    subdirs: tuple[str, ...]  # where else under each base folder the files may lie (Debian's, torchvision's)
    described: str  # the files, for the error message when none are found
    torchvision_name: str | None  # torchvision's dataset class used by dataset.download=true; None: no download
    download_calls: tuple[Mapping[str, Any], ...] = ({"train": True}, {"train": False})  # its keyword arguments

    def files_in(self, folder: Path) -> dict[str, Path] | None:
        """The files of a complete copy in `folder`, or None when any is missing."""
        raise NotImplementedError

    def decode(self, files: dict[str, Path], cfg: DatasetConfig) -> RawData:
        raise NotImplementedError

    def candidate_dirs(self, cfg: DatasetConfig) -> list[Path]:
        """Every folder that may hold the files, in search order."""
        dirs = [base / sub for base in base_dirs(cfg) for sub in ("", *self.subdirs)]
        return list(dict.fromkeys(dirs))

    def find(self, cfg: DatasetConfig) -> dict[str, Path] | None:
        for folder in self.candidate_dirs(cfg):
            if folder.is_dir() and (found := self.files_in(folder)) is not None:
                return found
        return None

    def check(self, cfg: DatasetConfig) -> None:
        if self.find(cfg) is None and not (cfg.download and self.torchvision_name):
            looked = ", ".join(str(d) for d in self.candidate_dirs(cfg))
            fixes = "set dataset.root to their folder or set $LTH_DATA"
            if self.torchvision_name:
                fixes = "set dataset.root to their folder, set $LTH_DATA, or add dataset.download=true"
            raise ConfigError(f"dataset.root: no {self.name} {self.described} in any of: {looked}; {fixes}")

    def read(self, cfg: DatasetConfig) -> RawData:
        return self.decode(self.located(cfg), cfg)

    def located(self, cfg: DatasetConfig) -> dict[str, Path]:
        """The files of a complete copy, downloaded first when `dataset.download` allows it; refused if none."""
        files = self.find(cfg)
        if files is None:
            self.check(cfg)  # raises unless a download may fetch them
            self.download(cfg)
            files = self.find(cfg)
            if files is None:
                raise ConfigError(
                    f"dataset.download: torchvision's {self.torchvision_name} left no {self.described} "
                    f"in {download_root(cfg)}"
                )
        return files

    def download(self, cfg: DatasetConfig) -> None:
        """Let torchvision fetch (and check the checksums of) the files into the download folder."""
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, str(self.torchvision_name))
        root = download_root(cfg)
        existing = _tree(root)
        try:
            for kwargs in self.download_calls:
                dataset_class(root=str(root), download=True, **kwargs)
        except (OSError, RuntimeError) as error:
            _remove_new(root, existing)  # a failed download leaves the disk as it found it
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"dataset.download: torchvision could not download {self.name}: {message}") from None

    def register(self) -> None:
        register(self.name, Source(check=self.check, read=self.read))


def first_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of `names` that is a file in `folder` (e.g. a file and its .gz twin)."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _tree(root: Path) -> set[Path]:
    """Every path under `root` and above it that exists now (what a failed download must not remove)."""
    existing = {parent for parent in (root, *root.parents) if parent.exists()}
    return existing | set(root.rglob("*")) if root.is_dir() else existing


def _remove_new(root: Path, existing: set[Path]) -> None:
    """Remove what appeared under `root` (and `root` with the folders above it) since `existing` was taken."""
    created = sorted(set(root.rglob("*")) - existing, key=lambda path: len(path.parts), reverse=True)
    for path in created:
        path.rmdir() if path.is_dir() else path.unlink()
    for folder in (root, *root.parents):
        if folder in existing:
            break
        if folder.is_dir():
            folder.rmdir()
