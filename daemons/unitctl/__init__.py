"""algo-unitctl: the one privileged piece of the control plane, a root helper that starts, stops and
restarts ``algo-strategy@NAME.service`` for the strategies fleet.toml runs in their own process, and
nothing else (docs/ARCHITECTURE.md, "Starting and stopping own-process strategies")."""
