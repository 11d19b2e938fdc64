"""Turn `edge-saliency eval --json explain_quality.json` into the tables of explain_quality.md
(means, per-image ADCC, targets of issue 6). Usage: python explain_quality_report.py q.json"""
import json
import sys

q = json.load(open(sys.argv[1]))
S, rows = q["summary"], q["per_image"]
cols = ["avg_drop", "coherency", "complexity", "adcc", "insertion", "deletion", "pointing", "reconstruction", "ms", "queries"]
print("| method | AvgDrop | Coherency | Complexity | ADCC | Insert | Delete | Pointing | Recon@25% | ms/map | queries/map |")
print("|---|" + "---:|" * len(cols))
for m, v in S.items():
    cells = ["-" if v.get(c) is None else (f"{v[c]:.0f}" if c in ("ms", "queries") else f"{v[c]:.3f}") for c in cols]
    print(f"| {m} | " + " | ".join(cells) + " |")
print()
imgs = q["images"]
print("| ADCC per image | " + " | ".join(imgs) + " |")
print("|---|" + "---:|" * len(imgs))
for m in S:
    print(f"| {m} | " + " | ".join(f"{r['adcc']:.3f}" for i in imgs for r in rows if r["image"] == i and r["method"] == m) + " |")
print()
own = [(r["image"], r.get("own_reconstruction")) for r in rows if r["method"] == "maskopt"]
print("maskopt own reconstruction (25%, blur/noise/4 other images):", own)
r, g = S["recipro"]["adcc"], S["gradcam"]["adcc"]
print(f"\nRecipro ADCC {r:.3f} vs Grad-CAM {g:.3f}: {'met' if r >= g else 'missed'} ({100 * (r - g):+.1f} points)")
f, a, b = (S[k]["insertion"] for k in ("fastcam", "smoe", "recipro"))
print(f"fastcam insertion {f:.3f} vs smoe {a:.3f}, recipro {b:.3f}: {'met' if f >= max(a, b) else 'missed'}")
for m in ("decam", "maskopt"):
    d = 100 * (S[m]["adcc"] - r)
    print(f"{m}: ADCC {S[m]['adcc']:.3f}, {d:+.1f} points vs Recipro ({'met' if d >= -5 else 'missed'}), "
          f"{S[m]['ms'] / 1000:.1f} s/map, {S[m]['queries']:.0f} queries")
print(f"maskopt reconstruction @25%: {S['maskopt']['reconstruction']:.3f} (target 0.85)")
