"""Recipro-CAM (Byun, Lee): gradient-free class activation maps from spatially masked features.

For each of the h*w positions of the last feature map F [C, h, w], a copy of F keeps only that
position (one-hot mask, or its 3x3 neighbourhood weighted [[1,2,1],[2,4,2],[1,2,1]]/16), the head
runs on all copies as one batch, and the saliency there is the target class's score: its
softmax probability (the paper) or its logit (the authors' OpenVINO XAI toolkit). The map is
min-max normalised to [0, 1].

When the head is global average pooling + a linear layer, a masked copy pools to
(kernel * F)[:, i, j] / (h*w), so the h*w pooled vectors go to the linear layer directly; with
the logit score only the target class's row of the weight matrix is needed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SCORES = ("logit", "softmax")
VARIANTS = ("onehot", "gaussian3x3")
_GAUSS = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0


def spatial_masks(h: int, w: int, variant: str) -> torch.Tensor:
    """[h*w, 1, h, w]: mask p keeps position p (and, for gaussian3x3, its neighbours)."""
    eye = torch.eye(h * w).view(h * w, 1, h, w)
    if variant == "onehot":
        return eye
    return F.conv2d(eye, _GAUSS.view(1, 1, 3, 3), padding=1)


def min_max(scores: torch.Tensor) -> torch.Tensor:
    """[N, P] -> [N, P] in [0, 1] per row (a constant row becomes 0)."""
    lo = scores.min(dim=1, keepdim=True).values
    hi = scores.max(dim=1, keepdim=True).values
    return (scores - lo) / torch.clamp(hi - lo, min=1e-12)


def _target_scores(all_scores: torch.Tensor, target: torch.Tensor, score: str) -> torch.Tensor:
    """all_scores [N, P, K] logits -> [N, P] score of the target class."""
    if score == "softmax":
        all_scores = torch.softmax(all_scores, dim=2)
    idx = target.view(-1, 1, 1).expand(-1, all_scores.shape[1], 1)
    return torch.gather(all_scores, 2, idx).squeeze(2)


def recipro_cam_gap_linear(
    fmap: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    score: str = "logit",
    variant: str = "onehot",
) -> torch.Tensor:
    """Shortcut for a GAP + linear head. fmap [N,C,h,w], weight [K,C], target [N] -> [N,1,h,w]."""
    n, c, h, w = fmap.shape
    if variant == "gaussian3x3":
        kernel = _GAUSS.to(fmap.dtype).view(1, 1, 3, 3).expand(c, 1, 3, 3)
        fmap = F.conv2d(fmap, kernel, padding=1, groups=c)
    pooled = fmap.flatten(2).transpose(1, 2) * (1.0 / (h * w))  # [N, P, C]
    if score == "logit":
        w_t = weight[target]  # [N, C]: only the target row, not all K classes
        s = torch.bmm(pooled, w_t.unsqueeze(2)).squeeze(2)
        if bias is not None:
            s = s + bias[target].unsqueeze(1)
    else:
        logits = torch.matmul(pooled, weight.t())
        if bias is not None:
            logits = logits + bias
        s = _target_scores(logits, target, score)
    return min_max(s).view(n, 1, h, w)


def masked_copies(fmap: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """fmap [N,C,h,w], masks [P,1,h,w] -> [N*P, C, h, w] (sample-major)."""
    c, h, w = fmap.shape[1:]
    return (fmap.unsqueeze(1) * masks.unsqueeze(0)).reshape(-1, c, h, w)


def recipro_cam_from_batch(
    head_out: torch.Tensor, target: torch.Tensor, size: tuple[int, int], score: str = "logit"
) -> torch.Tensor:
    """General path: head outputs [N*P, K] of the masked copies -> [N, 1, h, w]."""
    h, w = size
    k = head_out.shape[-1]
    s = _target_scores(head_out.reshape(-1, h * w, k), target, score)
    return min_max(s).view(-1, 1, h, w)
