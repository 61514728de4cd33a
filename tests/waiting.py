"""Waiting on real processes in tests."""

from __future__ import annotations

import time


def wait_until(condition, timeout: float = 240.0, interval: float = 0.05, what: str = "condition"):
    """Poll `condition()` until it returns something truthy (and return that); fail after `timeout` s.

    The timeout only guards against a hang: tests never assert on how long things take."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
