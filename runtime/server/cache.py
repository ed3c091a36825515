"""A response cache for deterministic requests, bounded in bytes (LRU).

ganport's requests are deterministic: the same model, seed, labels and options give the same
image on every backend. So a seeded Generate, a seeded RenderWord and a Decode of the same
latents can be answered from memory. Keys are ``(model name, model generation, method, request
bytes)``: the generation changes whenever the model is (re)loaded, and :meth:`ResponseCache.drop_model`
frees a reloaded or unloaded model's entries at once. Unseeded requests are never cached (the
servicer does not ask). Entries are the response messages themselves; their size is their
serialized size.

Thread-safety: used from the server's event loop only.
"""

from __future__ import annotations

import collections
from typing import Any, Hashable, Optional

MIB = 1024 * 1024


class ResponseCache:
    """LRU cache of response messages, bounded by their serialized size.

    Args:
        max_bytes: capacity in bytes; 0 disables the cache (every lookup misses, nothing is kept).
        metrics: optional :class:`~ganport.runtime.server.metrics.Metrics` (hit/miss counters,
            size gauge).

    Example:
        >>> cache = ResponseCache(1024)
        >>> cache.put(("m", 1, "Generate", b"req"), b"x" * 10, size=10)
        >>> cache.get(("m", 1, "Generate", b"req"))
        b'xxxxxxxxxx'
    """

    def __init__(self, max_bytes: int, metrics=None):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._metrics = metrics
        self._entries: collections.OrderedDict[Hashable, tuple[Any, int]] = collections.OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Optional[Any]:
        """The cached response for ``key`` (marked most recently used), or None."""
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        model = str(key[0]) if isinstance(key, tuple) and key else ""
        if entry is None:
            self.misses += 1
            if self._metrics is not None:
                self._metrics.observe_cache(model, hit=False)
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        if self._metrics is not None:
            self._metrics.observe_cache(model, hit=True)
        return entry[0]

    def put(self, key: Hashable, response: Any, size: Optional[int] = None) -> None:
        """Keep ``response`` (size: its serialized bytes); evicts least recently used entries.

        A response bigger than the whole cache is not kept.
        """
        if not self.enabled:
            return
        size = int(response.ByteSize() if size is None else size)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (response, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
        self._publish()

    def drop_model(self, model: str) -> None:
        """Forget every entry of ``model`` (it was reloaded or unloaded)."""
        stale = [key for key in self._entries if isinstance(key, tuple) and key and key[0] == model]
        for key in stale:
            self.bytes -= self._entries.pop(key)[1]
        if stale:
            self._publish()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.set_cache_bytes(self.bytes)
