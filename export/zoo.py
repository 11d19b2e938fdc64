"""Built-in architectures: a constructor with pretrained weights and its preprocessing (the
graph builder's discovery finds the scale ends and the head)."""
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


def _lite0(pretrained: bool, input_size: tuple[int, int]) -> nn.Module:
    from export.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(pretrained, input_size)


def _zoo() -> dict[str, ZooEntry]:
    from export import efficientnet_lite as lite

    return {
        "efficientnet_lite0": ZooEntry(_lite0, lite.INPUT_SIZE, lite.MEAN, lite.STD),
    }


ARCHS = ("efficientnet_lite0",)


def get(arch: str) -> ZooEntry:
    zoo = _zoo()
    if arch not in zoo:
        from edge_saliency.errors import UserError

        raise UserError(f"unknown arch {arch!r}; built in: {', '.join(sorted(zoo))} "
                        "(or --module pkg.mod:build for any torch CNN)")
    return zoo[arch]
