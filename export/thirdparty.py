"""Model code of other projects on the pinned CPU torch.

torchvision's wheels carry compiled operators (nms, roi_align, ...) built against their own torch
release; beside the pinned CPU torch they do not load, and ``import torchvision`` fails while it
registers their fake kernels (``torchvision/_meta_registrations.py``). Its model definitions are
plain Python and need none of them, so the two registration modules are skipped before the
import; the detection ops stay unavailable, which no classifier uses. timm imports torchvision,
so it goes through here too.
"""
from __future__ import annotations

import sys
import types

_SKIPPED = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def import_torchvision():
    """``torchvision``, importable beside a torch it was not built for (models only)."""
    if "torchvision" not in sys.modules:
        for name in _SKIPPED:
            sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision

    return torchvision


def create(name: str, **kwargs):
    """A classifier by name: 'torchvision:resnet50' or 'timm:efficientnet_b0' (random weights
    unless the caller passes its own; nothing is downloaded)."""
    source, _, arch = name.partition(":")
    if source == "torchvision":
        return getattr(import_torchvision().models, arch)(**kwargs)
    if source == "timm":
        import_torchvision()
        import timm

        return timm.create_model(arch, pretrained=False, **kwargs)
    raise ValueError(f"unknown model source {source!r} in {name!r} (torchvision:ARCH or timm:ARCH)")
