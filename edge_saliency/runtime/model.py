"""Open an edge-saliency ONNX file with ONNX Runtime and turn frames into results.

    model = SaliencyModel("efficientnet_lite0.onnx", provider="auto", threads=2)
    result = model.predict(frame_bgr)          # any size; resized here, the graph does the rest
    result.label, result.score, result.smoe, result.recipro_cam, result.smoe_scales

No torch is imported here or anywhere in edge_saliency.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_saliency import contract
from edge_saliency.numeric import softmax
from edge_saliency.errors import UserError
from edge_saliency.runtime.cache import cache_dir

log = logging.getLogger("edge_saliency")

DEFAULT_ARCH = "efficientnet_lite0"


@dataclass
class ModelInfo:
    """What the runtime reads from the file's metadata."""

    arch: str
    labels: list[str]
    input_size: tuple[int, int]  # (h, w)
    methods: list[str]
    scales: list[dict]
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def scale_names(self) -> list[str]:
        return [s.get("layer", f"scale{i}") for i, s in enumerate(self.scales)]


@dataclass
class Result:
    """One frame's prediction and maps (maps at the graph's resolution, float32 in [0, 1])."""

    class_index: int
    label: str
    score: float  # softmax probability of class_index
    topk: list[tuple[str, float]]
    logits: np.ndarray
    smoe: np.ndarray | None = None  # [h, w]
    smoe_scales: np.ndarray | None = None  # [S, h, w]
    recipro_cam: np.ndarray | None = None  # [h', w']
    timings: dict[str, float] = field(default_factory=dict)  # seconds
    gradient_cams: dict[str, np.ndarray] = field(default_factory=dict)  # 'guided' etc. -> [h', w']

    def map(self, name: str) -> np.ndarray | None:
        """'smoe' | 'recipro' | 'fastcam' (SMOE x Recipro-CAM at SMOE's resolution) |
        'guided' | 'gradcam' | 'gradcampp' (when the model was exported with them)."""
        if name == "smoe":
            return self.smoe
        if name == "recipro":
            return self.recipro_cam
        if name in self.gradient_cams:
            return self.gradient_cams[name]
        if name == "fastcam":
            if self.smoe is None or self.recipro_cam is None:
                return self.smoe if self.recipro_cam is None else self.recipro_cam
            h, w = self.smoe.shape
            rc = cv2.resize(self.recipro_cam, (w, h), interpolation=cv2.INTER_LINEAR)
            return self.smoe * rc
        raise KeyError(name)


def read_model_info(meta: dict, path: str) -> ModelInfo:
    missing = [k for k in ("labels", "input", "methods") if k not in meta]
    if missing:
        raise UserError(
            f"{path} is not an edge-saliency model (no edge_saliency.{missing[0]} metadata); "
            "make one with `edge-saliency export`"
        )
    if int(meta.get("version", 0)) > contract.CONTRACT_VERSION:
        raise UserError(f"{path} uses contract version {meta['version']}; this runtime reads up to {contract.CONTRACT_VERSION}: upgrade edge-saliency")
    size = meta["input"].get("size")
    return ModelInfo(
        arch=str(meta.get("arch", "unknown")), labels=list(meta["labels"]),
        input_size=(int(size[0]), int(size[1])), methods=list(meta["methods"]),
        scales=list(meta.get("scales", [])), raw=meta,
    )


class SaliencyModel:
    def __init__(self, path: str | os.PathLike, provider: str | None = "auto", threads: int | None = None,
                 engine: str = "onnxruntime", session_config: dict[str, str] | None = None,
                 spinning: bool = False, gpu=None):
        """spinning: ONNX Runtime's intra-op threads busy-wait for work between runs. Off by default:
        at camera rate a spinning session burns its cores between frames (a Pi's included) and, on a
        machine shared with capture, encoders or other sessions, takes their cores
        (benchmarks/results/ort_spinning.md). gpu: providers.GpuOptions (CUDA/TensorRT settings;
        default: device 0, TensorRT fp32, cache under the cache dir)."""
        from edge_saliency.runtime import engines

        self.path = str(path)
        if not Path(path).is_file():
            raise UserError(f"model file not found: {path}")
        if threads is not None and threads < 1:
            raise UserError("--threads must be at least 1")
        t0 = time.perf_counter()
        session_config = {"session.intra_op.allow_spinning": "1" if spinning else "0", **(session_config or {})}
        if engine == "auto":
            first = engines.create("onnxruntime", self.path, provider, threads, session_config, gpu=gpu)
            self.info = self._read_contract(first)
            h, w = self.info.input_size
            feeds = self._feeds(np.zeros((1, h, w, 3), np.uint8), None, first.inputs)
            self.engine, self.engine_choice = engines.choose_auto(
                self.path, feeds, cache_dir() / "engine_choice.json", provider, threads, session_config, gpu)
        else:
            self.engine = engines.create(engine, self.path, provider, threads, session_config, gpu)
            self.engine_choice = None
            self.info = self._read_contract(self.engine)
        self.load_seconds = time.perf_counter() - t0
        self.providers = self.engine.providers
        self.has_class_input = contract.CLASS_INPUT in self.engine.inputs
        self.outputs = list(self.engine.outputs)

    def _read_contract(self, engine) -> ModelInfo:
        info = read_model_info(contract.decode_metadata(engine.metadata()), self.path)
        if contract.INPUT not in engine.inputs:
            raise UserError(f"{self.path} has no input named {contract.INPUT!r}; it does not follow the edge-saliency contract")
        for name in (contract.LOGITS, contract.TARGET):
            if name not in engine.outputs:
                raise UserError(f"{self.path} has no output named {name!r}; it does not follow the edge-saliency contract")
        return info

    @property
    def engine_name(self) -> str:
        return self.engine.name

    @property
    def provider(self) -> str:
        """Where inference runs: 'cpu', 'cuda', ... for ONNX Runtime; 'openvino-cpu' for OpenVINO."""
        return self.engine.device if self.engine.name == "onnxruntime" else f"openvino-{self.engine.device}"

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    def class_index(self, name_or_index: str | int) -> int:
        """'Egyptian cat' or '285' -> 285."""
        if isinstance(name_or_index, int) or str(name_or_index).lstrip("-").isdigit():
            idx = int(name_or_index)
            if not 0 <= idx < len(self.labels):
                raise UserError(f"class index {idx} out of range 0..{len(self.labels) - 1}")
            return idx
        lowered = [label.lower() for label in self.labels]
        if name_or_index.lower() not in lowered:
            raise UserError(f"no class named {name_or_index!r} in the model's labels")
        return lowered.index(name_or_index.lower())

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """BGR uint8 frame of any size -> [H, W, 3] uint8 at the model's input size."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"expected a BGR uint8 frame [H, W, 3], got {desc}")
        h, w = self.info.input_size
        if frame.shape[:2] == (h, w):
            return frame
        interp = cv2.INTER_AREA if frame.shape[0] > h or frame.shape[1] > w else cv2.INTER_LINEAR
        return cv2.resize(frame, (w, h), interpolation=interp)

    def run(self, batch: np.ndarray, class_index: int | list[int] | None = None) -> dict[str, np.ndarray]:
        """Raw outputs for a preprocessed batch [N, H, W, 3] uint8."""
        feeds = self._feeds(batch, class_index, self.engine.inputs)
        return dict(zip(self.outputs, self.engine.run(self.outputs, feeds)))

    def _feeds(self, batch: np.ndarray, class_index, inputs: list[str]) -> dict[str, np.ndarray]:
        feeds = {contract.INPUT: batch}
        if contract.CLASS_INPUT in inputs:
            cls = np.full((len(batch),), -1, dtype=np.int64)
            if class_index is not None:
                cls[:] = class_index
            feeds[contract.CLASS_INPUT] = cls
        elif class_index is not None:
            raise UserError(f"{self.path} was exported without a class_index input; re-export with --class-input to explain a chosen class")
        return feeds

    def predict_batch(self, frames: list[np.ndarray], class_index=None, topk: int = 5) -> list[Result]:
        t0 = time.perf_counter()
        batch = np.stack([self.preprocess(f) for f in frames])
        t1 = time.perf_counter()
        out = self.run(batch, class_index)
        t2 = time.perf_counter()
        probs = softmax(out[contract.LOGITS])
        results = []
        for i in range(len(frames)):
            target = int(out[contract.TARGET][i])
            order = np.argsort(-probs[i])[:topk]
            results.append(Result(
                class_index=target, label=self.labels[target], score=float(probs[i, target]),
                topk=[(self.labels[j], float(probs[i, j])) for j in order],
                logits=out[contract.LOGITS][i],
                smoe=out[contract.SMOE][i, 0] if contract.SMOE in out else None,
                smoe_scales=out[contract.SMOE_SCALES][i] if contract.SMOE_SCALES in out else None,
                recipro_cam=out[contract.RECIPRO][i, 0] if contract.RECIPRO in out else None,
                gradient_cams={m: out[contract.METHOD_MAP[m]][i, 0] for m in ("guided", "gradcam", "gradcampp")
                               if contract.METHOD_MAP[m] in out},
                timings={"preprocess": (t1 - t0) / len(frames), "inference": (t2 - t1) / len(frames)},
            ))
        return results

    def predict(self, frame: np.ndarray, class_index=None, topk: int = 5) -> Result:
        return self.predict_batch([frame], class_index, topk)[0]


def default_model_path() -> Path:
    return cache_dir() / f"{DEFAULT_ARCH}.onnx"
