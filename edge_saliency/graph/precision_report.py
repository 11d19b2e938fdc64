"""What a precision variant costs against its fp32 file: top-1 agreement (also on confident images),
the logits' signal-to-noise ratio, and the Pearson correlation of each map (bench and the tests read it)."""
from __future__ import annotations

import numpy as np

from edge_saliency import contract
from edge_saliency.numeric import pearson, softmax


def accuracy_report(reference_path, variant_path, images: list[np.ndarray], provider: str = "cpu",
                    threads: int | None = None) -> dict:
    """Top-1 agreement of ``variant`` with ``reference``, the logits' signal-to-noise ratio
    (dB, the reference's logits as signal, the difference as noise) and per-map Pearson
    correlations (smoe, each scale of smoe_scales, recipro_cam) on ``images`` (BGR, any size)."""
    from edge_saliency.runtime.model import SaliencyModel

    ref = SaliencyModel(reference_path, provider=provider, threads=threads)
    var = SaliencyModel(variant_path, provider=provider, threads=threads)
    agree, n = 0, 0
    signal = noise = 0.0  # logit SQNR
    confident = []  # agreement where the fp32 top-1 probability is >= 0.5
    corr: dict[str, list[float]] = {}
    for img in images:
        x = ref.preprocess(img)[None]
        a, b = ref.run(x), var.run(x)
        n += 1
        same = int(a[contract.TARGET][0] == b[contract.TARGET][0])
        agree += same
        logits = a[contract.LOGITS][0].astype(np.float64)
        signal += float((logits ** 2).sum())
        noise += float(((logits - b[contract.LOGITS][0]) ** 2).sum())
        if softmax(logits).max() >= 0.5:
            confident.append(same)
        for name in (contract.SMOE, contract.RECIPRO):
            if name in a:
                corr.setdefault(name, []).append(pearson(a[name][0], b[name][0]))
        if contract.RECIPRO in a and same:  # a class-specific map is only comparable for the same class
            corr.setdefault(f"{contract.RECIPRO} (same class)", []).append(
                pearson(a[contract.RECIPRO][0], b[contract.RECIPRO][0]))
        if contract.SMOE_SCALES in a:
            for s in range(a[contract.SMOE_SCALES].shape[1]):
                corr.setdefault(f"{contract.SMOE_SCALES}[{s}]", []).append(
                    pearson(a[contract.SMOE_SCALES][0, s], b[contract.SMOE_SCALES][0, s]))
    return {
        "images": n, "top1_agreement": agree / max(n, 1),
        "logit_sqnr_db": float(10 * np.log10(signal / noise)) if noise > 0 else float("inf"),
        "confident_images": len(confident), "top1_agreement_confident": float(np.mean(confident)) if confident else None,
        "map_correlation": {k: {"mean": float(np.mean(v)), "min": float(np.min(v))} for k, v in corr.items()},
    }
