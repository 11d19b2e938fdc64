"""SMOE Scale (Mundhenk, Chen, Friedland, "Efficient Saliency Maps for Explainable AI").

Per location of a scale end's activation a [N, C, H, W] (clamped at 0 where it can be negative):
    x = a + eps;  m = mean_c x;  smoe = m * (log2 m - mean_c log2 x)
then each map is normalised over its H x W pixels (Gaussian CDF by default, or the Gamma CDF of
the reference FastCAM code), bilinearly resized (half-pixel centres) to the output map size, and
combined across scale ends as a weighted mean. Outputs: ``smoe`` [N, 1, h, w] and
``smoe_scales`` [N, S, h, w] (early -> late, for LOVI).

How the graph computes it (same statistic, cheaper and overflow-free):
    smoe = m * (log2 m - mean_c log2 x) = -m * mean_c log2 r,  r = x / m  (0 < r <= C)
- both channel means are MatMuls with a constant row over [N, C, H*W] (ONNX Runtime's GEMM);
- mean_c log2 r is taken as a sum of logs of products of up to GROUP channels (a quarter of the
  logs): every r is at most C, so a product is at most C**4 (no overflow for any finite
  activation, unlike products of raw activations). The smallest r is eps / m; the group shrinks
  (to 2, or 1: one log per channel) where the product of that many could fall below PRODUCT_MIN
  for activations up to MARGIN times the largest the discovery probe saw, and products are kept
  above PRODUCT_MIN, so that still larger activations give large finite values, never log 0.
eps is 1e-3 by default (the paper: 1e-7): log2(a + 1e-7) turns the float noise of activations
that should be 0 into map noise; 1e-3 keeps maps stable across runtimes and precisions.
"""
from __future__ import annotations

import math

import numpy as np

NORMALISERS = ("gaussian", "gamma")
DEFAULT_EPS = 1e-3
GROUP = 4
PRODUCT_MIN = 1e-37  # float32's smallest normal number is 1.2e-38
MARGIN = 100.0
SIGMA_MIN = 1e-12
GAMMA_SERIES_TERMS = 96
_LANCZOS = (
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
    -176.61502916214059, 12.507343278686905, -0.13857109526572012,
    9.9843695780195716e-6, 1.5056327351493116e-7,
)


def group_size(channels: int, smallest_ratio: float = 1.0, largest: int = GROUP) -> int:
    """Channels per product: the largest power of two <= ``largest`` that divides ``channels`` and
    keeps a product of ``smallest_ratio``s above PRODUCT_MIN."""
    g = 1
    while g * 2 <= largest and channels % (g * 2) == 0 and smallest_ratio ** (g * 2) >= PRODUCT_MIN:
        g *= 2
    return g


def smallest_ratio(a, eps: float) -> float:
    """eps / (MARGIN x the largest channel mean of activation sample ``a`` [1, C, H, W])."""
    if a is None:
        return eps / MARGIN
    m = float((np.maximum(np.asarray(a, dtype=np.float64), 0) + eps).mean(axis=1).max())
    return eps / (MARGIN * max(m, 1.0))


# ------------------------------------------------------------------ ONNX head
def smoe_scale(gw, a: str, channels: int, size: tuple[int, int], clamp: bool, eps: float,
               ratio_min: float = 1.0) -> str:
    """[N, C, H, W] -> [N, 1, H, W] SMOE Scale statistic (ratio_min: see ``smallest_ratio``)."""
    return gw.reshape(smoe_scale_flat(gw, a, channels, clamp, eps, ratio_min), [0, 1, *size], "smoe")


def log_of_products(gw, r: str, channels: int, group: int) -> tuple[str, int]:
    """Log of the products of `group` channel ratios (axis 1 halved log2(group) times: one Log per
    group instead of per channel; kept >= PRODUCT_MIN where a group could underflow) -> (log, C/group)."""
    p, c = r, channels
    for _ in range(int(math.log2(group))):
        half = c // 2
        lo = gw.op("Slice", [p, gw.ints([0], "s0"), gw.ints([half], "s_half"), gw.ints([1], "axis1")], "smoe_lo")
        hi = gw.op("Slice", [p, gw.ints([half], "s_half"), gw.ints([c], "s_end"), gw.ints([1], "axis1")], "smoe_hi")
        p, c = gw.op("Mul", [lo, hi], "smoe_prod"), half
    if c != channels:
        p = gw.op("Max", [p, gw.const(np.float32(PRODUCT_MIN), "product_min")], "smoe_prod_safe")
    return gw.op("Log", [p], "smoe_log"), c


def smoe_scale_flat(gw, a: str, channels: int, clamp: bool, eps: float, ratio_min: float = 1.0) -> str:
    """[N, C, H, W] -> [N, 1, H*W] SMOE Scale statistic. Channel means are MatMuls over
    [N, C, H*W] (measured against 1x1 Convs and ReduceMean in benchmarks/results/saliency_overhead.md:
    the fastest of the three under ONNX Runtime, and under OpenVINO than 1x1 Convs)."""
    if clamp:
        a = gw.op("Relu", [a], "smoe_clamp")
    x = gw.reshape(gw.op("Add", [a, gw.const(np.float32(eps), "smoe_eps")], "smoe_x"), [0, channels, -1], "smoe_flat")
    mean_w = np.full((1, channels), 1.0 / channels, dtype=np.float32)
    m = gw.op("MatMul", [gw.const(mean_w, "smoe_mean_w"), x], "smoe_mean")  # [N, 1, P]
    r = gw.op("Mul", [x, gw.op("Reciprocal", [m], "smoe_inv_mean")], "smoe_ratio")
    log_p, c = log_of_products(gw, r, channels, group_size(channels, ratio_min))
    sum_w = np.full((1, c), -1.0 / (channels * math.log(2.0)), dtype=np.float32)
    neg_mean_log2 = gw.op("MatMul", [gw.const(sum_w, "smoe_logmean_w"), log_p], "smoe_neg_mean_log2")
    return gw.op("Mul", [m, neg_mean_log2], "smoe_flat_stat")


def gaussian_cdf(gw, s: str, pixels: int | None = None) -> str:
    """0.5 (1 + erf((s - mu) / (sigma sqrt 2))) over each map [N, 1, H, W] (``pixels``: H * W if known)."""
    return half_plus_half(gw, gaussian_erf(gw, s, pixels))


def half_plus_half(gw, e: str, out: str | None = None) -> str:
    return gw.op("Add", [gw.op("Mul", [e, gw.const(np.float32(0.5), "half")], "cdf_half"),
                         gw.const(np.float32(0.5), "half")], "cdf", outputs=[out] if out else None)


def gaussian_erf(gw, s: str, pixels: int | None = None) -> str:
    """erf((s - mu) / (sigma sqrt 2)) over each map [N, 1, H, W], in few kernels (each costs a few
    microseconds whatever its size): s is first divided by its mean (the result does not change;
    the statistic is >= 0, so then s <= H * W and (s - mu)^2 cannot overflow for huge activations;
    a map of pure rounding noise around 0 may overflow there, and then comes out 0: a flat CDF of
    0.5), and with ``pixels`` known, 1 / (sigma sqrt 2) is Pow(sum (s - mu)^2 * 2 / pixels, -1/2)."""
    mu = gw.reduce("ReduceMean", s, [2, 3], hint="cdf_mu")
    t = gw.op("Mul", [s, gw.op("Reciprocal", [gw.op("Max", [mu, gw.const(np.float32(1e-30), "mu_min")], "cdf_mu_safe")],
                                "cdf_inv_mu")], "cdf_scaled")
    d = gw.op("Sub", [t, gw.reduce("ReduceMean", t, [2, 3], hint="cdf_mu_t")], "cdf_d")
    if pixels:
        two_var = gw.op("Mul", [gw.reduce("ReduceSumSquare", d, [2, 3], hint="cdf_ss"),
                                gw.const(np.float32(2.0 / pixels), "two_over_p")], "cdf_two_var")
    else:
        two_var = gw.op("Mul", [gw.reduce("ReduceMean", gw.op("Mul", [d, d], "cdf_d2"), [2, 3], hint="cdf_var"),
                                gw.const(np.float32(2.0), "two")], "cdf_two_var")
    floor = gw.const(np.float32(2.0 * SIGMA_MIN ** 2), "two_sigma_min2")
    inv = gw.op("Pow", [gw.op("Max", [two_var, floor], "cdf_two_var_safe"), gw.const(np.float32(-0.5), "minus_half")],
                "cdf_inv")
    return gw.op("Erf", [gw.op("Mul", [d, inv], "cdf_z")], "cdf_erf")


def _lgamma(gw, z: str) -> str:
    """log Gamma(z) for z > 0.5 (Lanczos, g = 7): ONNX has no Lgamma op."""
    z1 = gw.op("Sub", [z, gw.const(np.float32(1.0), "one")], "lg_z")
    acc = None
    for i, c in enumerate(_LANCZOS[1:], start=1):
        term = gw.op("Div", [gw.const(np.float32(c), "lanczos"),
                             gw.op("Add", [z1, gw.const(np.float32(i), "lanczos_i")], "lg_zi")], "lg_term")
        acc = term if acc is None else gw.op("Add", [acc, term], "lg_acc")
    acc = gw.op("Add", [acc, gw.const(np.float32(_LANCZOS[0]), "lanczos0")], "lg_acc")
    t = gw.op("Add", [z1, gw.const(np.float32(7.5), "g_half")], "lg_t")
    zh = gw.op("Add", [z1, gw.const(np.float32(0.5), "half")], "lg_zh")
    out = gw.op("Sub", [gw.op("Mul", [zh, gw.op("Log", [t], "lg_logt")], "lg_a"), t], "lg_b")
    out = gw.op("Add", [out, gw.op("Log", [acc], "lg_logacc")], "lg_c")
    return gw.op("Add", [out, gw.const(np.float32(0.5 * math.log(2 * math.pi)), "half_log_2pi")], "lgamma")


def gamma_cdf(gw, s: str) -> str:
    """CDF of a Gamma(k, theta) fitted to the map (closed-form ML approximation), power series."""
    x = gw.op("Add", [gw.op("Relu", [s], "gam_clamp"), gw.const(np.float32(1e-10), "gam_tiny")], "gam_x")
    mean = gw.reduce("ReduceMean", x, [2, 3], hint="gam_mean")
    mean_log = gw.reduce("ReduceMean", gw.op("Log", [x], "gam_logx"), [2, 3], hint="gam_mean_log")
    s_ = gw.op("Max", [gw.op("Sub", [gw.op("Log", [mean], "gam_logmean"), mean_log], "gam_s"),
                       gw.const(np.float32(1e-6), "gam_smin")], "gam_s")
    three = gw.const(np.float32(3.0), "three")
    d3 = gw.op("Sub", [s_, three], "gam_d3")
    root = gw.op("Sqrt", [gw.op("Add", [gw.op("Mul", [d3, d3], "gam_d3sq"),
                                        gw.op("Mul", [s_, gw.const(np.float32(24.0), "c24")], "gam_24s")], "gam_rad")], "gam_root")
    k = gw.op("Div", [gw.op("Add", [gw.op("Sub", [three, s_], "gam_3ms"), root], "gam_num"),
                      gw.op("Mul", [s_, gw.const(np.float32(12.0), "c12")], "gam_den")], "gam_k")
    z = gw.op("Div", [x, gw.op("Div", [mean, k], "gam_theta")], "gam_z")
    term, total = None, None
    for n in range(1, GAMMA_SERIES_TERMS):
        step = gw.op("Div", [z, gw.op("Add", [k, gw.const(np.float32(n), "gam_n")], "gam_kn")], "gam_step")
        term = step if term is None else gw.op("Mul", [term, step], "gam_term")
        total = gw.op("Add", [term, gw.const(np.float32(1.0), "one")], "gam_total") if total is None else \
            gw.op("Add", [total, term], "gam_total")
    kp1 = gw.op("Add", [k, gw.const(np.float32(1.0), "one")], "gam_k1")
    log_p = gw.op("Sub", [gw.op("Mul", [k, gw.op("Log", [z], "gam_logz")], "gam_klogz"), z], "gam_lp")
    log_p = gw.op("Add", [gw.op("Sub", [log_p, _lgamma(gw, kp1)], "gam_lp"), gw.op("Log", [total], "gam_logtot")], "gam_lp")
    return gw.op("Clip", [gw.op("Exp", [log_p], "gam_p"), gw.const(np.float32(0.0), "zero"),
                          gw.const(np.float32(1.0), "one")], "gamma_cdf")


def resize_bilinear(gw, m: str, src: tuple[int, int], size: tuple[int, int]) -> str:
    """Bilinear resize with half-pixel centres (align_corners=False), no antialiasing."""
    if tuple(src) == tuple(size):
        return m
    if all(d % s == 0 or s % d == 0 for s, d in zip(src, size)):
        # exact ratios: constant scales (no shape ops for a dynamic batch), the same sampling
        scales = np.array([1.0, 1.0, size[0] / src[0], size[1] / src[1]], dtype=np.float32)
        return gw.op("Resize", [m, "", gw.const(scales, "resize_scales")], "smoe_resized", mode="linear",
                     coordinate_transformation_mode="half_pixel")
    nc = gw.op("Slice", [gw.op("Shape", [m], "resize_shape"), gw.ints([0], "s0"), gw.ints([2], "s2")], "resize_nc")
    sizes = gw.op("Concat", [nc, gw.ints(list(size), "resize_hw")], "resize_sizes", axis=0)
    return gw.op("Resize", [m, "", "", sizes], "smoe_resized", mode="linear",
                 coordinate_transformation_mode="half_pixel")


def build(ctx) -> dict:
    """Writes smoe [N, 1, h, w] and smoe_scales [N, S, h, w]; returns the metadata entry."""
    gw, spec = ctx.gw, ctx.spec
    eps = spec.smoe_eps
    stats = [smoe_scale(gw, e.tensor, e.channels, e.size, not e.nonnegative, eps, smallest_ratio(ctx.values.get(e.tensor), eps))
             for e in ctx.scale_ends]
    # Gaussian: 0.5 (1 + erf) after each scale's resize (which is linear), before the concat: OpenVINO
    # fuses it into the Interpolate as a post-op (its runtime model), where on the concat it is a kernel
    # of its own (benchmarks/smoe_normaliser_ab.py: faster under OpenVINO than once on the concat or
    # before the resize; about the same under ONNX Runtime)
    gaussian = spec.normaliser == "gaussian"
    normed = [gaussian_erf(gw, st, e.size[0] * e.size[1]) if gaussian else gamma_cdf(gw, st)
              for st, e in zip(stats, ctx.scale_ends)]
    maps = [resize_bilinear(gw, m, e.size, ctx.map_size) for m, e in zip(normed, ctx.scale_ends)]
    if gaussian:
        maps = [half_plus_half(gw, m) for m in maps]
    gw.op("Concat" if len(maps) > 1 else "Identity", maps, outputs=["smoe_scales"], **({"axis": 1} if len(maps) > 1 else {}))
    stacked = "smoe_scales"
    weights = ctx.smoe_weights
    w = (np.asarray(weights, dtype=np.float64) / sum(weights)).astype(np.float32).reshape(1, -1, 1, 1)
    gw.op("Conv", [stacked, gw.const(w, "smoe_weights")], outputs=["smoe"], kernel_shape=[1, 1])
    return {"statistic": "smoe_scale", "normaliser": f"{spec.normaliser}_cdf", "weights": list(weights),
            "map_size": list(ctx.map_size), "eps": spec.smoe_eps}


def output_shapes(ctx) -> dict:
    return {"smoe": [ctx.batch, 1, *ctx.map_size], "smoe_scales": [ctx.batch, len(ctx.scale_ends), *ctx.map_size]}


# ------------------------------------------------------------------ numpy reference (float64)
def ref_smoe_scale(a: np.ndarray, eps: float) -> np.ndarray:
    """a [C, H, W] (>= 0) -> [H, W]: x = a + eps; m = mean_c x; m * (log2 m - mean_c log2 x)."""
    x = a.astype(np.float64) + eps
    m = x.mean(axis=0)
    return m * (np.log2(m) - np.log2(x).mean(axis=0))


def ref_gaussian_cdf(x: np.ndarray) -> np.ndarray:
    """0.5 * (1 + erf((x - mu) / (sigma sqrt 2))) over the whole map."""
    mu, sigma = x.mean(), max(x.std(), SIGMA_MIN)
    erf = np.vectorize(math.erf)
    return 0.5 * (1.0 + erf((x - mu) / (sigma * math.sqrt(2.0))))


def _ref_gammainc(k: float, z: np.ndarray) -> np.ndarray:
    """Regularised lower incomplete gamma P(k, z), by its power series (as the graph)."""
    term = np.ones_like(z)
    total = np.ones_like(z)
    for n in range(1, GAMMA_SERIES_TERMS):
        term = term * z / (k + n)
        total = total + term
    with np.errstate(divide="ignore"):
        log_p = k * np.log(z) - z - math.lgamma(k + 1.0) + np.log(total)
    return np.clip(np.exp(log_p), 0.0, 1.0)


def ref_gamma_cdf(x: np.ndarray) -> np.ndarray:
    """CDF of a Gamma(k, theta) fitted with s = ln mean - mean ln x, k = (3 - s + sqrt((s-3)^2 + 24 s)) / (12 s)."""
    x = np.clip(x.astype(np.float64), 0, None) + 1e-10
    s = max(math.log(x.mean()) - np.log(x).mean(), 1e-6)
    k = (3 - s + math.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    return _ref_gammainc(k, x / (x.mean() / k))


def ref_resize_bilinear(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of [H, W] to size with half-pixel centres (align_corners=False), edges clamped."""
    h_in, w_in = m.shape
    h, w = size

    def coords(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = coords(h, h_in)
    x0, x1, fx = coords(w, w_in)
    top = m[y0][:, x0] * (1 - fx) + m[y0][:, x1] * fx
    bottom = m[y1][:, x0] * (1 - fx) + m[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def ref_maps(acts: list[np.ndarray], size, weights=None, normaliser: str = "gaussian", eps: float = DEFAULT_EPS):
    """acts: scale ends [C, H, W] each (clamped by the caller where needed) -> (combined [h, w], scales [S, h, w])."""
    cdf = ref_gamma_cdf if normaliser == "gamma" else ref_gaussian_cdf
    scales = np.stack([ref_resize_bilinear(cdf(ref_smoe_scale(a, eps)), size) for a in acts])
    w = np.ones(len(acts)) if weights is None else np.asarray(weights, dtype=np.float64)
    return (scales * w[:, None, None]).sum(0) / w.sum(), scales


def conditioning(acts: list[np.ndarray], eps: float) -> float:
    """How much float32 rounding can move a normalised map: the statistic is a difference of terms
    of the size of m (m log2 m - m mean log2 x), so its rounding error is about eps32 * max m, which
    the normaliser divides by the map's spread: max m / sigma. About 1-30 for a healthy map; huge
    where the activations are far below eps (untrained weights), whose map is then float noise."""
    worst = 0.0
    for a in acts:
        x = a.astype(np.float64) + eps
        s = ref_smoe_scale(a, eps)
        worst = max(worst, float(x.mean(axis=0).max() / max(s.std(), 1e-300)))
    return worst


def reference(ctx, tensors: dict) -> dict:
    """tensors: scale-end name -> [N, C, H, W] float arrays of one run -> {output: [N, ...]}."""
    spec = ctx.spec
    combined, scales = [], []
    n = len(next(iter(tensors.values())))
    for i in range(n):
        acts = [np.maximum(tensors[e.tensor][i], 0) if not e.nonnegative else tensors[e.tensor][i]
                for e in ctx.scale_ends]
        c, s = ref_maps(acts, ctx.map_size, ctx.smoe_weights, spec.normaliser, spec.smoe_eps)
        combined.append(c[None])
        scales.append(s)
    return {"smoe": np.stack(combined), "smoe_scales": np.stack(scales)}


def reference_conditioning(ctx, tensors: dict) -> float:
    n = len(next(iter(tensors.values())))
    return max(conditioning([np.maximum(tensors[e.tensor][i], 0) for e in ctx.scale_ends], ctx.spec.smoe_eps)
               for i in range(n))
