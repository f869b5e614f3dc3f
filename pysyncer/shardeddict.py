"""A dict split into smaller dicts, for tables that grow to 100,000 keys or more on the
event loop.

Owns :class:`ShardedDict` only. A dict grows by allocating a table three times its size
and touching all of it in one step; at 100,000 keys that is ~10 MiB, at 1,000,000 ~40
MiB. Where the memory is cold (a virtual machine whose host has not backed it yet) each
page's first touch costs 13-32 us, so one growth can hold the loop 100-300 ms, and
tables keyed alike (services by id, by name, by key) grow on the same insert
(docs/capacity.md, "The event loop"). Split into ``SHARDS`` dicts by bits of the key's
hash above those a shard's own table uses, each growth is 1/64 of that, and the shards
of one table grow on different inserts. Must not import anything of pysyncer.

Imports: -.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from itertools import chain
from typing import TypeVar, overload

__all__ = ["SHARDS", "SHARD_BITS", "ShardedDict"]

SHARD_BITS = 6
SHARDS = 1 << SHARD_BITS
# The hash bits choosing a shard: above the first-probe bits of any shard's table up to
# 2^24 slots, so keys of one shard still spread over all of its table.
_SHIFT = 24
_MASK = SHARDS - 1

_K = TypeVar("_K")
_V = TypeVar("_V")
_T = TypeVar("_T")


class ShardedDict(MutableMapping[_K, _V]):
    """A mutable mapping over ``SHARDS`` dicts. Iteration goes shard by shard: insertion
    order holds within a shard only. Keys of hashes whose bits 24-29 are all equal (small
    ints) share one shard: use it for str, tuple and 64-bit hash keys."""

    __slots__ = ("_shards",)

    def __init__(self) -> None:
        self._shards: list[dict[_K, _V]] = [{} for _ in range(SHARDS)]

    def _shard(self, key: object) -> dict[_K, _V]:
        return self._shards[(hash(key) >> _SHIFT) & _MASK]

    def __getitem__(self, key: _K) -> _V:
        return self._shards[(hash(key) >> _SHIFT) & _MASK][key]

    def __setitem__(self, key: _K, value: _V) -> None:
        self._shards[(hash(key) >> _SHIFT) & _MASK][key] = value

    def __delitem__(self, key: _K) -> None:
        del self._shards[(hash(key) >> _SHIFT) & _MASK][key]

    def __contains__(self, key: object) -> bool:
        return key in self._shard(key)

    def __iter__(self) -> Iterator[_K]:
        return chain.from_iterable(self._shards)

    def __len__(self) -> int:
        return sum(map(len, self._shards))

    def __repr__(self) -> str:
        return f"<ShardedDict of {len(self)} keys>"

    @overload
    def get(self, key: _K, /) -> _V | None: ...
    @overload
    def get(self, key: _K, default: _V | _T, /) -> _V | _T: ...
    def get(self, key: _K, default: object = None, /) -> object:
        return self._shards[(hash(key) >> _SHIFT) & _MASK].get(key, default)

    def clear(self) -> None:
        for shard in self._shards:
            shard.clear()
