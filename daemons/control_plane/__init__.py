"""The strategy control plane: the registry of strategies and the queue of commands to them, in a database.

Shared by algoctl and the HTTP gateway: ``store.Store`` is the only way in, ``transitions`` the rules a
command obeys, ``seeding`` the bridge to fleet.toml. The schema changes only through the Alembic
migrations shipped in ``migrations/``.
"""
