"""A per-client token-bucket rate limit for the /think server.

Each client has a bucket of ``burst`` tokens that refills at ``rate_per_s`` tokens a
second; a request takes one token or is refused with the wait until the next token. The
standard library has no rate limiter, and a bucket is a few lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets keyed by client; thread-safe.

    ``clock`` (seconds, monotonic) is injectable so that tests can move time. Buckets that
    have refilled completely hold no information; they are dropped once more than
    ``max_clients`` are kept, so that many one-off clients cannot grow the table forever.
    """

    def __init__(self, rate_per_s: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"rate_per_s must be > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)
        self._lock = threading.Lock()

    def _tokens(self, client: str, now: float) -> float:
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate_per_s)

    def acquire(self, client: str) -> float:
        """Take a token for ``client``: 0.0 when granted, else the seconds until one is free."""
        with self._lock:
            now = self.clock()
            tokens = self._tokens(client, now)
            granted = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if granted else tokens, now)
            if len(self._buckets) > self.max_clients:
                self._buckets = {key: state for key, state in self._buckets.items()
                                 if self._tokens(key, now) < self.burst}
            return 0.0 if granted else (1.0 - tokens) / self.rate_per_s
