"""Portfolios: many accounts or sub-books following the fleet's strategies, each with its own capital and
limits, decided on together with numpy. A library: algo-risk runs it in the order path
(daemons/risk/portfolios.py; docs/ARCHITECTURE.md, "Portfolios")."""
