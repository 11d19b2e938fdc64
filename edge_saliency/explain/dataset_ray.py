"""The dataset runner on Ray Data: the same chunks, the same worker, the same output files.

Each chunk of the plan is one row of a Ray dataset; ``map_batches`` (``batch_size=1``) runs them
on a fixed pool of ``RayChunkWorker`` actors (``ActorPoolStrategy(size=--workers)``, what older Ray
called ``concurrency``; ``num_cpus`` / ``num_gpus`` per actor), each of which opens the ONNX file
once. A Ray batch is a whole chunk, never a slice Ray chose, because ONNX Runtime's results depend
on the batch's composition in the last bits (~1e-7): with the same chunks, Ray and the local
runner write identical rows. The rows come back to the driver, which writes maps and
Parquet parts exactly as the local runner does (``dataset.Store``), so a cluster needs no shared
disk. The model's bytes travel with the actors' constructor arguments: an actor on a node where
the file is missing (or differs) writes them to its own cache
(``~/.cache/edge-saliency/models/<sha256>.onnx``).

Input images are read by the actors from their paths (visible on every node: a shared disk), or,
with ``--ship-images`` or a Parquet input with an ``image`` column, shipped as bytes by the driver.

``--ray`` alone starts a local Ray (or uses the one this process already started); ``--ray
ADDRESS`` joins a running cluster (``auto``, ``HOST:6379`` or ``ray://HOST:10001``).
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.explain.dataset import ChunkWorker, Job, atomic_write, file_sha256


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError("--ray needs Ray Data: pip install 'edge-saliency[ray]'") from None
    return ray


def local_model(job: Job, model_bytes: bytes | None) -> str:
    """The ONNX file on this node: the job's path when it is the same file, else a cached copy
    written from ``model_bytes``."""
    p = Path(job.model)
    if p.is_file() and file_sha256(str(p)) == job.model_sha256:
        return str(p)
    from edge_saliency.runtime.cache import cache_dir

    cached = cache_dir() / "models" / f"{job.model_sha256}.onnx"
    if not cached.is_file():
        if model_bytes is None:
            raise UserError(f"{job.model} is not on this node and the driver sent no copy")
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, model_bytes)
    return str(cached)


class RayChunkWorker:
    """A Ray Data actor: opens the model once, then explains one chunk per call."""

    def __init__(self, job: Job, model_bytes: bytes):
        self.worker = ChunkWorker(job, model_path=local_model(job, model_bytes))

    def __call__(self, batch: dict) -> dict:
        chunks, rows = [], []
        for k, payload in zip(batch["chunk"], batch["payload"]):
            tasks, blobs = pickle.loads(payload)
            chunks.append(int(k))
            rows.append(pickle.dumps(self.worker.run(tasks, blobs), protocol=pickle.HIGHEST_PROTOCOL))
        return {"chunk": np.asarray(chunks, dtype=np.int64), "rows": np.asarray(rows, dtype=object)}


def run_ray(job: Job, chunks: list, on_chunk, blobs_of, address: str | None = None, workers: int = 1,
            num_cpus: float | None = None, num_gpus: float | None = None) -> None:
    ray = import_ray()
    import ray.data

    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "logging_level": logging.WARNING}
        try:
            if address in (None, "", "local"):
                ray.init(**kwargs)
            else:
                ray.init(address=address, **kwargs)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            where = "a local Ray" if address in (None, "", "local") else f"the Ray cluster at {address}"
            hint = ("" if address in (None, "", "local") else
                    " (is it running? A cluster with token authentication, the default from Ray 2.59 on, "
                    "needs its token here too: RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)")
            raise UserError(f"cannot start or join {where}: {first[:300]}{hint}") from None
        started = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not "progress bars disabled": ours replaces them
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours shows images and the ETA
    try:
        # the model's bytes are a constructor argument, which Ray keeps in its object store for the
        # actors' lifetime (Ray logs one "constructor arguments in the object store" line about it,
        # its issue 53727; harmless while this driver runs)
        model_bytes = Path(job.model).read_bytes()
        rows = [{"chunk": k, "payload": pickle.dumps((tasks, blobs_of(tasks)), protocol=pickle.HIGHEST_PROTOCOL)}
                for k, tasks in enumerate(chunks)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(RayChunkWorker, fn_constructor_kwargs={"job": job, "model_bytes": model_bytes},
                            batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                            num_cpus=1 if num_cpus is None else num_cpus, num_gpus=num_gpus or None)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for k, blob in zip(batch["chunk"], batch["rows"]):
                on_chunk(int(k), pickle.loads(blob))
    finally:
        if started:
            ray.shutdown()

