"""The multi-host benchmark (mypy names it `multihost`: bench/ is no package)."""
