"""`explain` / `eval` over a whole dataset: chunks of images -> Parquet parts + maps on disk.

    edge-saliency explain --images photos/ --method smoe,recipro,decam --budget 1000 --out run/
    edge-saliency eval --images val.parquet --methods recipro,decam --out run/ --workers 2
    edge-saliency explain --images list.txt --method decam --out run/ --ray            # local Ray
    edge-saliency explain --images list.txt --method decam --out run/ --ray ray://head:10001

Inputs (``--images``, one or more): a folder (its image files, recursively, sorted), a text file
(``.txt``/``.lst``: one image path per line, relative to the list's folder; ``#`` comments), a
Parquet file (a ``path`` column and/or an ``image`` column of encoded image bytes, an optional
``id`` column), a single image file, or ``sample:NAME``.

The work is cut into chunks of ``--chunk-size`` images. A worker (one per process of the local
pool, or one Ray actor each) opens the ONNX file once, runs the single-pass methods of a chunk in
batches (one forward pass yields every in-graph map of a batch), then each black-box method
image by image under its query budget, and, for ``eval``, the quality metrics of every map.
The driver writes the results; workers never touch ``OUT``, so a cluster needs no shared disk:

    OUT/manifest.json           what the run was (model checksum, methods and their settings, ...)
    OUT/parts/part-rRRR-CCCCCC.parquet   one file per finished chunk (run RRR, chunk CCCCCC)
    OUT/maps/<image>_<method>.npy   the map, float32 in [0, 1] at the method's resolution
    OUT/maps/<image>_<method>.png   an overlay on the image (longer side at most 640 pixels)
    OUT/results.parquet         all parts merged, in input order (rewritten at the end of a run)

Every file is written to a temporary name and renamed into place, maps before the part that
names them, so an interrupted run (Ctrl-C, a kill, a lost node) leaves only whole files, and the
parts folder is always readable as one table (parts are also fsynced; map files are not, so a
power cut, unlike a kill, may lose the maps of the last chunks while their rows survive) (``pyarrow.parquet.read_table("OUT/parts")``). A
rerun with the same command skips every (image, method) already in a part and adds the rest; a
rerun with other settings for a method (budget, seed, class, model, ...) is refused rather than
mixing results. Images that cannot be read get a row with ``status = "error"`` and the reason, and
count as done.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import re
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from edge_saliency import contract
from edge_saliency.quality import metrics
from edge_saliency.errors import UserError
from edge_saliency.explain.session import IMAGE_EXTS, json_default

LIST_EXTS = {".txt", ".lst"}
OVERLAY_MAX_SIDE = 640
RESULTS = "results.parquet"
# Columns whose values depend on the machine and the moment, not on the inputs and settings.
VOLATILE = ("seconds", "worker")


def require_pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UserError("dataset runs write Parquet: pip install 'edge-saliency[dataset]' (pyarrow)") from None
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Item:
    """One image of the dataset: ``id`` (unique, stable across runs), where to read it from."""

    id: str
    order: int
    path: str | None = None  # a file
    sample: str | None = None  # sample:NAME
    parquet: str | None = None  # a Parquet file with an image column ...
    row: int | None = None  # ... and the row in it
    name: str = ""  # file-name-safe id for the map files


def _safe(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("\\", "/").replace("/", "__")).strip("._")
    return s[:120] or "image"


def list_images(specs: list[str], exclude: Path | None = None) -> list[Item]:
    """Expand ``--images`` into items with unique ids (in order; duplicates are an error)."""
    raw: list[dict] = []
    for spec in specs:
        if spec.startswith("sample:"):
            raw.append({"id": spec, "sample": spec.split(":", 1)[1]})
            continue
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file()
                           and not (exclude is not None and _inside(f, exclude)))
            if not files:
                raise UserError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in folder {spec}")
            raw += [{"id": f.relative_to(p).as_posix(), "path": str(f)} for f in files]
        elif p.is_file() and p.suffix.lower() in LIST_EXTS:
            raw += _read_list(p)
        elif p.is_file() and p.suffix.lower() == ".parquet":
            raw += _read_parquet_index(p)
        elif p.is_file():
            raw.append({"id": p.name, "path": str(p)})
        else:
            raise UserError(f"image, folder, list or Parquet file not found: {spec}")
    if not raw:
        raise UserError("no images given")
    seen: dict[str, int] = {}
    for r in raw:
        if r["id"] in seen:
            raise UserError(f"image {r['id']!r} is listed twice; ids must be unique")
        seen[r["id"]] = 1
    def stem(rid: str) -> str:
        base = rid[:-len(Path(rid).suffix)] if Path(rid).suffix.lower() in IMAGE_EXTS else rid
        return _safe(base)

    names: dict[str, int] = {}
    for r in raw:
        names[stem(r["id"])] = names.get(stem(r["id"]), 0) + 1
    items = []
    for i, r in enumerate(raw):
        name = stem(r["id"])
        if names[name] > 1:  # e.g. a.jpg and a.png: keep both, told apart by a hash of the id
            name = f"{name}-{hashlib.sha1(r['id'].encode()).hexdigest()[:8]}"
        items.append(Item(id=r["id"], order=i, path=r.get("path"), sample=r.get("sample"),
                          parquet=r.get("parquet"), row=r.get("row"), name=name))
    return items


def _inside(f: Path, folder: Path) -> bool:
    try:
        f.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _read_list(p: Path) -> list[dict]:
    try:
        lines = p.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read image list {p}: {exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("sample:"):
            out.append({"id": line, "sample": line.split(":", 1)[1]})
        else:
            f = Path(line) if Path(line).is_absolute() else p.parent / line
            out.append({"id": line, "path": str(f)})
    if not out:
        raise UserError(f"image list {p} names no images")
    return out


def _read_parquet_index(p: Path) -> list[dict]:
    pa, pq = require_pyarrow()
    try:
        schema = pq.read_schema(p)
    except Exception as exc:
        raise UserError(f"cannot read Parquet file {p}: {str(exc).splitlines()[0][:200]}") from None
    names = set(schema.names)
    if not names & {"path", "image"}:
        raise UserError(f"Parquet file {p} needs a 'path' column (image files) or an 'image' column "
                        f"(encoded image bytes); it has {', '.join(schema.names)}")
    cols = [c for c in ("id", "path") if c in names]
    table = pq.read_table(p, columns=cols) if cols else None
    n = pq.ParquetFile(p).metadata.num_rows
    ids = table.column("id").to_pylist() if "id" in names else None
    paths = table.column("path").to_pylist() if "path" in names else None
    out = []
    for i in range(n):
        rid = str(ids[i]) if ids is not None else (paths[i] if paths is not None and "image" not in names else f"row{i}")
        if "image" in names:
            out.append({"id": rid, "parquet": str(p), "row": i})
        else:
            f = Path(paths[i]) if Path(paths[i]).is_absolute() else p.parent / paths[i]
            out.append({"id": rid, "path": str(f)})
    return out


def read_image(item: Item, blob: bytes | None = None) -> np.ndarray:
    """BGR uint8 of an item; UserError (one line) when it cannot be read or decoded."""
    if item.sample is not None:
        from edge_saliency import samples

        try:
            return samples.photo(item.sample)
        except AttributeError:
            raise UserError(f"no sample photograph named {item.sample!r}") from None
    if blob is None and item.path is not None:
        try:
            blob = Path(item.path).read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {item.path}: {exc.strerror or exc}") from None
    if blob is None:
        raise UserError(f"no image bytes for {item.id}")
    img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"cannot decode {item.path or item.id} (not an image, or a format OpenCV cannot decode)")
    return img


class ParquetImages:
    """Image bytes of items that live in Parquet files, read in one forward pass per file.

    A plan asks for rows in increasing order (chunks follow the input order), so each file is
    streamed once, a batch of rows at a time, whatever its row groups; asking for an earlier row
    reopens that file."""

    def __init__(self, batch_rows: int = 256):
        self.batch_rows = batch_rows
        self.cursors: dict[str, list] = {}  # path -> [batch iterator, first row of batch, batch column]

    def get(self, item: Item) -> bytes | None:
        cur = self.cursors.get(item.parquet)
        if cur is None or item.row < cur[1]:
            _, pq = require_pyarrow()
            it = pq.ParquetFile(item.parquet).iter_batches(batch_size=self.batch_rows, columns=["image"])
            cur = self.cursors[item.parquet] = [it, 0, None]
        while cur[2] is None or item.row >= cur[1] + len(cur[2]):
            if cur[2] is not None:
                cur[1] += len(cur[2])
            try:
                cur[2] = next(cur[0]).column(0)
            except StopIteration:
                return None
        v = cur[2][item.row - cur[1]].as_py()
        return bytes(v) if v is not None else None

    def blobs(self, items: list[Item]) -> dict[str, bytes]:
        return {it.id: self.get(it) for it in items if it.parquet is not None}


def parquet_blobs(items: list[Item]) -> dict[str, bytes]:
    """The encoded image bytes of the items that live in a Parquet file."""
    return ParquetImages().blobs(items)


# ---------------------------------------------------------------- the job
@dataclass
class Job:
    """Everything a worker needs, picklable (it travels to pool processes and Ray actors)."""

    mode: str  # "explain" | "eval"
    model: str
    model_sha256: str
    methods: list[str]
    settings: dict  # black-box method -> settings dataclass
    class_name: str | None = None
    plain: dict = field(default_factory=dict)  # OnnxClassifier options (plain, mean, std, bgr, input_size, labels)
    provider: str = "auto"
    threads: int | None = None
    batch_size: int = 32
    steps: int = 32
    keep: float = 0.25
    boxes: dict | None = None
    references: list = field(default_factory=list)  # [(id, preprocessed image)] for reconstruction fills
    overlays: bool = True

    def fingerprint(self) -> dict:
        """What the results depend on (checked against OUT/manifest.json on a rerun)."""
        return {"mode": self.mode, "model_sha256": self.model_sha256, "class": self.class_name,
                "plain": self.plain,
                "methods": {m: _settings_dict(self.settings.get(m)) for m in self.methods},
                "references": [r for r, _ in self.references],
                **({"steps": self.steps, "keep": self.keep, "boxes_sha256": _sha_json(self.boxes)}
                   if self.mode == "eval" else {})}


def _settings_dict(s) -> dict:
    if s is None:
        return {"in_graph": True}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()}


def _sha_json(obj) -> str | None:
    return None if obj is None else hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- the worker
class ChunkWorker:
    """Opens the model once; ``run(tasks, blobs)`` explains a chunk and returns its rows.

    ``tasks``: [(Item, [methods still to do])]; ``blobs``: image bytes by id for the items that
    are not files the worker can read itself. Each row holds the map's .npy and overlay .png
    bytes under ``_npy`` / ``_png``; the driver writes them and drops those keys."""

    def __init__(self, job: Job, model_path: str | None = None, opened: tuple | None = None):
        from edge_saliency.explain import registry
        from edge_saliency.explain.session import class_index_of, open_classifier
        from edge_saliency.explain.common import Scorer

        self.job = job
        if opened is not None:  # (classifier, model) the driver has already opened
            self.classifier, self.model = opened
        else:
            args = SimpleNamespace(model=model_path or job.model, provider=job.provider, threads=job.threads,
                                   plain=job.plain.get("plain", False), mean=job.plain.get("mean"),
                                   std=job.plain.get("std"), bgr=job.plain.get("bgr", False),
                                   input_size=job.plain.get("input_size"), labels=job.plain.get("labels"))
            self.classifier, self.model = open_classifier(args)
        self.registry = registry
        self.cls = class_index_of(self.classifier, self.model, job.class_name)
        self.ctx = registry.Context(self.classifier, self.model, job.settings, progress=False)
        self.probe = Scorer(self.classifier)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    # -- preprocessing
    def _prep(self, image: np.ndarray) -> np.ndarray:
        from edge_saliency.explain.session import preprocess

        return preprocess(self.classifier, self.model, image)

    def _others(self, item_id: str) -> list[np.ndarray]:
        return [x for rid, x in self.job.references if rid != item_id][:4]

    def run(self, tasks: list[tuple[Item, list[str]]], blobs: dict[str, bytes] | None = None) -> list[dict]:
        from edge_saliency.explain.registry import BLACK_BOX

        blobs = blobs or {}
        t_start = time.time()
        rows: list[dict] = []
        loaded = []
        for item, todo in tasks:
            try:
                image = read_image(item, blobs.get(item.id))
                loaded.append((item, todo, image, self._prep(image)))
            except UserError as exc:
                rows += [self._error_row(item, m, str(exc)) for m in todo]
        # single-pass methods: one forward pass per batch gives every in-graph map of the batch
        in_graph = [(it, [m for m in todo if m not in BLACK_BOX], img, x) for it, todo, img, x in loaded]
        in_graph = [t for t in in_graph if t[1]]
        by_key = {}
        for i in range(0, len(in_graph), self.job.batch_size):
            group = in_graph[i:i + self.job.batch_size]
            by_key.update(self._in_graph_batch(group))
        for item, todo, image, x in loaded:
            for method in todo:
                if method in BLACK_BOX:
                    self.ctx.others = self._others(item.id)
                    r = self.registry.explain(self.ctx, method, x, self.cls)
                    if r.interrupted:
                        raise KeyboardInterrupt
                    rows.append(self._row(item, method, image, x, r))
                else:
                    rows.append(self._row(item, method, image, x, by_key[(item.id, method)]))
        order = {(it.id, m): k for k, (it, todo) in enumerate(tasks) for m in todo}
        rows.sort(key=lambda r: (order[(r["image"], r["method"])], self.job.methods.index(r["method"])))
        t_end = time.time()
        for r in rows:  # when this worker started and finished the chunk (benchmarks; not in the table)
            r["_chunk_start"], r["_chunk_end"] = t_start, t_end
        return rows

    def _in_graph_batch(self, group) -> dict:
        from edge_saliency.explain.common import Scorer, make_explanation, softmax
        from edge_saliency.runtime.model import Result

        model = self.model
        if model is None:
            raise UserError("the in-graph methods need an edge-saliency model; a plain classifier supports "
                            "only decam, maskopt, rise")
        t0 = time.perf_counter()
        out = model.run(np.stack([x for _, _, _, x in group]), self.cls)
        per = (time.perf_counter() - t0) / len(group)
        res = {}
        for i, (item, todo, _, _) in enumerate(group):
            target = int(out[contract.TARGET][i])
            cls = target if self.cls is None else self.cls
            r = Result(class_index=target, label="", score=0.0, topk=[], logits=out[contract.LOGITS][i],
                       smoe=out[contract.SMOE][i, 0] if contract.SMOE in out else None,
                       recipro_cam=out[contract.RECIPRO][i, 0] if contract.RECIPRO in out else None,
                       gradient_cams={m: out[contract.METHOD_MAP[m]][i, 0] for m in ("guided", "gradcam", "gradcampp")
                                      if contract.METHOD_MAP[m] in out})
            for method in todo:
                sal = r.map(method)
                if sal is None:
                    raise UserError(f"method {method!r} needs an output that {model.path} lacks")
                scorer = Scorer(self.classifier)
                scorer.queries = 1
                res[(item.id, method)] = make_explanation(self.classifier, method, np.asarray(sal, np.float32), cls,
                                                          softmax(out[contract.LOGITS][i]), scorer, per, False,
                                                          {"in_graph": True})
        return res

    def _base(self, item: Item, method: str) -> dict:
        return {"image": item.id, "order": item.order, "source": item.path or (f"sample:{item.sample}" if item.sample
                                                                               else f"{item.parquet}#{item.row}"),
                "method": method, "worker": self.worker}

    def _error_row(self, item: Item, method: str, message: str) -> dict:
        return {**self._base(item, method), "status": "error", "error": message}

    def _row(self, item: Item, method: str, image: np.ndarray, x: np.ndarray, r) -> dict:
        from edge_saliency.explain.session import overlay

        sal = np.asarray(r.saliency, dtype=np.float32)
        row = {**self._base(item, method), "status": "ok", "error": None, "class_index": int(r.class_index),
               "label": r.label, "score": float(r.score),
               "top5_labels": [t[0] for t in r.topk], "top5_scores": [float(t[1]) for t in r.topk],
               "queries": int(r.queries), "seconds": float(r.timings["explain"]),
               "map_height": int(sal.shape[0]), "map_width": int(sal.shape[1]),
               "info": json.dumps({k: v for k, v in r.info.items() if not k.endswith("_history")},
                                  default=json_default, sort_keys=True)}
        buf = io.BytesIO()
        np.save(buf, sal)
        row["_npy"] = buf.getvalue()
        if self.job.overlays:
            small = image
            side = max(image.shape[:2])
            if side > OVERLAY_MAX_SIDE:
                f = OVERLAY_MAX_SIDE / side
                small = cv2.resize(image, (round(image.shape[1] * f), round(image.shape[0] * f)),
                                   interpolation=cv2.INTER_AREA)
            ok, png = cv2.imencode(".png", overlay(small, sal))
            row["_png"] = png.tobytes() if ok else None
        if self.job.mode == "eval":
            row.update(self._metrics(item, method, image, x, r, sal))
        return row

    def _metrics(self, item: Item, method: str, image: np.ndarray, x: np.ndarray, r, sal: np.ndarray) -> dict:
        reg = self.registry
        probe = self.probe
        q0 = probe.queries
        cls = r.class_index
        recompute_cls = cls if (method in reg.BLACK_BOX or (self.model and self.model.has_class_input)) else None
        self.ctx.others = self._others(item.id)
        again = []

        def recompute(im):  # the same method's map of image * map (Coherency), same class
            e = reg.explain(self.ctx, method, im, recompute_cls)
            if e.interrupted:
                raise KeyboardInterrupt
            again.append(e.queries)
            return e.saliency

        parts = metrics.adcc_parts(probe.all_probs, x, sal, cls, recompute)
        curves = metrics.insertion_deletion(probe.all_probs, x, sal, cls, steps=self.job.steps)
        fills = metrics.reconstruction_fills(x, self._others(item.id))
        recon = metrics.reconstruction_accuracy(probe.all_probs, x, sal, fills, self.job.keep)
        out = {k: float(parts[k]) for k in ("avg_drop", "coherency", "complexity", "adcc", "clean_score", "masked_score")}
        out.update(insertion=float(curves["insertion"]), deletion=float(curves["deletion"]),
                   reconstruction=float(recon["accuracy"]), eval_queries=int(probe.queries - q0 + sum(again)))
        boxes = self.job.boxes
        if boxes is not None:
            b = boxes.get(item.id, boxes.get(Path(item.id).stem))
            out["pointing"] = None if b is None else float(metrics.pointing_hit(sal, b, image.shape[:2]))
        out["own_reconstruction"] = (float(r.info["reconstruction"]["accuracy"]) if "reconstruction" in r.info
                                     else None)
        return out


# ---------------------------------------------------------------- the table
def schema(mode: str):
    pa, _ = require_pyarrow()
    cols = [("image", pa.string()), ("order", pa.int64()), ("source", pa.string()), ("method", pa.string()),
            ("status", pa.string()), ("error", pa.string()), ("class_index", pa.int32()), ("label", pa.string()),
            ("score", pa.float64()), ("top5_labels", pa.list_(pa.string())), ("top5_scores", pa.list_(pa.float64())),
            ("queries", pa.int64()), ("seconds", pa.float64()), ("map_path", pa.string()),
            ("overlay_path", pa.string()), ("map_height", pa.int32()), ("map_width", pa.int32()),
            ("info", pa.string()), ("worker", pa.string())]
    if mode == "eval":
        cols += [(k, pa.float64()) for k in ("avg_drop", "coherency", "complexity", "adcc", "clean_score",
                                             "masked_score", "insertion", "deletion", "reconstruction", "pointing",
                                             "own_reconstruction")]
        cols += [("eval_queries", pa.int64())]
    return pa.schema(cols)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Write under a temporary name, then rename: readers (and a rerun after a kill) see the whole
    file or none of it. ``durable`` also fsyncs it, so that it survives a power cut too."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """OUT/: manifest, parts, maps, merged results. Only the driver writes here."""

    def __init__(self, out: Path, job: Job):
        self.out, self.job = out, job
        self.parts, self.maps = out / "parts", out / "maps"
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            self.maps.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
        for stale in list(self.parts.glob("*.tmp-*")) + list(self.maps.glob("*.tmp-*")):
            stale.unlink(missing_ok=True)  # a write that an interrupted run did not finish
        self._check_manifest()
        self.run = 1 + max((int(m.group(1)) for p in self.parts.glob("part-r*-*.parquet")
                            if (m := re.match(r"part-r(\d+)-", p.name))), default=0)
        self.chunk = 0
        self.names: dict[str, str] = {}  # image id -> file-name-safe stem of its map files

    def _check_manifest(self) -> None:
        path = self.out / "manifest.json"
        mine = self.job.fingerprint()
        if path.is_file():
            try:
                old = json.loads(path.read_text("utf-8"))
            except ValueError:
                raise UserError(f"{path} is not valid JSON; use another --out") from None
            diff = [k for k in mine if k not in ("methods",) and old.get(k) != mine[k]]
            diff += [f"{m} settings" for m, s in mine["methods"].items()
                     if m in old.get("methods", {}) and old["methods"][m] != s]
            if diff:
                raise UserError(f"{self.out} holds results made with other settings ({', '.join(diff)} differ); "
                                "use another --out, or the same settings to resume")
            mine = {**mine, "methods": {**old.get("methods", {}), **mine["methods"]}}
        atomic_write(path, json.dumps(mine, indent=2, sort_keys=True).encode())

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))

    def done(self) -> set[tuple[str, str]]:
        pa, pq = require_pyarrow()
        out = set()
        for p in self.part_files():
            t = pq.read_table(p, columns=["image", "method"])
            out.update(zip(t.column("image").to_pylist(), t.column("method").to_pylist()))
        return out

    def write_chunk(self, rows: list[dict]) -> Path:
        """Maps first, then the part naming them (atomic renames): a part on disk is whole and its
        maps exist."""
        pa, pq = require_pyarrow()
        by_name = {}
        for r in rows:
            npy, png = r.pop("_npy", None), r.pop("_png", None)
            for k in [k for k in r if k.startswith("_")]:
                del r[k]
            if r.get("status") != "ok":
                continue
            name = by_name.setdefault(r["image"], self._map_name(r["image"]))
            for data, ext, key in ((npy, ".npy", "map_path"), (png, ".png", "overlay_path")):
                if data is not None:
                    # no fsync per map: it cost ~4 ms a file here, a third of a single-pass image's
                    # time on the driver; the part (the record that names them) is fsynced
                    atomic_write(self.maps / f"{name}_{r['method']}{ext}", data, durable=False)
                    r[key] = f"maps/{name}_{r['method']}{ext}"
        table = pa.Table.from_pylist(rows, schema=schema(self.job.mode))
        path = self.parts / f"part-r{self.run:03d}-{self.chunk:06d}.parquet"
        self.chunk += 1
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        atomic_write(path, buf.getvalue().to_pybytes())
        return path

    def _map_name(self, image_id: str) -> str:
        return self.names.get(image_id) or _safe(image_id)

    def merge(self, items: list[Item]) -> tuple[Path, "object"]:
        """All parts -> results.parquet in input order (then method order); returns the table."""
        pa, pq = require_pyarrow()
        files = self.part_files()
        if files:
            table = pa.concat_tables([pq.read_table(p, schema=schema(self.job.mode)) for p in files])
        else:
            table = schema(self.job.mode).empty_table()
        rank = {it.id: it.order for it in items}
        methods = {m: i for i, m in enumerate(self.job.methods)}
        ids, ms = table.column("image").to_pylist(), table.column("method").to_pylist()
        keys = [(rank.get(i, len(rank)), i, methods.get(m, len(methods)), m) for i, m in zip(ids, ms)]
        idx = sorted(range(len(keys)), key=keys.__getitem__)
        table = table.take(pa.array(idx, type=pa.int64()))
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        path = self.out / RESULTS
        atomic_write(path, buf.getvalue().to_pybytes())
        return path, table


# ---------------------------------------------------------------- progress
class DatasetProgress:
    """Images done / total, rate and ETA on stderr: a bar on a terminal, else a line every 15 s."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.label, self.enabled = max(0, total), label, enabled
        self.tty = self.stream.isatty()
        self.done = 0
        self.errors = 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, images: int, errors: int = 0) -> None:
        self.done += images
        self.errors += errors
        now = time.perf_counter()
        if not self.enabled:
            return
        if self.tty and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()
        elif not self.tty and (now - self._last > 15 or self.done >= self.total):
            self._last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        el = now - self.t0
        frac = self.done / self.total if self.total else 1.0
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        bar = "#" * int(30 * frac)
        err = f", {self.errors} unreadable" if self.errors else ""
        return (f"{self.label} [{bar:<30}] {self.done}/{self.total} images ({rate:.2f}/s, "
                f"elapsed {_hms(el)}, ETA {_hms(eta)}{err})")

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _hms(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ---------------------------------------------------------------- local runners
_WORKER: ChunkWorker | None = None


def _pool_init(job: Job) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops the pool
    try:  # Linux: die with the driver, even when it is killed outright (no orphans finishing a chunk)
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    global _WORKER
    _WORKER = ChunkWorker(job)


def _pool_run(payload: tuple[int, list, dict]) -> tuple[int, bytes]:
    k, tasks, blobs = payload
    return k, pickle.dumps(_WORKER.run(tasks, blobs), protocol=pickle.HIGHEST_PROTOCOL)


def run_local(job: Job, chunks: list, on_chunk, workers: int, blobs_of, opened: tuple | None = None) -> None:
    """Chunks in this process (workers == 1) or in a pool of spawned processes."""
    if workers <= 1:
        w = ChunkWorker(job, opened=opened)
        for k, tasks in enumerate(chunks):
            on_chunk(k, w.run(tasks, blobs_of(tasks)))
        return
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")  # ONNX Runtime's threads do not survive fork
    pool = ctx.Pool(workers, initializer=_pool_init, initargs=(job,))
    # at most 2 chunks per worker in flight (imap would queue every chunk, with its image bytes, at once)
    results: queue.Queue = queue.Queue()
    pending = iter(enumerate(chunks))
    inflight = 0

    def submit() -> None:
        nonlocal inflight
        nxt = next(pending, None)
        if nxt is not None:
            k, tasks = nxt
            pool.apply_async(_pool_run, ((k, tasks, blobs_of(tasks)),), callback=results.put,
                             error_callback=results.put)
            inflight += 1

    try:
        for _ in range(2 * workers):
            submit()
        while inflight:
            try:
                res = results.get(timeout=0.5)
            except queue.Empty:
                continue
            inflight -= 1
            if isinstance(res, BaseException):
                raise res
            k, blob = res
            on_chunk(k, pickle.loads(blob))
            submit()
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


# ---------------------------------------------------------------- the driver
@dataclass
class Plan:
    items: list[Item]
    chunks: list  # [[(Item, [methods])]]
    skipped: int  # (image, method) pairs already done
    todo_images: int


def plan(items: list[Item], methods: list[str], done: set, chunk_size: int) -> Plan:
    tasks = []
    skipped = 0
    for it in items:
        todo = [m for m in methods if (it.id, m) not in done]
        skipped += len(methods) - len(todo)
        if todo:
            tasks.append((it, todo))
    chunks = [tasks[i:i + chunk_size] for i in range(0, len(tasks), chunk_size)]
    return Plan(items, chunks, skipped, len(tasks))


def default_chunk_size(methods: list[str]) -> int:
    from edge_saliency.explain.registry import BLACK_BOX

    return 2 if any(m in BLACK_BOX for m in methods) else 64
