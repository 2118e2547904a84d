"""One engine (fno, equity, options, or a strategy in its own unit): signals, P&L, limits, CPU, memory."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

from .common import DATASOURCE, JOB, RATE, base, finish, query, stat_panel, timeseries_panel

UID = "algo-engine"
SEL = f'{JOB},daemon="$engine"'  # the engine's own process
RISK = f'{JOB},engine="$engine"'  # risk's view of the engine


def build() -> dict[str, Any]:
    board = (
        base("Algo fleet: engine", UID, "One engine daemon: its strategies' signals, pauses and P&L, risk's "
             "loss-limit distance for it, and the process's CPU and memory. A strategy in its own unit "
             "(algo-strategy@NAME) appears as strategy@NAME; risk counts it under its engine.")
        .with_variable(dashboard.QueryVariable("engine").label("Engine").datasource(DATASOURCE)
                       .query(f"label_values(algo_engine_signals_total{{{JOB}}}, daemon)")
                       .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))
        .with_row(dashboard.Row("Strategies"))
        .with_panel(timeseries_panel(
            "Signals per minute by strategy", "strategy.signal events the engine published.",
            [query(f"sum by (strategy) (rate(algo_engine_signals_total{{{SEL}}}[{RATE}])) * 60", "{{strategy}}")],
            unit="opm", w=12, min_value=0))
        .with_panel(stat_panel(
            "Paused strategies", "PAUSED: entries blocked by `algoctl pause`; exits still go out.",
            [query(f"algo_engine_strategy_paused{{{SEL}}}", "{{strategy}}", instant=True)],
            w=12, h=8, mappings={"0": ("trading", "green"), "1": ("PAUSED", "orange")},
            thresholds=((None, "green"), (1, "orange"))))
        .with_panel(timeseries_panel(
            "P&L by strategy", "Realised and unrealised P&L today of each strategy, from the engine's book.",
            [query(f"algo_engine_pnl_rupees{{{SEL}}}", "{{strategy}} {{kind}}")],
            unit="currencyINR", w=12, thresholds=((None, "red"), (0, "green"))))
        .with_panel(timeseries_panel(
            "Open positions by strategy", "Symbols each strategy holds.",
            [query(f"algo_engine_open_positions{{{SEL}}}", "{{strategy}}")], w=12, min_value=0))
        .with_panel(timeseries_panel(
            "Strategy errors per minute", "Calls into each strategy that raised (StrategyErrors); the engine's "
            "other strategies carry on. `journalctl STRATEGY=<name> -p err` gives each exception.",
            [query(f"sum by (strategy) (rate(algo_engine_strategy_errors_total{{{SEL}}}[{RATE}])) * 60",
                   "{{strategy}}")],
            unit="opm", w=12, min_value=0, thresholds=((None, "green"), (0.001, "red"))))
        .with_panel(stat_panel(
            "Disabled strategies", "DISABLED: entries blocked after repeated errors (StrategyDisabled); exits "
            "still go out. `algoctl resume <strategy>` re-enables.",
            [query(f"algo_engine_strategy_disabled{{{SEL}}}", "{{strategy}}", instant=True)],
            w=12, h=8, mappings={"0": ("enabled", "green"), "1": ("DISABLED", "red")},
            thresholds=((None, "green"), (1, "red"))))
        .with_row(dashboard.Row("Risk"))
        .with_panel(timeseries_panel(
            "Engine P&L (risk)", "The engine's realised and unrealised P&L today in risk's book, which the loss "
            "limit is judged on.",
            [query(f"algo_risk_pnl_rupees{{{RISK}}}", "{{kind}}")],
            unit="currencyINR", w=12, thresholds=((None, "red"), (0, "green"))))
        .with_panel(timeseries_panel(
            "Loss-limit distance", "How much more the engine may lose today before risk engages the kill "
            "switch; LossLimitNear fires under the dashed 20% line.",
            [query(f"algo_risk_loss_limit_distance_rupees{{{RISK}}}", "distance"),
             query(f"0.2 * algo_risk_loss_limit_rupees{{{RISK}}}", "20% of the limit")],
            unit="currencyINR", w=12, thresholds=((None, "red"), (0, "green"))))
        .with_row(dashboard.Row("Process"))
        .with_panel(timeseries_panel(
            "CPU", "CPU time per second of wall time (1.0 = one core busy).",
            [query(f"rate(algo_process_cpu_seconds_total{{{SEL}}}[{RATE}])", "cpu")],
            unit="percentunit", w=8, min_value=0))
        .with_panel(timeseries_panel(
            "CPU by strategy", "CPU time each strategy spends in on_tick, per second of wall time; the rest "
            "of the process's CPU is the bus and the engine itself.",
            [query(f"rate(algo_engine_strategy_cpu_seconds_total{{{SEL}}}[{RATE}])", "{{strategy}}")],
            unit="percentunit", w=8, min_value=0))
        .with_panel(timeseries_panel(
            "Memory", "Resident memory of the process.",
            [query(f"algo_process_resident_memory_bytes{{{SEL}}}", "resident")],
            unit="bytes", w=8, min_value=0))
        .with_panel(timeseries_panel(
            "Event-loop lag p99", "How late the watchdog tick ran: a busy or blocked event loop. Past the "
            "unit's WatchdogSec (10 s) systemd kills the process.",
            [query(f"histogram_quantile(0.99, sum by (le) (rate(algo_event_loop_lag_seconds_bucket{{{SEL}}}[{RATE}])))",
                   "p99")],
            unit="s", w=8, min_value=0))
    )
    return finish(board)
