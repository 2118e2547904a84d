"""An ONNX model a ``model`` strategy predicts with, through ONNX Runtime.

Why ONNX Runtime (docs/ARCHITECTURE.md#dependencies): one well-kept inference engine for models trained
anywhere (scikit-learn, LightGBM and PyTorch all export ONNX), ~11 µs for one row in process, ~0.2 s to
import and ~27 MB of RSS, against LightGBM's ~160 µs, 1.6 s and scipy pulled in.

A model file says what it reads: its metadata ``features`` names the ``features.bar`` values it takes, in
order (daemons/features/indicators.py FEATURES), and its one input is ``[N, len(features)]`` float32;
its first output is the probability that the next bar closes higher. Its version is the file's SHA-256
(12 hex digits) and its feature hash names the features and their encoding schema, so a signal's
journal line says exactly which model, on which inputs, decided it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..features.codec import SCHEMA
from ..features.indicators import FEATURES

MAX_BYTES = 64 << 20  # a strategy's model, not a foundation model


class ModelError(Exception):
    """A model file that cannot be used, and why (the strategy that names it is disabled)."""


def feature_hash(features: tuple[str, ...]) -> str:
    return hashlib.sha256(f"schema {SCHEMA}: {','.join(features)}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Model:
    path: Path
    version: str  # the file's SHA-256, 12 hex digits
    features: tuple[str, ...]
    feature_hash: str
    session: Any  # onnxruntime.InferenceSession (untyped)
    input_name: str
    columns: tuple[int, ...]  # each feature's index in a features.bar row

    @classmethod
    def load(cls, path: Path) -> Model:
        try:
            data = path.read_bytes() if path.stat().st_size <= MAX_BYTES else None
        except OSError as exc:
            raise ModelError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        if data is None:
            raise ModelError(f"{path}: larger than {MAX_BYTES >> 20} MiB")
        import onnxruntime  # here, not at import: only a process that runs a model pays for it

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # one core: CPUQuota= is the budget
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelError(f"{path}: not a model ONNX Runtime can load ({str(exc).splitlines()[0][:200]})") from None
        meta = session.get_modelmeta().custom_metadata_map
        names = tuple(n for n in meta.get("features", "").split(",") if n)
        unknown = [n for n in names if n not in FEATURES]
        if not names or unknown:
            raise ModelError(f"{path}: its metadata must name the features it reads, among {', '.join(FEATURES)}"
                             + (f" (unknown: {', '.join(unknown)})" if unknown else " (none named)"))
        inputs = session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape)[1:] != [len(names)] or inputs[0].type != "tensor(float)":
            raise ModelError(f"{path}: needs one float input of shape [N, {len(names)}] for its features, has "
                             f"{[(i.name, i.shape, i.type) for i in inputs]}")
        model = cls(path, hashlib.sha256(data).hexdigest()[:12], names, feature_hash(names), session, inputs[0].name,
                    tuple(FEATURES.index(n) for n in names))
        model.predict([0.0] * len(FEATURES))  # a graph that loads but cannot run is refused now, not at the first bar
        return model

    def predict(self, values: list[float | None]) -> float | None:
        """The probability of a higher next close from one ``features.bar`` row; None while a feature it
        reads is not warmed up (null/NaN)."""
        row = [values[i] for i in self.columns]
        if any(v is None or not math.isfinite(v) for v in row):
            return None
        out = self.session.run(None, {self.input_name: np.asarray([row], dtype=np.float32)})
        p = float(np.asarray(out[0]).reshape(-1)[0])
        if not 0.0 <= p <= 1.0:
            raise ModelError(f"{self.path}: predicted {p}, not a probability")
        return p
