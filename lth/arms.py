"""What researchers call the arms of an experiment: legend and column names from the keys that differ.

A group of runs is labelled by the config keys that vary between the groups of a report (`lth.report.Group`).
Known choices read as the papers name them (a ticket, reinit, random pruning, SNIP, LR rewinding ...); other
keys as `key value` with the key's last part. The arm with every known choice at its IMP default is the ticket.
"""

from __future__ import annotations

import json
from typing import Any

from lth.schema import PruneConfig

# key -> value -> words; a value missing here is the IMP default of that key (it adds no words)
_WORDS: dict[str, dict[str, str]] = {
    "prune.retrain": {"reinit": "reinit", "lr_rewind": "LR rewinding", "finetune": "fine-tuning"},
    "prune.control": {
        "shuffle_layer": "random pruning",
        "signed_constant": "signed constant",
        "invert": "inverted mask",
    },
    "prune.criterion": {
        "random": "random pruning",
        "snip": "SNIP",
        "grasp": "GraSP",
        "synflow": "SynFlow",
        "magnitude_increase": "magnitude increase",
    },
    "prune.schedule": {"oneshot": "one-shot", "static": "static", "set": "SET", "rigl": "RigL"},
    "prune.scope": {"global": "global"},
    "prune.early_ticket": {"True": "early-bird ticket"},
    "prune.structure": {"neuron": "neuron pruning", "channel": "channel pruning", "head": "head pruning", "nm": "N:M"},
}
# the IMP default of each of those keys is the schema's own default
_DEFAULTS = {key: str(getattr(PruneConfig(), key.partition(".")[2])) for key in _WORDS}
# keys that only say where a control's masks came from: the control's own keys already name the arm
_IMPLIED = ("prune.masks_from",)
# Sparse from the start (lth.dst): one sparse round; SET and RigL are ERK unless said otherwise, static says which
_SPARSE = {"static": "static", "set": "SET", "rigl": "RigL"}
_SPREAD = {"erk": "ERK", "uniform": "uniform", "global": "global"}


def arm_name(label: dict[str, Any]) -> str:
    """`{'prune.retrain': 'reinit', 'prune.masks_from': '...'}` -> `reinit`; `{'prune.rate': 0.3}` -> `rate 0.3`."""
    words = []
    sparse = str(label.get("prune.schedule")) in _SPARSE
    one_shot = str(label.get("prune.schedule")) == "oneshot"
    for key, value in label.items():
        # a sparse or one-shot arm's density is its table row and its x: one name across densities makes it one
        # column and one line (a one-shot arm's global spread is its default: it adds no words)
        if key in _IMPLIED or (sparse and key in ("prune.rounds", "prune.distribution", "prune.target_density")):
            continue
        if one_shot and (
            key in ("prune.rounds", "prune.target_density") or (key, value) == ("prune.distribution", "global")
        ):
            continue
        if value is None and key in ("prune.distribution", "prune.target_density"):  # unset beside a sparse arm
            continue
        if key in _WORDS:
            if value is not None and str(value) != _DEFAULTS[key]:  # absent from older records: the default
                words.append(_WORDS[key].get(str(value), f"{key.rpartition('.')[2]} {value}"))
        elif key == "prune.rewind_to":
            words.append("rewind to θ0" if str(value) == "0" else f"rewind to {value}")
        else:
            shown = value if isinstance(value, str) else json.dumps(value)
            words.append(f"{key.rpartition('.')[2].replace('_', ' ')} {shown.rstrip('/').rpartition('/')[2]}")
    if sparse:
        words = [_sparse_name(label), *(w for w in words if w not in _SPARSE.values())]
    words = list(dict.fromkeys(words))  # random pruning named by two keys reads once
    return ", ".join(words) if words else "ticket"


def _sparse_name(label: dict[str, Any]) -> str:
    """`RigL`, `SET`, `static ERK`, `static uniform`, `RigL uniform`: the method and, unless ERK, its spread."""
    method = _SPARSE[str(label["prune.schedule"])]
    spread = str(label.get("prune.distribution", "erk"))
    if method == "static" or spread != "erk":
        return f"{method} {_SPREAD.get(spread, spread)}"
    return method
