"""Which search to run: exact MaxSim over every page, or the fast multi-stage index."""

from __future__ import annotations

from typing import Literal

#: Stores with at least this many pages use fast mode under ``search_mode="auto"``. Below it,
#: exact MaxSim over every page costs at most ~0.1-0.2 s per query on a 2-core CPU (about
#: 10,000 pages/s), needs no index to build or keep in memory, and the fast index would rerank
#: a large share of the pages anyway.
FAST_MODE_MIN_PAGES = 2_000

SearchMode = Literal["auto", "exact", "fast"]


def choose_search_mode(
    n_pages: int, search_mode: SearchMode = "auto", fast_min_pages: int = FAST_MODE_MIN_PAGES
) -> Literal["exact", "fast"]:
    """Resolve ``search_mode``: ``"auto"`` is exact below ``fast_min_pages`` pages, else fast.

    Example:
        >>> choose_search_mode(500), choose_search_mode(50_000), choose_search_mode(10, "fast")
        ('exact', 'fast', 'fast')
    """
    if search_mode not in ("auto", "exact", "fast"):
        raise ValueError(f"search_mode must be 'auto', 'exact' or 'fast', got {search_mode!r}")
    if search_mode == "auto":
        return "fast" if n_pages >= fast_min_pages else "exact"
    return search_mode
