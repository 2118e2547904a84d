"""Portfolios: many accounts or sub-books following the fleet's strategies, each with its own capital and
limits, decided on together with numpy. A library, not yet wired into algo-risk (docs/ARCHITECTURE.md,
"Portfolios" and "Planned (not built)")."""
