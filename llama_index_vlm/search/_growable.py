"""A numpy array that grows along axis 0, for indexes built page batch by page batch."""

from __future__ import annotations

import numpy as np


class GrowableArray:
    """A numpy array that grows along axis 0 with amortised O(1) appends."""

    def __init__(self, row_shape: tuple[int, ...], dtype: np.dtype | type):
        self._buffer = np.empty((0, *row_shape), dtype=dtype)
        self.size = 0

    def append(self, rows: np.ndarray) -> None:
        needed = self.size + rows.shape[0]
        if needed > self._buffer.shape[0]:
            # Grow by a quarter: amortised O(1) appends, at most 25% unused capacity.
            capacity = max(needed, int(self._buffer.shape[0] * 1.25) + 16)
            grown = np.empty((capacity, *self._buffer.shape[1:]), dtype=self._buffer.dtype)
            grown[: self.size] = self._buffer[: self.size]
            self._buffer = grown
        self._buffer[self.size : needed] = rows
        self.size = needed

    @property
    def values(self) -> np.ndarray:
        return self._buffer[: self.size]

    @property
    def nbytes(self) -> int:
        return self._buffer.nbytes


def ranges(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without a Python loop."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total) - starts
