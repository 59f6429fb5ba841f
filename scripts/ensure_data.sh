#!/usr/bin/env bash
# Make sure the default dataset (Fashion-MNIST idx files) is on this machine for `lth run`.
# Order: $LTH_DATA (if it holds the files), Debian's /usr/share/datasets/fashion-mnist (installed with apt when
# we are root or have sudo), else explain how to get the data.
set -euo pipefail
system_dir=/usr/share/datasets/fashion-mnist
have_files() { ls "$1"/train-images-idx3-ubyte* "$1"/t10k-labels-idx1-ubyte* >/dev/null 2>&1; }

if [ -n "${LTH_DATA:-}" ] && { have_files "$LTH_DATA" || have_files "$LTH_DATA/fashion-mnist" || have_files "$LTH_DATA/FashionMNIST/raw"; }; then
  echo "data: Fashion-MNIST found under \$LTH_DATA=$LTH_DATA"; exit 0
fi
if have_files "$system_dir"; then
  echo "data: Fashion-MNIST found in $system_dir"; exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "data: installing Debian's dataset-fashion-mnist into $system_dir"
  if $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null && have_files "$system_dir"; then
    exit 0
  fi
fi
cat >&2 <<MSG
data: Fashion-MNIST is not on this machine and could not be installed with apt.
  Get it one of these ways, then run 'make run' again:
  - sudo apt-get install dataset-fashion-mnist        (Debian/Ubuntu; files land in $system_dir)
  - put the four idx files (train-images-idx3-ubyte.gz, ...) in a folder and export LTH_DATA=<folder>
  - let torchvision download them: make run ARGS='dataset.download=true dataset.root=data'
MSG
exit 1
