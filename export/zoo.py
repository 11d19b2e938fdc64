"""Built-in architectures: a constructor with pretrained weights, preprocessing and, where the
design names them, the scale ends (otherwise discovery finds them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[bool, tuple[int, int]], nn.Module]
    input_size: int
    mean: tuple[float, float, float]  # on 0-255 RGB
    std: tuple[float, float, float]
    scale_layers: tuple[str, ...] | None = None
    feature_layer: str | None = None


def _lite0(pretrained: bool, input_size: tuple[int, int]) -> nn.Module:
    from export.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(pretrained, input_size)


def _zoo() -> dict[str, ZooEntry]:
    from export import efficientnet_lite as lite

    return {
        # DESIGN.md: the first block at 112, the last block at 56, 28 and 14, the head conv at 7.
        # (Discovery alone would pick the expansion activation of the next, downsampling block,
        # which at 112 has 3x the channels and costs more than the rest together.)
        "efficientnet_lite0": ZooEntry(
            _lite0, lite.INPUT_SIZE, lite.MEAN, lite.STD,
            scale_layers=("_blocks.0._act1", "_blocks.2._act1", "_blocks.4._act1",
                          "_blocks.10._act1", "_act_head"),
        ),
    }


ARCHS = ("efficientnet_lite0",)


def get(arch: str) -> ZooEntry:
    zoo = _zoo()
    if arch not in zoo:
        from edge_saliency.errors import UserError

        raise UserError(f"unknown arch {arch!r}; built in: {', '.join(sorted(zoo))} "
                        "(or --module pkg.mod:build for any torch CNN)")
    return zoo[arch]
