"""Gradient CAMs on a feature map A [N, K, h, w] for target class c, from the gradient
G = d y_c / d A (y_c: the target's logit):

- Grad-CAM:   ReLU(sum_k w_k A^k), w_k = mean_ij G^k
- Grad-CAM++: ReLU(sum_k w_k A^k), w_k = sum_ij alpha^k_ij ReLU(G^k_ij),
              alpha = G^2 / (2 G^2 + sum_ab A^k_ab G^3)  (the usual closed form, y = exp(logit))
- Guidance-rectified (Fahim et al., "Rethinking gradient weights' influence over saliency map
  estimation"), our reading: cam = ReLU(sum_k w_k A^k) with Grad-CAM's w_k;
  guide = minmax(sum_k ReLU(A^k * G^k)); result minmax(cam * guide).

Every map is min-max normalised to [0, 1]. When the head after A is global average pooling +
linear, G^k_ij = W[c, k] / (h w) for every position: no backward pass, so the maps fit in the
ONNX graph (``*_gap_linear``). ``gradients_autograd`` gives G for any layer of any model (torch
side, for comparison and for heads that are not GAP + linear).
"""
from __future__ import annotations

import torch
from torch import nn

METHODS = ("guided", "gradcam", "gradcampp")


def min_max_map(m: torch.Tensor) -> torch.Tensor:
    """[N, 1, h, w] -> [0, 1] per sample (a constant map becomes 0)."""
    flat = m.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / torch.clamp(hi - lo, min=1e-12)).view_as(m)


def gradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    w = g.mean(dim=(2, 3), keepdim=True)
    return min_max_map(torch.relu((w * a).sum(dim=1, keepdim=True)))


def gradcampp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    g2 = g * g
    denom = 2.0 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    w = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    return min_max_map(torch.relu((w * a).sum(dim=1, keepdim=True)))


def guided(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((w * a).sum(dim=1, keepdim=True))
    guide = min_max_map(torch.relu(a * g).sum(dim=1, keepdim=True))
    return min_max_map(cam * guide)


FROM_GRADIENT = {"guided": guided, "gradcam": gradcam, "gradcampp": gradcampp}


def gap_linear_gradient(a: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d logit_c / d A for a GAP + linear head: W[c, k] / (h w), broadcast over positions
    ([N, K, 1, 1]; the formulas above broadcast it)."""
    h, w = a.shape[2], a.shape[3]
    return (weight[target] * (1.0 / (h * w))).unsqueeze(2).unsqueeze(3)


def gradient_cam_gap_linear(method: str, a: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    g = gap_linear_gradient(a, weight, target)
    if method == "gradcampp":  # its sums over positions need G at every position
        g = g.expand_as(a)
    return FROM_GRADIENT[method](a, g)


def gradients_autograd(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None):
    """Run ``model`` on x; return (A, dy_c/dA, target) at ``layer``'s output, by autograd."""
    store = {}

    def hook(module, inputs, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
            if target is None:
                target = logits.argmax(dim=1)
            logits.gather(1, target.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
    a = store["a"]
    return a.detach(), a.grad.detach(), target
