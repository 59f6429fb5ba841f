#!/usr/bin/env bash
# Issue 19's comparison (docs/results.md, "IMP against sparse training and early tickets"): LeNet-300-100 on
# Fashion-MNIST, 1 epoch per round (917 steps), seeds 0, 1 and 2. The IMP ticket (20% a round, 17 rounds: 21%, 5.6%
# and 2.3% among its rounds) and the early-bird ticket against one training of RigL, SET, static ERK, static
# uniform and SNIP at 20%, 5% and 2%. About an hour on 2 shared CPU cores.
# Usage: bash scripts/dst_vs_imp.sh OUT_DIR; then lth report OUT_DIR/* --table markdown (or --plot-dir DIR).
set -euo pipefail
out=${1:?usage: scripts/dst_vs_imp.sh OUT_DIR}
common=(train.epochs=1 ui.progress=false)
densities=prune.target_density=0.2,0.05,0.02
lth run "${common[@]}" prune.rounds=17 train.replicates=3 "hydra.run.dir=$out/imp"
lth run -m "${common[@]}" prune=rigl,set,static "$densities" seed=0,1,2 "hydra.sweep.dir=$out/dst"
lth run -m "${common[@]}" prune=static prune.distribution=uniform "$densities" seed=0,1,2 \
  "hydra.sweep.dir=$out/static_uniform"
lth run -m "${common[@]}" prune=oneshot prune.criterion=snip "$densities" train.replicates=3 \
  "hydra.sweep.dir=$out/snip"  # SNIP scores θ0; its dense round 0 is the reference line
lth run -m "${common[@]}" prune.early_ticket=true train.eval_every=100 prune.rounds=17 seed=0,1,2 \
  "hydra.sweep.dir=$out/early_bird"  # five evaluations before the mask can count as settled
