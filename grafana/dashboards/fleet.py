"""Fleet overview: is everything up, healthy and trading; P&L, positions, market data and the bus."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard

from .common import JOB, RATE, base, finish, query, stat_panel, timeseries_panel

UID = "algo-fleet"

UP_DOWN = {"0": ("DOWN", "red"), "1": ("UP", "green")}
HEALTHY = {"0": ("UNHEALTHY", "red"), "1": ("OK", "green")}


def build() -> dict[str, Any]:
    board = (
        base("Algo fleet: overview", UID, "Every daemon of the fleet on one screen: up, restarts, health, kill "
             "switch, P&L by engine, positions, tick age and the bus. Alerts: grafana/alerts/algo.rules.yml.")
        .with_row(dashboard.Row("Daemons"))
        .with_panel(stat_panel(
            "Up", "Whether Prometheus reaches each daemon's /metrics (DaemonDown after 1 minute down).",
            [query(f"up{{{JOB}}}", "{{daemon}}", instant=True)],
            w=24, h=4, mappings=UP_DOWN, thresholds=((None, "red"), (1, "green"))))
        .with_panel(timeseries_panel(
            "Restarts in the last hour", "Changes of each process's start time over the last hour "
            "(DaemonRestarted). Planned restarts count too.",
            [query(f"changes(algo_process_start_time_seconds{{{JOB}}}[1h])", "{{daemon}}")],
            w=8, min_value=0, thresholds=((None, "green"), (1, "orange"))))
        .with_panel(stat_panel(
            "Health check", "1 while the daemon's health check passes and it feeds the systemd watchdog "
            "(WatchdogUnhealthy).",
            [query(f"algo_daemon_healthy{{{JOB}}}", "{{daemon}}", instant=True)],
            w=10, h=8, mappings=HEALTHY, thresholds=((None, "red"), (1, "green"))))
        .with_panel(stat_panel(
            "Kill switch", "Engaged: risk refuses every new entry; exits still go out (KillSwitchEngaged).",
            [query(f"algo_risk_kill_switch{{{JOB}}}", instant=True)],
            w=6, h=8, mappings={"0": ("off", "green"), "1": ("ENGAGED", "red")},
            thresholds=((None, "green"), (1, "red"))))
        .with_panel(stat_panel(
            "Heartbeats", "Each daemon's health.heartbeat as algo-heartbeat sees it, by unit and host: SILENT "
            "after silent_after_sec without one, or none since algo-heartbeat started (DaemonSilent).",
            [query(f"algo_heartbeat_silent{{{JOB}}}", "{{unit}} {{host}}", instant=True)],
            w=18, h=4, mappings={"0": ("alive", "green"), "1": ("SILENT", "red")},
            thresholds=((None, "green"), (1, "red"))))
        .with_panel(stat_panel(
            "Hosts", "Each host algo-heartbeat watches: SILENT while none of its daemons' heartbeats arrive (down, "
            "or cut off: a bridge or Redis; FleetHostSilent).",
            [query(f"algo_heartbeat_host_silent{{{JOB}}}", "{{host}}", instant=True)],
            w=6, h=4, mappings={"0": ("up", "green"), "1": ("SILENT", "red")},
            thresholds=((None, "green"), (1, "red"))))
        .with_panel(stat_panel(
            "Config file", "REFUSED: the daemon refused /etc/algo/fleet.toml at its last reload and runs the "
            "config it had; its next start would exit 78 (ConfigReloadRefused).",
            [query(f"algo_config_reload_refused{{{JOB}}}", "{{daemon}}", instant=True)],
            w=24, h=4, mappings={"0": ("in force", "green"), "1": ("REFUSED", "orange")},
            thresholds=((None, "green"), (1, "orange"))))
        .with_row(dashboard.Row("Trading"))
        .with_panel(timeseries_panel(
            "P&L by engine", "Realised + unrealised P&L today per engine, from risk's book.",
            [query(f"sum by (engine) (algo_risk_pnl_rupees{{{JOB}}})", "{{engine}}"),
             query(f"sum(algo_risk_pnl_rupees{{{JOB}}})", "fleet")],
            unit="currencyINR", w=12, thresholds=((None, "red"), (0, "green"))))
        .with_panel(timeseries_panel(
            "Loss-limit headroom", "Share of each daily loss limit still available (LossLimitNear under 20%, "
            "LossLimitBreached at 0).",
            [query(f"algo_risk_loss_limit_distance_rupees{{{JOB}}} / algo_risk_loss_limit_rupees{{{JOB}}}",
                   "{{engine}}")],
            unit="percentunit", w=6, thresholds=((None, "red"), (0.2, "green"))))
        .with_panel(timeseries_panel(
            "Open positions", "Symbols with an open position: the fleet (risk's book) and each engine.",
            [query(f"algo_risk_open_positions{{{JOB}}}", "fleet"),
             query(f"sum by (daemon) (algo_engine_open_positions{{{JOB}}})", "{{daemon}}")],
            w=6, min_value=0))
        .with_row(dashboard.Row("Market data and bus"))
        .with_panel(timeseries_panel(
            "Tick age", "Seconds since the feed published its last tick; StaleTicks fires over 30 s while "
            "the session is open. The session line sits at 30 while the session is open, at 0 after the close.",
            [query(f"algo_marketdata_tick_age_seconds{{{JOB}}}", "tick age"),
             query(f"algo_marketdata_session_open{{{JOB}}} * 30", "session open")],
            unit="s", w=8, min_value=0, thresholds=((None, "green"), (30, "red"))))
        .with_panel(timeseries_panel(
            "Bus messages/s", "Events published to the broker and deliveries to subscribers.",
            [query(f"sum(rate(algo_bus_published_total{{{JOB}}}[{RATE}]))", "published"),
             query(f"sum(rate(algo_bus_delivered_total{{{JOB}}}[{RATE}]))", "delivered")],
            unit="ops", w=8, min_value=0))
        .with_panel(timeseries_panel(
            "Bus drops/s by reason", "conflated is normal back-pressure on market data; slow_consumer and "
            "disconnected mean a subscriber lost events (BusDrops).",
            [query(f"sum by (reason) (rate(algo_bus_dropped_total{{{JOB}}}[{RATE}]))", "{{reason}}")],
            unit="ops", w=8, min_value=0))
    )
    return finish(board)
