"""algo-fleet: systemd-supervised trading daemons talking over a Unix-socket event bus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("algo-fleet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
