"""Observability as code for the algo fleet: dashboards, alert rules, Grafana and Prometheus provisioning.

`python -m grafana.generate` writes the generated files; see grafana/README.md.
"""
