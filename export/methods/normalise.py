"""Normalisers that turn a raw saliency statistic map into [0, 1], over each map's H x W pixels.

gaussian: 0.5 * (1 + erf((x - mu) / (sigma * sqrt 2)))  (mu, sigma: the map's mean and std)
gamma:    the CDF of a Gamma(k, theta) fitted to the map (x clamped at 0), with k from the
          closed-form maximum-likelihood approximation s = ln(mean) - mean(ln x),
          k = (3 - s + sqrt((s - 3)^2 + 24 s)) / (12 s), theta = mean / k, as in the reference
          FastCAM code. The regularised lower incomplete gamma function is evaluated with its
          power series, in plain tensor ops so it exports to ONNX.
"""
from __future__ import annotations

import math

import torch

SIGMA_MIN = 1e-12
GAMMA_SERIES_TERMS = 96
_LANCZOS = (
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
    -176.61502916214059, 12.507343278686905, -0.13857109526572012,
    9.9843695780195716e-6, 1.5056327351493116e-7,
)


def gaussian_cdf(x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(dim=(2, 3), keepdim=True)
    sigma = torch.clamp((x - mu).pow(2).mean(dim=(2, 3), keepdim=True).sqrt(), min=SIGMA_MIN)
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


def _lgamma(z: torch.Tensor) -> torch.Tensor:
    """log Gamma(z) for z > 0.5 (Lanczos, g=7); ONNX has no Lgamma op."""
    z = z - 1.0
    acc = torch.full_like(z, _LANCZOS[0])
    for i, c in enumerate(_LANCZOS[1:], start=1):
        acc = acc + c / (z + i)
    t = z + 7.5
    return 0.5 * math.log(2 * math.pi) + (z + 0.5) * torch.log(t) - t + torch.log(acc)


def gamma_cdf(x: torch.Tensor) -> torch.Tensor:
    x = torch.clamp(x, min=0.0) + 1e-10
    mean = x.mean(dim=(2, 3), keepdim=True)
    s = torch.clamp(torch.log(mean) - torch.log(x).mean(dim=(2, 3), keepdim=True), min=1e-6)
    k = (3.0 - s + torch.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
    theta = mean / k
    z = x / theta
    # P(k, z) = z^k e^-z / Gamma(k+1) * sum_n z^n / ((k+1)...(k+n))
    term = torch.ones_like(z)
    total = torch.ones_like(z)
    for n in range(1, GAMMA_SERIES_TERMS):
        term = term * z / (k + n)
        total = total + term
    log_p = k * torch.log(z) - z - _lgamma(k + 1.0) + torch.log(total)
    return torch.clamp(torch.exp(log_p), 0.0, 1.0)


NORMALISERS = {"gaussian": gaussian_cdf, "gamma": gamma_cdf}


def normalise(x: torch.Tensor, kind: str) -> torch.Tensor:
    return NORMALISERS[kind](x)
