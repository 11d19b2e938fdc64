"""The in-graph saliency methods: one table that the graph builder, the runtime and the CLI read.

Each method lives in one module of this package that gives two things:
- ``build(ctx)``: its ONNX head, written with ``ctx.gw`` (a ``graph.writer.GraphWriter``) on the
  tensors the discovery found; returns the metadata entry the method records (or None);
- ``reference(ctx, tensors)``: the same maps from the formula in ``docs/design.md``, in float64
  numpy, given the scale-end / feature-map activations of one run. The builder's export check and
  the tests compare the graph's maps with it.

A new method is a module here plus one line in ``TABLE``; nothing else needs to know it.
Method modules import numpy only (the graph writer brings onnx), so the runtime can read this
table on a device without onnx.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str  # as on the command line and in the metadata
    module: str  # the module under edge_saliency.methods with build() and reference()
    outputs: tuple[str, ...]  # contract output names, in order
    map_output: str  # the [N, 1, h, w] map the method is read from
    default: bool  # in the default export
    needs_head: bool  # needs the head split (the last feature map and what follows it)
    gap_linear_only: bool = False  # only where the head is GAP + linear (analytic gradient)
    title: str = ""

    def impl(self):
        return importlib.import_module(f"edge_saliency.methods.{self.module}")


TABLE: tuple[Method, ...] = (
    Method("smoe", "smoe", ("smoe", "smoe_scales"), "smoe", True, False, title="SMOE Scale"),
    Method("recipro", "recipro", ("recipro_cam",), "recipro_cam", True, True, title="Recipro-CAM"),
    Method("guided", "gradient_cams", ("guided_cam",), "guided_cam", False, True, True, "guidance-rectified gradient CAM"),
    Method("gradcam", "gradient_cams", ("grad_cam",), "grad_cam", False, True, True, "Grad-CAM"),
    Method("gradcampp", "gradient_cams", ("grad_cam_pp",), "grad_cam_pp", False, True, True, "Grad-CAM++"),
)

BY_NAME = {m.name: m for m in TABLE}
NAMES = tuple(m.name for m in TABLE)
DEFAULT = tuple(m.name for m in TABLE if m.default)


def parse(text: str, flag: str = "--methods") -> tuple[str, ...]:
    """'smoe,recipro' | 'all' | 'none' -> method names in table order."""
    from edge_saliency.errors import UserError

    items = [m.strip().lower() for m in text.split(",") if m.strip()]
    if items in (["none"], []):
        return ()
    if items == ["all"]:
        return NAMES
    bad = [m for m in items if m not in BY_NAME]
    if bad:
        raise UserError(f"unknown method {bad[0]!r} for {flag}; choose from: {', '.join(NAMES)}, all, none")
    return tuple(m for m in NAMES if m in items)
