"""Say a thing once per process: which path runs and why (an attention backend, a kernel fallback), not once per
model, call or batch."""

from __future__ import annotations

import logging

_said: set[tuple[str, str]] = set()


def say_once(logger: logging.Logger, message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` on ``logger`` at ``level`` the first time it is said in this process."""
    key = (logger.name, message)
    if key not in _said:
        _said.add(key)
        logger.log(level, message)


def forget() -> None:
    """Let every message be said again (tests)."""
    _said.clear()
