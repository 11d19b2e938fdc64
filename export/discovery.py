"""Scale-end discovery: find, for any CNN classifier, the layers the saliency heads read.

A model is described as a list of scale ends (at each spatial resolution, early -> late, the
non-negative 4-D activation of the shallowest module that produces one, the last of those) plus a head (what turns the last feature map into logits).
We run the model once on a dummy input with forward hooks on every module and read the answer
off what was recorded; users can override the scale ends and the feature layer by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edge_saliency.errors import UserError


@dataclass(frozen=True)
class ScaleEnd:
    name: str  # module name as in model.named_modules()
    call: int  # which call of that module (a module such as a shared ReLU may run many times)
    channels: int
    size: tuple[int, int]  # (h, w) at the discovery input size
    nonnegative: bool = True  # False: SMOE clamps it at 0 first (log of a negative is undefined)


@dataclass
class HeadSplit:
    """What follows the last feature map.

    kind "gap_linear": the head is global average pooling then ``linear`` (Recipro-CAM can feed
    pooled vectors straight to the linear layer). kind "masked_batch": anything else; the masked
    copies of the feature map run through the rest of the network as one batch.
    """

    kind: str
    feature: ScaleEnd
    linear_name: str | None = None


@dataclass
class Structure:
    scale_ends: list[ScaleEnd]
    head: HeadSplit
    num_classes: int
    notes: list[str] = field(default_factory=list)


@dataclass
class _Event:
    order: int
    name: str
    call: int
    output: object
    inputs: tuple


def _record(model: nn.Module, x: torch.Tensor) -> tuple[list[_Event], torch.Tensor]:
    events: list[_Event] = []
    calls: dict[str, int] = {}
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            call = calls.get(name, 0)
            calls[name] = call + 1
            events.append(_Event(len(events), name, call, output, inputs))

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise UserError(
            f"the model failed on a 1x3x{x.shape[2]}x{x.shape[3]} image: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''} (is --input-size right?)"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    return events, out


def _dummy_input(input_size: tuple[int, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, *input_size, generator=gen)


def _is_feature_map(t: object) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and t.dim() == 4
        and t.shape[0] == 1
        and t.shape[2] * t.shape[3] > 1
        and t.is_floating_point()
    )


def discover(
    model: nn.Module,
    input_size: tuple[int, int] = (224, 224),
    scale_layers: list[str] | None = None,
    feature_layer: str | None = None,
) -> Structure:
    """Find scale ends and the backbone/head split of ``model`` (in eval mode)."""
    model.eval()
    events, out = _record(model, _dummy_input(input_size))
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1 or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"not a CNN classifier: the model's output is {shape}, expected class scores [N, K]"
        )
    names = {n for n, _ in model.named_modules() if n}

    # Per resolution: the shallowest module (a stage such as ResNet's layer1 rather than the first
    # 1x1 conv of the next stage, which still runs at that resolution), and among those the last
    # to finish (a container that returns its child's tensor finishes after it).
    by_size: dict[tuple[int, int], _Event] = {}
    for ev in events:
        t = ev.output
        if _is_feature_map(t) and float(t.min()) >= 0.0:
            key = (int(t.shape[2]), int(t.shape[3]))
            best = by_size.get(key)
            if best is None or _depth(ev.name) <= _depth(best.name):
                by_size[key] = ev
    if not by_size and not scale_layers:
        raise UserError(
            "not a CNN: no module produces a non-negative 4-D feature map [N, C, H, W] "
            "(pass --scale-layers if the activations are functional calls)"
        )

    def last_event_of(name: str) -> _Event:
        if name not in names:
            raise UserError(f"no layer named {name!r} in the model (see model.named_modules())")
        evs = [e for e in events if e.name == name and _is_feature_map(e.output)]
        if not evs:
            raise UserError(f"layer {name!r} does not output a 4-D feature map [N, C, H, W]")
        return evs[-1]

    if scale_layers:
        chosen = [last_event_of(n) for n in scale_layers]
    else:
        chosen = sorted(by_size.values(), key=lambda e: e.order)
    scale_ends = [_scale_end(e) for e in chosen]

    notes = [
        f"scale end {end.name} has negative values (no activation after it); SMOE clamps them at 0"
        for end in scale_ends
        if not end.nonnegative
    ]

    if feature_layer:
        feature_ev = last_event_of(feature_layer)
    else:
        feature_ev = next(e for e in events if e.name == scale_ends[-1].name and e.call == scale_ends[-1].call)
    feature = _scale_end(feature_ev)
    head = _find_head(model, events, out, feature_ev, feature, input_size)
    return Structure(scale_ends, head, int(out.shape[1]), notes)


def _depth(name: str) -> int:
    return name.count(".")


def _scale_end(ev: _Event) -> ScaleEnd:
    t = ev.output
    size = (int(t.shape[2]), int(t.shape[3]))
    return ScaleEnd(ev.name, ev.call, int(t.shape[1]), size, nonnegative=float(t.min()) >= 0.0)


def _find_head(model, events, logits, feature_ev, feature, input_size) -> HeadSplit:
    fmap = feature_ev.output
    pooled = fmap.mean(dim=(2, 3))
    modules = dict(model.named_modules())
    for ev in reversed(events):
        if ev.order < feature_ev.order or not isinstance(modules[ev.name], nn.Linear):
            continue
        if not (isinstance(ev.output, torch.Tensor) and ev.output.shape == logits.shape):
            continue
        if not torch.allclose(ev.output, logits, atol=1e-5, rtol=1e-5):
            continue
        inp = ev.inputs[0] if ev.inputs else None
        if (
            isinstance(inp, torch.Tensor)
            and inp.shape == pooled.shape
            and torch.allclose(inp, pooled, atol=1e-5, rtol=1e-4)
        ):
            return HeadSplit("gap_linear", feature, linear_name=ev.name)
        break
    _check_masked_batch(model, feature, logits, input_size)
    return HeadSplit("masked_batch", feature)


class FeatureBatchHook:
    """Forward hook that replaces a feature map F with ``cat([F, extra(F)])`` on one call, so the
    rest of the network (the head) also runs on extra copies, in the same forward pass."""

    def __init__(self, module: nn.Module, call: int, extra):
        self.call, self.extra, self.calls, self.captured = call, extra, 0, None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        call = self.calls
        self.calls += 1
        if call != self.call:
            return None
        self.captured = output
        return torch.cat([output, self.extra(output)], dim=0)

    def reset(self):
        self.calls, self.captured = 0, None

    def remove(self):
        self.handle.remove()


def _check_masked_batch(model, feature: ScaleEnd, logits, input_size) -> None:
    """The general Recipro-CAM path needs the head to depend on the feature map alone."""
    module = dict(model.named_modules())[feature.name]
    hook = FeatureBatchHook(module, feature.call, lambda f: f.repeat(2, 1, 1, 1) * 0.5)
    try:
        with torch.no_grad():
            out = model(_dummy_input(input_size))
        ok = (
            isinstance(out, torch.Tensor)
            and out.shape == (3, logits.shape[1])
            and torch.allclose(out[:1], logits, atol=1e-4, rtol=1e-4)
        )
    except Exception as exc:  # the head uses the batch size of the input, or a skip around F
        raise UserError(
            f"cannot split the head after {feature.name!r}: the rest of the network failed on a "
            f"batch of masked feature maps ({type(exc).__name__}); pass --feature-layer with the "
            f"last layer before the classifier head"
        ) from exc
    finally:
        hook.remove()
    if not ok:
        raise UserError(
            f"cannot split the head after {feature.name!r}: the rest of the network does not depend "
            f"on that feature map alone; pass --feature-layer with the last layer before the head"
        )
