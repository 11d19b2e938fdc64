"""Pointing game of the black-box explainers (DE-CAM, mask optimisation) against Recipro-CAM and
Grad-CAM on composite scenes with known object boxes, split into a tuning set and a held-out set.

Scenes (448 x 448, made in code from scikit-image's photographs, nothing downloaded): one object
crop (chelsea's cat -> "Egyptian cat", coffee's cup -> "espresso", scikit-image's logo, a round
disc, -> "pick", camera's cameraman -> "tripod"; scene i shows object i mod 4) at a random scale (longer side 22-40 % of the scene) and
position on a random crop of one of 7 backgrounds (grass, brick, gravel, moon with a random tint;
hubble_deep_field, immunohistochemistry, coins; not astronaut, whose photograph shows a shuttle); in half of the scenes a second,
smaller object of another class (a distractor) is pasted where it does not overlap the first.
The explained class is the object's class (its box is the ground truth), not the scene's top-1;
a scene is kept only when that class is in the model's top 5 on the scene (else the next draw
of the same seed's generator is taken), so every scene has evidence to find. Scene ``i`` of the
tuning split comes from seed ``1000 + i`` (32 scenes), of the held-out split from ``9000 + i``
(48: scenes 0-23 were first run on 2026-12-02 morning, 24-47 added and first run with DE-CAM's
boxes and drop weights); the methods' settings were tuned on the tuning split only.

Pointing game (Zhang et al. 2016): a hit when the map's maximum, resized bilinearly to the
scene's 448 x 448 pixels, lies inside the object's box or within 15 px of it
(``edge_saliency.quality.metrics.pointing_hit``). ``centre`` is the map that always points at
the scene's centre (how far a centre bias alone gets).

Reconstruction (maskopt's salient-input check, ``metrics.reconstruction_accuracy``): keep the top
``--keep`` (25 %) of the map's pixels, fill the rest, count how often the top-1 decision stays
the scene's top-1. Fills: a strong blur, uniform noise, two other backgrounds of the set (scenes
from the same distribution without the object: the "plausible variations") and two other
scenes (another object competes for the decision). Reported per fill family.

The black-box methods query the same model pruned to its logits (``bench.runner.prune_to_plain``;
the same numbers, a quarter faster); Recipro-CAM and Grad-CAM come from the full export with the
class input. Usage (1 ORT thread):

    python benchmarks/blackbox_pointing.py --model /tmp/i17/all.onnx --threads 1 --split heldout --budget 1200
    python benchmarks/blackbox_pointing.py --split tuning --methods decam --budget 1200 --set decam.seed=1 --no-write
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_saliency import samples  # noqa: E402

SIZE = 448
# name -> (photo, (y0, y1, x0, x1) crop, ImageNet class explained)
OBJECTS = {
    "cat": ("chelsea", (0, 300, 60, 420), "Egyptian cat"),
    "cup": ("coffee", (10, 390, 40, 520), "espresso"),
    "pick": ("logo", (0, 500, 0, 500), "pick"),
    "tripod": ("camera", (40, 480, 120, 420), "tripod"),
}
BACKGROUNDS = ("grass", "brick", "gravel", "moon", "hubble_deep_field", "immunohistochemistry", "coins")
GREY = ("grass", "brick", "gravel", "moon")
# The held-out split was 5000.. with a shuttle (rocket's) as the third object until 2026-12-02: the
# model never ranks "space shuttle" in its top 5 for that crop (0 of 40 draws at 22-40 %, 2 of 40 at
# 45-60 %), so 4 of its 24 scenes had no evidence to find. The logo ("pick": top 5 in 30 of 40
# draws) replaced it, and the held-out split moved to seeds nobody had looked at.
SPLITS = {"tuning": 1000, "heldout": 9000}
RESULTS = ROOT / "benchmarks" / "results"


def _photo(name: str) -> np.ndarray:
    return samples.photo(name)  # BGR uint8 (grey photographs stacked to 3 channels)


def background(rng: np.random.Generator, name: str) -> np.ndarray:
    img = _photo(name).astype(np.float32)
    h, w = img.shape[:2]
    side = int(rng.uniform(0.6, 1.0) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(img[y:y + side, x:x + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    if name in GREY:
        crop = crop * rng.uniform(0.6, 1.0, size=3)[None, None, :]
    return np.clip(crop, 0, 255).astype(np.uint8)


def object_crop(name: str, longer: int) -> np.ndarray:
    photo, (y0, y1, x0, x1), _ = OBJECTS[name]
    crop = _photo(photo)[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    f = longer / max(h, w)
    return cv2.resize(crop, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _overlaps(a, b, gap=8) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def draw_scene(rng: np.random.Generator, obj: str) -> dict:
    bg_name = str(rng.choice(BACKGROUNDS))
    img = background(rng, bg_name)
    crop = object_crop(obj, int(rng.uniform(0.22, 0.40) * SIZE))
    h, w = crop.shape[:2]
    x, y = int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))
    img[y:y + h, x:x + w] = crop
    box = [x, y, x + w - 1, y + h - 1]
    distractor = None
    if rng.random() < 0.5:
        other = str(rng.choice([o for o in OBJECTS if o != obj]))
        dc = object_crop(other, int(rng.uniform(0.20, 0.32) * SIZE))
        dh, dw = dc.shape[:2]
        for _ in range(30):
            dx, dy = int(rng.integers(0, SIZE - dw + 1)), int(rng.integers(0, SIZE - dh + 1))
            dbox = [dx, dy, dx + dw - 1, dy + dh - 1]
            if not _overlaps(box, dbox):
                img[dy:dy + dh, dx:dx + dw] = dc
                distractor = {"object": other, "box": dbox}
                break
    return {"image": img, "object": obj, "label": OBJECTS[obj][2], "box": box, "background": bg_name,
            "distractor": distractor}


def make_split(split: str, n: int, model) -> list[dict]:
    """``n`` scenes of a split; scene i shows object i mod 4, drawn from seed SPLITS[split] + i and
    redrawn (same generator) until the object's class is in the model's top 5 on the scene."""
    scenes = []
    for i in range(n):
        seed = SPLITS[split] + i
        rng = np.random.default_rng(seed)
        for attempt in range(50):
            sc = draw_scene(rng, list(OBJECTS)[i % len(OBJECTS)])
            cls = model.class_index(sc["label"])
            x = model.preprocess(sc["image"])
            logits = model.run(x[None])["logits"][0]
            rank = int((logits > logits[cls]).sum())
            if rank < 5:
                break
        bg_rng = np.random.default_rng(seed + 100_000)
        others = [b for b in BACKGROUNDS if b != sc["background"]]
        fills_bg = [background(bg_rng, str(b)) for b in bg_rng.choice(others, size=2, replace=False)]
        scenes.append({**sc, "name": f"{split}{i:02d}", "seed": seed, "attempt": attempt, "class_index": cls,
                       "rank": rank, "x": x, "bg_fills": [model.preprocess(f) for f in fills_bg]})
    return scenes


def centre_map(size=(56, 56)) -> np.ndarray:
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    return np.exp(-(((yy - (size[0] - 1) / 2) ** 2 + (xx - (size[1] - 1) / 2) ** 2) / (2 * (size[0] / 6) ** 2)))


def settings_for(method: str, budget: int, seed: int, overrides: dict):
    from edge_saliency.explain import registry

    s = registry.SETTINGS[method](budget=budget, seed=seed)
    for k, v in overrides.get(method, {}).items():
        setattr(s, k, tuple(v) if isinstance(getattr(s, k), tuple) else v)
    if method == "maskopt":
        s.reconstruct = False  # measured below, the same way for every method
    return s


def run(scenes, methods, budget, full, plain, overrides, keep=0.25, log=print) -> list[dict]:
    from edge_saliency.explain import registry
    from edge_saliency.explain.common import Scorer, SaliencyModelClassifier
    from edge_saliency.quality import metrics

    clf = SaliencyModelClassifier(plain)
    probe = Scorer(clf)
    rows = []
    for k, sc in enumerate(scenes):
        x, cls = sc["x"], sc["class_index"]
        others = [o["x"] for o in scenes[k + 1:] + scenes[:k] if o["object"] != sc["object"]][:2]
        fills = {"blur": metrics.blurred(x, 8.0), "noise": np.random.default_rng(sc["seed"]).integers(0, 256, x.shape, dtype=np.uint8),
                 "background0": sc["bg_fills"][0], "background1": sc["bg_fills"][1],
                 **{f"scene{j}": o for j, o in enumerate(others)}}  # fewer than 2 only in tiny runs
        for method in methods:
            t0 = time.perf_counter()
            if method == "centre":
                sal, queries = centre_map(), 0
            elif method in registry.BLACK_BOX:
                s = settings_for(method, budget, 0, overrides)
                r = registry.BLACK_BOX[method].explain(clf, x, cls, s, progress=False)
                sal = r.saliency
                queries = r.info.get("optimise_queries", r.queries)
            else:
                sal, _, _ = registry.in_graph_map(full, x, method, cls)
                queries = 1
            secs = time.perf_counter() - t0
            hit = bool(metrics.pointing_hit(sal, [sc["box"]], (SIZE, SIZE)))
            rec = metrics.reconstruction_accuracy(probe.all_probs, x, sal, fills, keep)
            rows.append({"scene": sc["name"], "method": method, "object": sc["object"], "rank": sc["rank"], "hit": hit,
                         "queries": int(queries), "seconds": secs, "recon": rec["unchanged"]})
            log(f"{sc['name']} {sc['object']:8s} {method:8s} hit={int(hit)} q={queries} {secs:.1f}s "
                f"recon={sum(rec['unchanged'].values())}/{len(fills)}")
    return rows


def _pooled(rows, prefixes) -> float:
    vals = [v for r in rows for k, v in r["recon"].items() if k.startswith(prefixes)]
    return float(np.mean(vals)) if vals else float("nan")


def summarise(rows, methods, ranks: dict | None = None) -> dict:
    """Pointing over every scene; reconstruction over the scenes whose explained class is also the
    scene's top-1 (``rank`` 0: there "the decision stays" and "the class stays" are the same)."""
    out = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        top1 = [r for r in mine if (ranks[r["scene"]] if ranks else r["rank"]) == 0]
        fam = {}
        for f in ("blur", "noise", "background", "scene"):
            vals = [v for r in top1 for k, v in r["recon"].items() if k.startswith(f)]
            fam[f] = float(np.mean(vals)) if vals else float("nan")
        allv = [v for r in top1 for v in r["recon"].values()]
        out[m] = {"n": len(mine), "pointing": float(np.mean([r["hit"] for r in mine])),
                  "queries": float(np.mean([r["queries"] for r in mine])),
                  "seconds": float(np.mean([r["seconds"] for r in mine])),
                  "recon_scenes": len(top1), "recon_all": float(np.mean(allv)) if allv else float("nan"), "recon_in_distribution": _pooled(top1, ("blur", "background")),
                  "recon_by_fill": fam}
    return out


def open_models(model_path: str | None, threads: int, folder: Path):
    from edge_saliency.bench.runner import prune_to_plain
    from edge_saliency.runtime.model import SaliencyModel

    if model_path is None:
        import subprocess

        model_path = str(folder / "all.onnx")
        subprocess.run([sys.executable, "-m", "edge_saliency", "export", "--methods", "all", "--class-input",
                        "--out", model_path], check=True, cwd=ROOT)
    plain_path = folder / "plain.onnx"
    prune_to_plain(Path(model_path), plain_path)
    return SaliencyModel(model_path, threads=threads), SaliencyModel(str(plain_path), threads=threads), model_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="edge-saliency export with --methods all --class-input (default: export one)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--split", choices=["tuning", "heldout", "both"], default="both")
    ap.add_argument("--n-tuning", type=int, default=32)
    ap.add_argument("--n-heldout", type=int, default=48)
    ap.add_argument("--methods", default="centre,recipro,gradcam,decam,maskopt")
    ap.add_argument("--budget", type=int, default=2000, help="max queries per black-box map (default %(default)s)")
    ap.add_argument("--keep", type=float, default=0.25)
    ap.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE",
                    help="override a black-box setting (tuning only), e.g. decam.grid=7")
    ap.add_argument("--no-write", action="store_true", help="print only (tuning runs)")
    ap.add_argument("--before", help="JSON of an earlier run (the old settings), kept in this run's JSON for the tables")
    ap.add_argument("--out", default=str(RESULTS / "blackbox_pointing"), help="results path without suffix")
    args = ap.parse_args()
    overrides: dict = {}
    for item in args.set:
        key, val = item.split("=", 1)
        m, f = key.split(".", 1)
        overrides.setdefault(m, {})[f] = json.loads(val)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    splits = ["tuning", "heldout"] if args.split == "both" else [args.split]
    with tempfile.TemporaryDirectory() as tmp:
        full, plain, model_path = open_models(args.model, args.threads, Path(tmp))
        t0 = time.perf_counter()
        report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "machine": f"{platform.processor() or platform.machine()}, ORT {args.threads} thread(s)",
                  "command": " ".join(sys.argv), "budget": args.budget, "keep": args.keep, "overrides": overrides,
                  "splits": {}}
        for split in splits:
            n = args.n_tuning if split == "tuning" else args.n_heldout
            scenes = make_split(split, n, full)
            rows = run(scenes, methods, args.budget, full, plain, overrides, args.keep,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
            report["splits"][split] = {
                "seeds": [sc["seed"] for sc in scenes],
                "scenes": [{k: sc[k] for k in ("name", "seed", "attempt", "object", "label", "box", "background",
                                               "distractor", "rank")} for sc in scenes],
                "summary": summarise(rows, methods), "rows": rows}
        report["seconds"] = time.perf_counter() - t0
    for split, v in report["splits"].items():
        print(f"\n{split} ({len(v['scenes'])} scenes)")
        print("| method | pointing | queries/map | s/map | recon (all fills) | recon (blur+background) |")
        print("|---|---:|---:|---:|---:|---:|")
        for m, s in v["summary"].items():
            print(f"| {m} | {s['pointing']:.3f} | {s['queries']:.0f} | {s['seconds']:.2f} | {s['recon_all']:.3f} "
                  f"| {s['recon_in_distribution']:.3f} |")
    if not args.no_write:
        out = Path(args.out)
        if args.before:
            report["before"] = json.loads(Path(args.before).read_text())
        out.with_suffix(".json").write_text(json.dumps(report, indent=1))
        print(f"wrote {out.with_suffix('.json')}")
    return 0


def table(report: dict, split: str) -> str:
    """Markdown rows for one split: after (this run) and, where the report holds one, before."""
    v = report["splits"][split]
    ranks = {sc["name"]: sc["rank"] for sc in v["scenes"]}
    before = report.get("before", {}).get("splits", {}).get(split)
    lines = ["| method | version | pointing | queries/map | s/map | recon, blur + backgrounds | recon, all 6 fills |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label, src in (("before", before), ("after", v)):
        if src is None:
            continue
        summ = summarise(src["rows"], list(dict.fromkeys(r["method"] for r in src["rows"])), ranks)
        for m, x in summ.items():
            if label == "after" and before is not None and m not in ("decam", "maskopt") and \
                    any(r["method"] == m for r in before["rows"]):
                continue  # deterministic single-pass maps: the same in both runs
            lines.append(f"| {m} | {label if m in ('decam', 'maskopt') else '-'} | {x['pointing']:.3f} ({sum(r['hit'] for r in src['rows'] if r['method'] == m)}/{x['n']}) "
                         f"| {x['queries']:.0f} | {x['seconds']:.1f} | {x['recon_in_distribution']:.3f} | {x['recon_all']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
