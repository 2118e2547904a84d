"""algo-premarket: the oneshot whose checks must pass before any engine starts."""
