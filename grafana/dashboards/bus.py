"""The event bus: broker throughput, drops, peers and queues; clients' reconnects, gaps and lag."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard

from .common import JOB, RATE, base, finish, query, stat_panel, timeseries_panel

UID = "algo-bus"


def build() -> dict[str, Any]:
    board = (
        base("Algo fleet: bus", UID, "algo-bus (the broker on /run/algo/bus.sock) and every bus client: "
             "throughput, drops, peers, queues, reconnects, sequence gaps and event-loop lag.")
        .with_row(dashboard.Row("Broker"))
        .with_panel(timeseries_panel(
            "Published/s by topic", "Events the broker received, by topic.",
            [query(f"sum by (topic) (rate(algo_bus_published_total{{{JOB}}}[{RATE}]))", "{{topic}}")],
            unit="ops", w=12, min_value=0, stacked=True))
        .with_panel(timeseries_panel(
            "Delivered and dropped/s", "Deliveries to subscribers, and deliveries dropped by reason: "
            "conflated is normal for market data; slow_consumer and disconnected lose events (BusDrops).",
            [query(f"sum(rate(algo_bus_delivered_total{{{JOB}}}[{RATE}]))", "delivered"),
             query(f"sum by (reason) (rate(algo_bus_dropped_total{{{JOB}}}[{RATE}]))", "dropped: {{reason}}")],
            unit="ops", w=12, min_value=0))
        .with_panel(stat_panel(
            "Peers", "Clients connected to the broker.",
            [query(f"algo_bus_peers{{{JOB}}}", instant=True)], w=4, graph=True))
        .with_panel(stat_panel(
            "Subscriptions", "Subscription patterns held by the broker.",
            [query(f"algo_bus_subscriptions{{{JOB}}}", instant=True)], w=4, graph=True))
        .with_panel(timeseries_panel(
            "Broker queue bytes", "Bytes queued to subscribers (a subscriber past its buffer is disconnected).",
            [query(f"algo_bus_queue_bytes{{{JOB}}}", "queued")], unit="bytes", w=8, h=4, min_value=0))
        .with_panel(timeseries_panel(
            "Disconnects and bad frames", "Peers the broker dropped, and malformed frames, per interval.",
            [query(f"sum by (reason) (increase(algo_bus_disconnects_total{{{JOB}}}[{RATE}]))",
                   "disconnect: {{reason}}"),
             query(f"sum by (reason) (increase(algo_bus_protocol_errors_total{{{JOB}}}[{RATE}]))",
                   "bad frame: {{reason}}"),
             query(f"increase(algo_bus_peers_rejected_total{{{JOB}}}[{RATE}])", "refused (SO_PEERCRED)")],
            w=8, h=4, min_value=0))
        .with_row(dashboard.Row("Clients"))
        .with_panel(stat_panel(
            "Connected", "1 while the daemon is connected to the broker (BusClientDisconnected after 30 s).",
            [query(f"algo_bus_client_connected{{{JOB}}}", "{{daemon}}", instant=True)],
            w=24, mappings={"0": ("DISCONNECTED", "red"), "1": ("connected", "green")},
            thresholds=((None, "red"), (1, "green"))))
        .with_panel(timeseries_panel(
            "Client queue bytes", "Bytes each client holds for the broker (its outbox).",
            [query(f"algo_bus_client_queue_bytes{{{JOB}}}", "{{daemon}}")], unit="bytes", w=8, min_value=0))
        .with_panel(timeseries_panel(
            "Reconnects", "Reconnects to the broker per interval (a broker restart shows on every client).",
            [query(f"increase(algo_bus_client_reconnects_total{{{JOB}}}[{RATE}])", "{{daemon}}")], w=8, min_value=0))
        .with_panel(timeseries_panel(
            "Gaps and client drops", "Events a client missed upstream (sequence gaps) and events it lost itself "
            "(outbox full, undecodable), per interval.",
            [query(f"increase(algo_bus_client_gaps_total{{{JOB}}}[{RATE}])", "gaps: {{daemon}}"),
             query(f"sum by (daemon, reason) (increase(algo_bus_client_dropped_total{{{JOB}}}[{RATE}]))",
                   "dropped: {{daemon}} {{reason}}"),
             query(f"increase(algo_bus_client_handler_errors_total{{{JOB}}}[{RATE}])", "handler errors: {{daemon}}")],
            w=8, min_value=0))
        .with_panel(timeseries_panel(
            "Delivery lag p99", "Publish-to-handler delay of received events (one in 64 sampled).",
            [query("histogram_quantile(0.99, sum by (daemon, le) "
                   f"(rate(algo_bus_client_lag_seconds_bucket{{{JOB}}}[{RATE}])))", "{{daemon}}")],
            unit="s", w=12, min_value=0))
        .with_panel(timeseries_panel(
            "Event-loop lag p99", "How late each daemon's watchdog tick ran: a busy or blocked event loop.",
            [query("histogram_quantile(0.99, sum by (daemon, le) "
                   f"(rate(algo_event_loop_lag_seconds_bucket{{{JOB}}}[{RATE}])))", "{{daemon}}")],
            unit="s", w=12, min_value=0))
    )
    return finish(board)
