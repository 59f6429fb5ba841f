#!/usr/bin/env bash
# Issue 19's small comparison: LeNet-300-100 on Fashion-MNIST, 1 epoch per round (917 steps), seeds 0 and 1.
# The IMP ticket (20% a round, 17 rounds: 21%, 5.5% and 2.3% among its rounds) against one sparse training run of
# RigL, SET, static ERK and static uniform at 20%, 5% and 2%. About 20 CPU-minutes on 2 shared cores.
# Usage: bash scripts/dst_vs_imp.sh OUT_DIR; then lth report OUT_DIR --table (or --plot-dir OUT_DIR/figures).
set -euo pipefail
out=${1:?usage: scripts/dst_vs_imp.sh OUT_DIR}
common=(train.epochs=1 ui.progress=false)
lth run "${common[@]}" prune.rounds=17 train.replicates=2 "hydra.run.dir=$out/imp"
lth run -m "${common[@]}" prune=rigl,set,static prune.target_density=0.2,0.05,0.02 seed=0,1 \
  "hydra.sweep.dir=$out/dst"
lth run -m "${common[@]}" prune=static prune.distribution=uniform prune.target_density=0.2,0.05,0.02 seed=0,1 \
  "hydra.sweep.dir=$out/static_uniform"
