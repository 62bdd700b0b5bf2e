"""Duplicate detection for item keys in flat memory: 12 bytes a key, whatever the keys' length.

Keys are reduced to their 64-bit string hashes, kept in an open-addressing table (``array('Q')``) next
to the line each was first seen on (``array('I')``). A million keys take about 24 MB, where a ``set``
of the strings would take several times that. Two different keys share a hash with probability about
n²/2⁶⁵ (3·10⁻⁸ for a million keys).
"""

from __future__ import annotations

from array import array

_EMPTY = 0
_MASK64 = (1 << 64) - 1


class KeyIndex:
    def __init__(self, capacity: int = 1024) -> None:
        size = 1
        while size < capacity * 2:
            size <<= 1
        self._slots = array("Q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        self._mask = size - 1
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, key: str, line: int) -> int | None:
        """Remember ``key`` as seen on ``line``; return the earlier line if it was seen before."""
        h = (hash(key) & _MASK64) or 1  # 0 marks an empty slot
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            cur = slots[i]
            if cur == _EMPTY:
                break
            if cur == h:
                return int(self._lines[i])
            i = (i + 1) & mask
        slots[i] = h
        self._lines[i] = line
        self._n += 1
        if self._n * 2 > mask:
            self._grow()
        return None

    def _grow(self) -> None:
        old_slots, old_lines = self._slots, self._lines
        size = (self._mask + 1) * 2
        self._slots = array("Q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        self._mask = mask = size - 1
        slots, lines = self._slots, self._lines
        for h, line in zip(old_slots, old_lines, strict=True):
            if h != _EMPTY:
                i = h & mask
                while slots[i] != _EMPTY:
                    i = (i + 1) & mask
                slots[i] = h
                lines[i] = line
