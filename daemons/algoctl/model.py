"""`algoctl model train|check`: train the small model a ``model`` strategy runs (daemons/models/train.py),
and check a model file as the strategy would load it."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from ..models.onnx_model import Model, ModelError
from ..models.train import DEFAULT_FEATURES, dataset, export, fit, parse_features, recorded_ticks, simulated_ticks
from .units import SHIPPED

PAPER_INSTRUMENTS = SHIPPED / "configs" / "instruments" / "paper.csv"
EXAMPLE_DAY = date(2026, 11, 20)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    md = sub.add_parser("model", help="train a model strategy's model offline; check a model file")
    md_sub = md.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = md_sub.add_parser("train", help="a logistic model on a day's features (recorded or simulated), as ONNX")
    train.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--journal", type=Path, metavar="DAY_DIR", help="a recorded journal day directory")
    source.add_argument("--simulate", type=int, metavar="SEED", help="a paper session of the simulator, this seed")
    train.add_argument("--instruments", type=Path, default=PAPER_INSTRUMENTS, help="for --simulate (default: paper's)")
    train.add_argument("--day", type=date.fromisoformat, default=EXAMPLE_DAY, help="for --simulate (YYYY-MM-DD)")
    train.add_argument("--steps", type=int, default=22_500, help="for --simulate: steps in the session (1 per second)")
    train.add_argument("--bar-seconds", type=int, default=60)
    train.add_argument("--features", type=parse_features, default=DEFAULT_FEATURES,
                       help=f"comma list (default {','.join(DEFAULT_FEATURES)})")
    check = md_sub.add_parser("check", help="load a model file as a model strategy would: version, features")
    check.add_argument("file", type=Path)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "check":
            model = Model.load(args.file)
            print(f"{args.file}: version {model.version}, features {','.join(model.features)} "
                  f"(hash {model.feature_hash})")
            return 0
        if args.bar_seconds < 1 or args.steps < 1:
            raise ValueError("--bar-seconds and --steps must be at least 1")
        if args.journal is not None:
            ticks, source = recorded_ticks(args.journal), f"journal {args.journal.name}"
        else:
            ticks = simulated_ticks(args.instruments, args.simulate, args.day, args.steps)
            source = f"simulated {args.day} seed {args.simulate} steps {args.steps}"
        data = dataset(ticks, args.features, args.bar_seconds, source)
        export(args.out, data, args.features, fit(data))
        model = Model.load(args.out)
    except (ModelError, ValueError, OSError) as exc:
        print(f"algoctl model {args.action}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(data.x)} bars of {source}, {data.y.mean():.1%} up; version {model.version}, "
          f"features {','.join(model.features)} (hash {model.feature_hash})")
    return 0
