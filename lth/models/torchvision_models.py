"""`model.source=torchvision`: torchvision's classification constructors, untrained (weights=None), with the
dataset's class count. torchvision is imported on first use only, to keep `lth --help` light."""

from __future__ import annotations

from functools import cache

from torch import nn

# Networks with auxiliary classifiers return a tuple in training mode; lth's training loop needs plain logits.
# init_weights=True is torchvision's current default, spelled out to silence their FutureWarning.
_PLAIN_LOGITS = {name: {"aux_logits": False, "init_weights": True} for name in ("googlenet", "inception_v3")}


@cache
def names() -> tuple[str, ...]:
    """torchvision.models' classification constructors (not detection, segmentation, video, ...)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def build(name: str, num_classes: int) -> nn.Module:
    """torchvision.models.get_model(name, weights=None, num_classes=num_classes); torchvision's own init."""
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **_PLAIN_LOGITS.get(name, {}))
