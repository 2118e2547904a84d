"""A model-driven strategy: an ONNX model (daemons/models/onnx_model.py) reads each bar's features of one
symbol and predicts the probability of a higher next close; above ``buy_above`` it goes long
``quantity``, below ``sell_below`` it goes flat (or short, with ``allow_short``), in between it holds.

Best run in a process of its own (``process = "own"``: algo-strategy@NAME, with MemoryMax= and
CPUQuota= of its own), so a model's memory and CPU never touch another strategy. The model file is
loaded by ``open()``; a file that cannot be used disables this strategy with the reason, and a reload
(``update_config``, ``systemctl reload``) loads it again, keeping the position.

It decides once per bar, on the bar's close: a strategy that starts late or restarts gets its symbol's
recent bars from the feature cache at once (``on_history``) and decides on the newest if it has not
already (``decided_ns``, checkpointed), so it acts on the bar that closed while it was down without
waiting for the next one, and never twice on one bar that came both live and in the history.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runtime.samples import Samples
from .base import FeatureBar, Signal, Strategy, Tick

if TYPE_CHECKING:
    from ..models.onnx_model import Model

INFERENCE_BUCKETS = (0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.005, 0.025)


class ModelStrategy(Strategy):
    kind = "model"
    reads_bars = True

    def __init__(self, name: str, *, model: str, symbol: str, quantity: int, buy_above: float = 0.55,
                 sell_below: float = 0.45, allow_short: bool = False) -> None:
        if not Path(model).is_absolute():
            raise ValueError(f"model must be an absolute path to an .onnx file, got {model!r}")
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        if not 0.0 < sell_below <= buy_above < 1.0:
            raise ValueError(f"need 0 < sell_below <= buy_above < 1, got sell_below={sell_below} buy_above={buy_above}")
        super().__init__(name, model=model, symbol=symbol, quantity=quantity, buy_above=buy_above,
                         sell_below=sell_below, allow_short=allow_short)
        self.path = Path(model)
        self.symbol, self.quantity, self.allow_short = symbol, quantity, allow_short
        self.buy_above, self.sell_below = buy_above, sell_below
        self.model: Model | None = None
        self.inference = Samples(INFERENCE_BUCKETS)  # seconds per prediction
        self.predictions = 0
        self.decided_ns = 0  # the close (exchange time) of the last bar it decided on

    def open(self) -> None:
        # Imported here: every daemon builds the configured strategies to check the config, and the model's
        # numpy would cost each of them ~13 MB of RSS (bench/pipeline/README.md, round 3).
        from ..models.onnx_model import Model

        self.model = None  # a model that fails to load again is not kept running in its stead
        self.model = Model.load(self.path)

    @property
    def identity(self) -> dict[str, str]:
        """What a signal carries to the journal: which model, on which inputs."""
        assert self.model is not None
        return {"path": str(self.path), "version": self.model.version, "features": self.model.feature_hash}

    def watches(self) -> frozenset[str]:
        return frozenset({self.symbol})

    def on_tick(self, tick: Tick) -> list[Signal]:
        return []  # it decides on bars; the engine still marks the symbol's price from its ticks

    def on_history(self, bars: list[FeatureBar]) -> list[Signal]:
        return self.on_bar(bars[-1]) if bars else []

    def on_bar(self, bar: FeatureBar) -> list[Signal]:
        if bar.symbol != self.symbol or self.model is None:
            return []
        if bar.end_ns == self.decided_ns:
            return []  # the bar it last decided on, again: it came both live and in the history
        self.decided_ns = bar.end_ns  # not only later ones: a day replayed after today's session has earlier bars
        started = time.perf_counter()
        p = self.model.predict(bar.values)
        self.inference.observe(time.perf_counter() - started)
        if p is None:
            return []  # its features are not warmed up yet
        self.predictions += 1
        if p > self.buy_above:
            target = self.quantity
        elif p < self.sell_below:
            target = -self.quantity if self.allow_short else 0
        else:
            return []
        return self.go_to(self.symbol, target, f"model {self.model.version} p_up={p:.3f} "
                                               f"(buy above {self.buy_above:g}, sell below {self.sell_below:g})",
                          self.identity)

    def _state(self) -> dict[str, Any]:
        return {"predictions": self.predictions, "decided_ns": self.decided_ns}

    def _load(self, state: dict[str, Any]) -> None:
        self.predictions = int(state.get("predictions", 0))
        self.decided_ns = int(state.get("decided_ns", 0))
