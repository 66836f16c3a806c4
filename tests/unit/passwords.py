"""argon2 at its lowest cost for the unit tests' local passwords (the autouse ``cheap_argon2``
fixture, tests/unit/conftest.py), and what it stands in for."""

from __future__ import annotations

from typing import NamedTuple

from argon2 import PasswordHasher

# Hashing a password at the production cost (64 MiB, 3 passes, 4 lanes) takes a quarter of a
# second on a busy CI core, and every portal test adds three users and signs one in.
CHEAP_ARGON2 = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
CHEAP_DUMMY_HASH = CHEAP_ARGON2.hash("mammogate: no such user")


class ProductionArgon2(NamedTuple):
    """What ``mammogate.web.auth.users`` hashes with outside the tests."""

    hasher: PasswordHasher
    dummy_hash: str  # verified against for an unknown user, so both failures cost the same
