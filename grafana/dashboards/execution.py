"""Execution and risk: decisions, orders, fills, rejects, latency, reconciliation, budgets, token."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard

from .common import JOB, RATE, base, finish, query, stat_panel, timeseries_panel

UID = "algo-execution"
LATENCY = f"rate(algo_execution_tick_to_order_seconds_bucket{{{JOB}}}[{RATE}])"


def build() -> dict[str, Any]:
    board = (
        base("Algo fleet: execution and risk", UID, "From signal to fill: risk's decisions, orders by status, "
             "fills and rejects, tick-to-order latency, reconciliation at start-up, the order-rate budget, "
             "the kill switch and the Kite token (token and ticker panels: live mode only).")
        .with_row(dashboard.Row("Risk"))
        .with_panel(timeseries_panel(
            "Decisions per minute by reason", "approved, or the rule that blocked the signal.",
            [query(f"sum by (reason) (rate(algo_risk_decisions_total{{{JOB}}}[{RATE}])) * 60", "{{reason}}")],
            unit="opm", w=12, min_value=0, stacked=True))
        .with_panel(timeseries_panel(
            "Loss-limit distance", "How much more each engine (and the fleet) may lose today before the kill "
            "switch engages.",
            [query(f"algo_risk_loss_limit_distance_rupees{{{JOB}}}", "{{engine}}")],
            unit="currencyINR", w=8, thresholds=((None, "red"), (0, "green"))))
        .with_panel(stat_panel(
            "Kill switch", "Engaged: every new entry is refused; exits still go out.",
            [query(f"algo_risk_kill_switch{{{JOB}}}", instant=True)],
            w=4, h=8, mappings={"0": ("off", "green"), "1": ("ENGAGED", "red")},
            thresholds=((None, "green"), (1, "red"))))
        .with_row(dashboard.Row("Orders"))
        .with_panel(timeseries_panel(
            "Order updates per minute by status", "Orders reaching OPEN, COMPLETE, REJECTED or CANCELLED.",
            [query(f"sum by (status) (rate(algo_execution_orders_total{{{JOB}}}[{RATE}])) * 60", "{{status}}")],
            unit="opm", w=12, min_value=0))
        .with_panel(timeseries_panel(
            "Fills and rejects per minute", "Fills from the broker, and orders refused (by the broker, stale "
            "or malformed; OrderRejectsRising at 3 in 15 minutes).",
            [query(f"rate(algo_execution_fills_total{{{JOB}}}[{RATE}]) * 60", "fills"),
             query(f"rate(algo_execution_rejects_total{{{JOB}}}[{RATE}]) * 60", "rejects")],
            unit="opm", w=12, min_value=0))
        .with_panel(timeseries_panel(
            "Tick-to-order latency", "From the tick that caused a signal to the order reaching the broker.",
            [query(f"histogram_quantile(0.5, sum by (le) ({LATENCY}))", "p50"),
             query(f"histogram_quantile(0.99, sum by (le) ({LATENCY}))", "p99")],
            unit="s", w=12, min_value=0))
        .with_panel(timeseries_panel(
            "Open orders", "Orders working at the broker.",
            [query(f"algo_execution_open_orders{{{JOB}}}", "open")], w=6, min_value=0))
        .with_panel(stat_panel(
            "Reconciliation at start-up", "What execution's last start found at the broker; "
            "unknown_at_broker is a mismatch (ReconciliationMismatch).",
            [query(f"algo_execution_reconciliations_total{{{JOB}}}", "{{result}}", instant=True)],
            w=6, h=8, thresholds=((None, "green"),)))
        .with_row(dashboard.Row("Limits and broker"))
        .with_panel(timeseries_panel(
            "Order budget remaining", "Orders Kite's rate limits still allow per window (OrderBudgetExhausted "
            "under 1 for a minute).",
            [query(f"algo_execution_order_budget_remaining{{{JOB}}}", "{{window}}")],
            w=8, min_value=0, thresholds=((None, "red"), (1, "green"))))
        .with_panel(timeseries_panel(
            "Throttled orders per minute", "Orders that waited for the per-second or per-minute budget.",
            [query(f"rate(algo_execution_throttled_total{{{JOB}}}[{RATE}]) * 60", "throttled")],
            unit="opm", w=4, min_value=0))
        .with_panel(stat_panel(
            "Kite token expires in", "Time left on the Kite access token (live mode; TokenExpiringSoon under "
            "1 hour, TokenExpired at 0).",
            [query(f"algo_broker_token_expiry_seconds{{{JOB}}}", "{{daemon}}", instant=True)],
            unit="s", w=6, h=8, thresholds=((None, "red"), (3600, "green"))))
        .with_panel(timeseries_panel(
            "Kite ticker reconnects", "Reconnects of the live ticker WebSocket per interval (live mode).",
            [query(f"increase(algo_marketdata_reconnects_total{{{JOB}}}[{RATE}])", "reconnects")],
            w=6, min_value=0))
    )
    return finish(board)
