"""``algoctl model train``: a small model for a ``model`` strategy, from a recorded journal day or a
simulated one, offline (no downloads), deterministic: the same day gives the same file byte for byte,
which is how the example model shipped in ``configs/models/`` is checked to be this command's output.

The day's ticks go through the fleet's own candles and features (daemons/features: the stage
algo-marketdata runs), so a model learns from exactly what it will see on ``features.bar``. The label
is whether a symbol's next bar closes higher. The model is a logistic regression fitted by Newton's
method (numpy; a few features do not need more), standardisation included in the graph, written as
ONNX with the ``onnx`` package's own graph builder and its checker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..features.indicators import FEATURES, Periods
from ..features.stage import FeatureStage
from ..marketdata.instruments import load_instruments
from ..marketdata.replay import ticks as journal_ticks
from ..marketdata.session import SessionClock
from ..marketdata.simulator import MarketSimulator
from ..runtime.envelope import tick_key
from .onnx_model import feature_hash

Matrix = npt.NDArray[np.float64]
DEFAULT_FEATURES = ("return", "rsi", "volatility")
OPSET = 17
RIDGE = 1e-3  # a little L2: Newton's method stays defined when a feature barely varies


@dataclass(frozen=True)
class Dataset:
    x: Matrix  # rows of the chosen features
    y: Matrix  # 1.0 where the next bar closed higher
    source: str


def simulated_ticks(instruments: Path, seed: int, day: date, steps: int) -> Iterator[dict[str, Any]]:
    """The paper feed's ticks for a session of ``steps`` steps (the simulator algo-marketdata runs)."""
    sim = MarketSimulator(load_instruments(instruments), seed=seed, clock=SessionClock(day, steps))
    for _ in range(steps):
        yield from sim.step()


def recorded_ticks(day_dir: Path) -> Iterator[dict[str, Any]]:
    return (tick for _, tick in journal_ticks(day_dir))


def dataset(ticks: Iterable[dict[str, Any]], features: tuple[str, ...], bar_seconds: int, source: str) -> Dataset:
    """Each bar's features (those warmed up) and whether the symbol's next bar closed higher."""
    stage = FeatureStage(bar_seconds, 1, Periods())
    columns = [FEATURES.index(f) for f in features]
    last: dict[str, tuple[list[float], float]] = {}  # symbol -> its previous bar's row and close
    x, y = [], []

    def take() -> None:
        while stage.pending:
            _, ohlc, feats = stage.close_next()
            symbol, close = ohlc["symbol"], float(ohlc["close"])
            before = last.get(symbol)
            if before is not None:
                x.append(before[0])
                y.append(1.0 if close > before[1] else 0.0)
            values = [feats["v"][i] for i in columns]
            if all(v is not None for v in values):
                last[symbol] = ([float(v) for v in values], close)
            else:
                last.pop(symbol, None)

    for tick in ticks:
        if stage.on_tick(tick, tick_key(tick)):
            take()
    stage.flush()
    take()
    if len(x) < 2 * len(features) + 2 or len(set(y)) < 2:
        raise ValueError(f"{source}: {len(x)} usable bars ({int(sum(y))} up) are too few to train on; "
                         "a longer day or shorter bars (--bar-seconds)")
    return Dataset(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), source)


def fit(data: Dataset, iterations: int = 25) -> tuple[Matrix, Matrix, Matrix, float]:
    """Standardisation (mean, std) and a logistic regression (weights, bias) by Newton's method."""
    mean = data.x.mean(axis=0)
    std = data.x.std(axis=0)
    std[std == 0] = 1.0
    z = np.hstack([(data.x - mean) / std, np.ones((len(data.x), 1))])
    w = np.zeros(z.shape[1])
    ridge = RIDGE * np.eye(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - data.y) + ridge @ w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + ridge
        w = w - np.linalg.solve(hessian, gradient)
    return mean, std, w[:-1], float(w[-1])


def export(path: Path, data: Dataset, features: tuple[str, ...], model: tuple[Matrix, Matrix, Matrix, float]) -> None:
    mean, std, weights, bias = model
    n = len(features)
    f32 = np.float32
    graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "mean"], ["centred"]), helper.make_node("Div", ["centred", "std"], ["z"]),
         helper.make_node("MatMul", ["z", "w"], ["zw"]), helper.make_node("Add", ["zw", "b"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["p_up"])],
        "next_bar_up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("p_up", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(mean.astype(f32), "mean"), numpy_helper.from_array(std.astype(f32), "std"),
         numpy_helper.from_array(weights.astype(f32).reshape(n, 1), "w"),
         numpy_helper.from_array(np.asarray([bias], dtype=f32), "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="algoctl model train")
    proto.ir_version = 8  # what every ONNX Runtime since 1.14 reads
    for key, value in {"features": ",".join(features), "feature_hash": feature_hash(features),
                       "trained_on": data.source, "rows": str(len(data.x)),
                       "up_share": f"{data.y.mean():.4f}"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString(deterministic=True))
    tmp.replace(path)


def parse_features(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in FEATURES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"--features: a comma list of distinct names among {', '.join(FEATURES)}, got {text!r}")
    return names
