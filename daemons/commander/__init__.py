"""algo-commander: carries out the control plane's commands (docs/ARCHITECTURE.md, "Commander")."""
