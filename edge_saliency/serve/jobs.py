"""POST /api/explain: slower explanations of the newest frame, one at a time, in a background worker.

Methods: the in-graph ones (smoe, recipro, fastcam: one more forward pass, with a chosen class
when the model has a class_index input) and, where edge_saliency.explain is installed, the
black-box ones (decam, maskopt, rise) under a query budget. The queue is bounded: a full queue
refuses new jobs (HTTP 429) instead of growing. Finished jobs are kept (the newest `keep`) for
GET /api/jobs/<id>; the map of a finished job is kept as a PNG, its frame is let go.

Isolation from the live loop: the worker thread lowers its own scheduling priority (nice +10, a
per-thread setting on Linux) and runs the jobs on a model session of its own (made in that thread
at the first job, so its inference threads inherit the lower priority; `model_factory`), each job under a time limit
(`timeout`) checked between model calls, and the query budget capped by the config's range.
"""
from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import time
from collections import OrderedDict

import cv2
import numpy as np

from edge_saliency.errors import UserError
from edge_saliency.pipeline.region import salient_region
from edge_saliency.pipeline.render import normalise_for_display

log = logging.getLogger("edge_saliency")

IN_GRAPH = ("smoe", "recipro", "fastcam")
OUTPUT_OF = {"smoe": "smoe", "recipro": "recipro_cam", "fastcam": None}


def black_box_methods() -> dict:
    """name -> (module with explain(classifier, image, class_index, settings), settings class); {} if absent."""
    try:
        from edge_saliency.explain.registry import BLACK_BOX, SETTINGS
    except ImportError:
        return {}
    return {name: (mod, SETTINGS[name]) for name, mod in BLACK_BOX.items()}


class Cancelled(Exception):
    """The daemon is stopping, or the job ran past its time limit: it ends at its next model call."""


NICE = 10  # explain work yields to the live loop


def lower_thread_priority(increment: int = NICE) -> bool:
    """Lower this thread's priority (Linux: nice is per thread; threads made from here inherit it)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
        return True
    except (AttributeError, OSError):
        return False


class _CancellableClassifier:
    """A classifier that runs big batches in chunks and stops between them when asked to (daemon
    stopping) or when the job's deadline has passed."""

    CHUNK = 8

    def __init__(self, classifier, stop: threading.Event, deadline: float | None = None, limit: float = 0.0):
        self.classifier, self.stop = classifier, stop
        self.deadline, self.limit = deadline, limit
        self.input_size, self.labels = classifier.input_size, classifier.labels

    def logits(self, batch):
        out = []
        for i in range(0, len(batch), self.CHUNK):
            if self.stop.is_set():
                raise Cancelled("the server is stopping")
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise Cancelled(f"stopped after the time limit of {self.limit:g} s (explain_timeout)")
            out.append(self.classifier.logits(batch[i:i + self.CHUNK]))
        return np.concatenate(out, axis=0)


class JobRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Job:
    def __init__(self, method: str, class_index: int | None, snapshot):
        self.id = secrets.token_hex(8)
        self.method = method
        self.class_index = class_index
        self.snapshot = snapshot  # let go once the job has finished
        self.frame_id = snapshot.frame.id
        self.frame_shape = tuple(snapshot.frame.image.shape[:2])  # (h, w) of the frame it explains, kept
        self.state = "queued"
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.result: dict | None = None
        self.error: str | None = None
        self.map_png: bytes | None = None

    def as_dict(self) -> dict:
        d = {"id": self.id, "state": self.state, "method": self.method, "class": self.class_index,
             "frame": self.frame_id, "created": round(self.created, 3),
             "started": None if self.started is None else round(self.started, 3),
             "finished": None if self.finished is None else round(self.finished, 3)}
        if self.result is not None:
            d["result"] = self.result
        if self.error is not None:
            d["error"] = self.error
        if self.map_png is not None:
            d["map_url"] = f"/api/jobs/{self.id}/map.png"
        return d


class ExplainJobs:
    def __init__(self, model, queue_size: int = 4, keep: int = 64, budget: int = 1000, metrics=None,
                 timeout: float = 60.0, model_factory=None):
        self.model = model
        self.live_model = model
        self.model_factory = model_factory  # () -> a model session of the worker's own (None: share)
        self.timeout = timeout
        self.niced = False
        self.budget = budget
        self.keep = keep
        self.metrics = metrics
        self.black_box = black_box_methods()
        outs = set(getattr(model, "outputs", []))
        self.methods = [m for m in IN_GRAPH if m == "fastcam" and outs & {"smoe", "recipro_cam"}
                        or OUTPUT_OF.get(m) in outs] + list(self.black_box)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="explain-worker", daemon=True)

    def start(self) -> "ExplainJobs":
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Cancel the running job at its next model call and end the worker."""
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, method: str, class_index: int | None, snapshot) -> Job:
        if method not in self.methods:
            raise JobRejected(400, f"unknown method {method!r}; this server offers: {', '.join(self.methods)}")
        if snapshot is None:
            raise JobRejected(503, "no frame processed yet")
        if class_index is not None and method in IN_GRAPH and not self.model.has_class_input:
            raise JobRejected(400, f"this model was exported without a class_index input: method {method!r} "
                                   "explains the top class only (use a black-box method for another class)")
        job = Job(method, class_index, snapshot)
        with self._lock:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise JobRejected(429, f"explain queue full ({self._queue.maxsize} jobs waiting); retry later") from None
            self._jobs[job.id] = job
            self._trim()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _trim(self) -> None:
        done = [j for j in self._jobs.values() if j.state in ("done", "failed")]
        for j in done[: max(0, len(done) - self.keep)]:
            del self._jobs[j.id]

    def _own_session(self) -> None:
        """In the worker thread, at the first job (no memory or start-up time spent until then): a model
        session of its own, whose inference threads inherit the worker's lower priority."""
        factory, self.model_factory = self.model_factory, None
        if factory is not None:
            try:
                self.model = factory()
            except Exception as exc:  # logged; jobs then share the live model
                log.warning("explain jobs: cannot make their own model session (%s): sharing the live one", exc)

    def _work(self) -> None:
        self.niced = lower_thread_priority()
        while not self._stop.is_set():
            job = self._queue.get()
            if job is None or self._stop.is_set():
                return
            self._own_session()
            job.state = "running"
            job.started = time.time()
            try:
                sal, info = self._run(job)
                frame = job.snapshot.frame.image
                h, w = frame.shape[:2]
                region = salient_region(sal, (w, h))
                ok, png = cv2.imencode(".png", normalise_for_display(sal))
                job.map_png = png.tobytes() if ok else None
                job.result = {**info, "map_size": [int(sal.shape[1]), int(sal.shape[0])],
                              "box": region["box"] if region else None,
                              "centroid": region["centroid"] if region else None,
                              "seconds": round(time.time() - job.started, 3)}
                job.state = "done"
            except UserError as exc:
                job.error, job.state = str(exc), "failed"
            except Cancelled as exc:
                if "time limit" in str(exc):  # logged before the state says so
                    log.warning("explain job %s (%s) %s", job.id, job.method, exc)
                job.error, job.state = str(exc), "failed"
            except Exception as exc:  # logged; the worker goes on with the next job
                log.warning("explain job %s (%s) failed: %s: %s", job.id, job.method, type(exc).__name__, exc)
                job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
            job.finished = time.time()
            job.snapshot = None  # kept jobs keep their result and map, not the frame
            with self._lock:
                self._trim()
            if self.metrics is not None:
                self.metrics.jobs.labels(job.state).inc()

    def _run(self, job: Job) -> tuple[np.ndarray, dict]:
        model = self.model
        image = model.preprocess(job.snapshot.frame.image)
        if job.method in IN_GRAPH:
            result = model.predict_batch([image], class_index=job.class_index, topk=5)[0]
            sal = result.map(job.method)
            if sal is None:
                raise UserError(f"this model has no output for method {job.method!r}")
            return np.asarray(sal, np.float32), {
                "class": result.class_index, "label": result.label, "score": round(result.score, 5),
                "topk": [[lbl, round(s, 5)] for lbl, s in result.topk], "queries": 1}
        from edge_saliency.explain.common import SaliencyModelClassifier

        mod, settings_cls = self.black_box[job.method]
        settings = settings_cls(budget=self.budget)
        clf = _CancellableClassifier(SaliencyModelClassifier(model), self._stop, time.monotonic() + self.timeout,
                                     self.timeout)
        exp = mod.explain(clf, image, job.class_index, settings, progress=False)
        return np.asarray(exp.saliency, np.float32), {
            "class": exp.class_index, "label": exp.label, "score": round(exp.score, 5),
            "topk": [[lbl, round(s, 5)] for lbl, s in exp.topk], "queries": exp.queries}
