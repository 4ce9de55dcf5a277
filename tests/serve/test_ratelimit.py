"""The per-client token bucket."""

from __future__ import annotations

import pytest

from so8t_kedro.serve.ratelimit import RateLimiter


def test_burst_then_refill_at_the_rate(clock):
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)  # one token takes 1 / 2 s
    clock.now += 0.25
    assert limiter.acquire("a") == pytest.approx(0.25)  # half a token is not enough
    clock.now += 0.25
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(0.5)


def test_a_bucket_never_holds_more_than_burst(clock):
    limiter = RateLimiter(1.0, 2, clock=clock)
    clock.now += 3600
    assert [limiter.acquire("a") > 0 for _ in range(3)] == [False, False, True]


def test_clients_have_their_own_buckets(clock):
    limiter = RateLimiter(1.0, 1, clock=clock)
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_refilled_buckets_are_dropped_past_max_clients(clock):
    limiter = RateLimiter(1.0, 1, clock=clock, max_clients=2)
    limiter.acquire("a")
    limiter.acquire("b")
    clock.now += 10  # a and b are full again
    limiter.acquire("c")
    assert set(limiter._buckets) == {"c"}
    # A dropped bucket comes back full: forgetting it changed nothing.
    assert limiter.acquire("a") == 0.0


def test_invalid_arguments():
    with pytest.raises(ValueError):
        RateLimiter(0, 1)
    with pytest.raises(ValueError):
        RateLimiter(1.0, 0)
