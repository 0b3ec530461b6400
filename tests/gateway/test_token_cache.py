"""The caching_sha2 fast-path cache for tokens: bounded, never past exp, scramble-checked."""

from __future__ import annotations

import time

from hoopy.gateway import tokenauth
from hoopy.gateway.tokenauth import TokenCache
from hoopy.identity.principal import Principal
from hoopy.wire.handshake import caching_sha2_scramble

NONCE = b"0123456789abcdefghij"


def principal(name: str, ttl: float = 60) -> Principal:
    return Principal(name, "token", expires_at=time.time() + ttl)


def test_match_needs_the_right_scramble_user_and_an_unexpired_token() -> None:
    cache = TokenCache()
    cache.add("agent", b"tok-1", principal("a"))
    cache.add("old", b"tok-2", principal("b", ttl=-1))
    matched = cache.match("agent", caching_sha2_scramble(b"tok-1", NONCE), NONCE)
    assert matched is not None and matched.name == "a"
    assert cache.match("agent", caching_sha2_scramble(b"tok-x", NONCE), NONCE) is None
    assert cache.match("other", caching_sha2_scramble(b"tok-1", NONCE), NONCE) is None
    assert cache.match("old", caching_sha2_scramble(b"tok-2", NONCE), NONCE) is None


def test_size_stays_bounded_and_exact() -> None:
    cache = TokenCache()
    for i in range(tokenauth.TOKEN_CACHE_PER_USER + 5):
        cache.add("same-user", b"t%d" % i, principal("s", ttl=-1 if i % 2 else 60))
    assert len(cache) <= tokenauth.TOKEN_CACHE_PER_USER
    cache.add("same-user", b"t0", principal("s"))  # re-adding a token replaces its entry
    assert len(cache) == sum(len(v) for v in cache._entries.values())
    for i in range(tokenauth.TOKEN_CACHE_SIZE + 10):
        cache.add(f"user-{i}", b"t", principal("u"))
    assert len(cache) <= tokenauth.TOKEN_CACHE_SIZE
    assert len(cache) == sum(len(v) for v in cache._entries.values())


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_entries_end_at_exp_or_the_cache_bound_whichever_is_sooner() -> None:
    clock = Clock(1_800_000_000.0)
    cache = TokenCache(clock=clock)
    scramble = caching_sha2_scramble(b"tok", NONCE)
    # exp far away (the verifier bounds lifetimes too; the cache does not rely on it).
    cache.add("agent", b"tok", Principal("a", "token", expires_at=1e300))
    cache.add("short", b"tok", Principal("s", "token", expires_at=clock.now + 10))
    clock.now += 9.5
    assert cache.match("short", scramble, NONCE) is not None
    clock.now += 0.5  # now == exp: expired, as at login and before every command
    assert cache.match("short", scramble, NONCE) is None
    assert cache.match("agent", scramble, NONCE) is not None
    clock.now = 1_800_000_000.0 + tokenauth.TOKEN_CACHE_MAX_AGE
    assert cache.match("agent", scramble, NONCE) is None
    # A fresh full login starts a fresh entry.
    cache.add("agent", b"tok", Principal("a", "token", expires_at=1e300))
    assert cache.match("agent", scramble, NONCE) is not None
