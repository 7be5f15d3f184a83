"""Structurally different synthetic corpora of page multi-vectors, for search benchmarks and tests.

A first stage tuned to one generator can look perfect on it and fail on the next (issue 15:
recall@10 0.990 on ours, 0.83 on an independently built corpus). Each family here varies one
thing that matters to an approximate first stage:

- ``blank-light`` / ``blank-heavy``: the share of patches near a few corpus-wide "blank"
  directions (margins, white space): 0.25-0.35 and 0.75-0.85 of each page.
- ``codebook``: page content drawn from a small codebook of 256 "words" in 8 topics whose
  popularity follows Zipf's law, with little page-specific signal: many pages share most of
  their content, so exact ranks 2-10 are near-ties.
- ``near-tie-queries``: queries whose tokens are mostly the corpus's most common words plus
  heavy noise; only a few tokens come from the target page's own content.
- ``colqwen2``: 700-770 vectors per page (ColQwen2's dynamic resolution), image-like regions
  whose neighbouring patches are correlated (a random walk), fewer blank patches.
- ``pooled-x3``: ``codebook`` pages Ward-pooled to a third at ingest, as
  ``ingest(..., pool_factor=3)`` stores them (no near-duplicate patches left).
- ``tiny-encoder`` (:class:`EncodedPages`): real vectors of rendered pages from the tiny
  random-weight ColPali checkpoint (23 vectors per page, a very different geometry).
- ``duplicated``: every ``codebook`` page stored twice, as a folder ingested twice or a cover
  page repeated in every report leave them; a query's top 10 are twins with equal scores.

Every family is deterministic: page ``i`` is the same however and whenever it is generated, so
a large run can regenerate pages instead of holding them. Queries aim at a *target* page; a
good search ranks it first. Pages are float16, as the store keeps them; queries float32, unit
rows, as ColPali emits them.

Usage::

    corpus = family("codebook", dim=128, n_patches=1030)
    pages = corpus.pages(0, 1000)        # list of (n_patches_i, dim) float16 arrays
    query = corpus.query(target=17)      # (n_query_tokens, dim) float32
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

FAMILIES = (
    "blank-light",
    "blank-heavy",
    "codebook",
    "near-tie-queries",
    "colqwen2",
    "pooled-x3",
    "tiny-encoder",
    "duplicated",
)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@dataclass(frozen=True)
class SyntheticPages:
    """A parametrised generator of ColPali-like pages and of queries aimed at one page.

    A page has ``n_patches`` unit vectors (fixed, or drawn from a range): a ``blank_share`` of
    them near one of ``n_blank`` corpus-wide directions, the rest near "word" directions of a
    vocabulary. Each page draws ``topics_per_page`` topics (popularity ~ Zipf with exponent
    ``topic_zipf``; 0 is uniform), ``words_per_page`` words mostly from those topics, and its
    content patches from its words (so words repeat on a page, as text does), plus
    ``page_weight`` of a page-specific direction and ``content_noise``. ``region_share`` of the
    content patches form image-like regions: random walks of neighbouring patches.

    A query has ``prompt_tokens`` generic tokens (as ColPali's prompt), ``content_tokens``
    tokens cut from the target page's content patches, and ``common_tokens`` tokens near the
    corpus's most popular words (near-ties: many pages match them about equally); every token
    gets ``query_noise`` (relative norm) of noise.
    """

    name: str = "synthetic"
    seed: int = 0
    dim: int = 128
    n_patches: tuple[int, int] = (1030, 1030)
    blank_share: tuple[float, float] = (0.6, 0.85)
    n_blank: int = 4
    vocab_size: int = 4096
    n_topics: int = 128
    words_per_topic: int = 64
    topic_zipf: float = 0.0
    topics_per_page: int = 2
    words_per_page: int = 40
    page_weight: float = 0.35
    content_noise: float = 0.5
    region_share: float = 0.0
    prompt_tokens: int = 4
    content_tokens: int = 16
    common_tokens: int = 0
    query_noise: float = 0.8
    _shared: dict = field(default_factory=dict, compare=False, repr=False)

    # -- shared directions ----------------------------------------------------------------

    def _directions(self) -> dict[str, np.ndarray]:
        if not self._shared:
            rng = np.random.default_rng([self.seed, 0])
            self._shared["blank"] = _unit(rng.standard_normal((self.n_blank, self.dim)))
            self._shared["vocab"] = _unit(rng.standard_normal((self.vocab_size, self.dim)))
            self._shared["topic_words"] = rng.integers(
                self.vocab_size, size=(self.n_topics, self.words_per_topic)
            )
            popularity = np.arange(1, self.n_topics + 1, dtype=np.float64) ** -self.topic_zipf
            self._shared["topic_p"] = popularity / popularity.sum()
            self._shared["prompt"] = _unit(rng.standard_normal((self.prompt_tokens, self.dim)))
            # The most common words: the first words of the most popular topics.
            self._shared["common"] = self._shared["topic_words"][:4, :8].reshape(-1)
        return self._shared

    # -- pages ----------------------------------------------------------------------------

    def _page(self, index: int) -> tuple[np.ndarray, int]:
        """Page ``index`` as float32 unit rows (content first) and its number of content rows."""
        shared = self._directions()
        rng = np.random.default_rng([self.seed, 1, index])
        dim = self.dim
        n_patches = int(rng.integers(self.n_patches[0], self.n_patches[1] + 1))
        share = rng.uniform(*self.blank_share)
        n_content = max(1, min(n_patches - 1, round(n_patches * (1 - share))))
        topics = rng.choice(self.n_topics, size=self.topics_per_page, p=shared["topic_p"])
        topic_words = shared["topic_words"][topics].reshape(-1)
        n_own = max(1, self.words_per_page // 5)
        words = np.concatenate(
            [
                rng.choice(topic_words, size=self.words_per_page - n_own),
                rng.integers(self.vocab_size, size=n_own),
            ]
        )
        page_dir = _unit(rng.standard_normal(dim, dtype=np.float32))
        noise = rng.standard_normal((n_patches, dim), dtype=np.float32) / np.sqrt(dim)
        content = (
            shared["vocab"][rng.choice(words, size=n_content)]
            + self.page_weight * page_dir
            + self.content_noise * noise[:n_content]
        )
        n_region = int(n_content * self.region_share)
        if n_region:
            # Image-like regions: each patch a small step from its neighbour.
            steps = 0.25 * rng.standard_normal((n_region, dim)) / np.sqrt(dim)
            starts = rng.choice(n_content, size=max(1, n_region // 40))
            walk = np.cumsum(steps, axis=0)
            content[:n_region] = _unit(content[starts][np.arange(n_region) % starts.size]) + walk
        blank_ids = rng.choice(
            self.n_blank, size=n_patches - n_content, p=_blank_weights(rng, self)
        )
        blank = shared["blank"][blank_ids] + 0.1 * page_dir + 0.3 * noise[n_content:]
        return _unit(np.concatenate([content, blank])).astype(np.float32), n_content

    def page(self, index: int) -> np.ndarray:
        """Page ``index`` as ``(n_patches_i, dim)`` float16 unit rows."""
        return self._page(index)[0].astype(np.float16)

    def pages(self, start: int, stop: int) -> list[np.ndarray]:
        """Pages ``start .. stop-1``."""
        return [self.page(index) for index in range(start, stop)]

    # -- queries --------------------------------------------------------------------------

    def query(self, target: int) -> np.ndarray:
        """A ``(n_tokens, dim)`` float32 query aimed at page ``target``."""
        shared = self._directions()
        rng = np.random.default_rng([self.seed, 2, target])
        page, n_content = self._page(target)
        page = page.astype(np.float16).astype(np.float32)  # the page as stored
        dim = self.dim
        parts = []
        if self.prompt_tokens:
            parts.append(
                shared["prompt"] + 0.2 * rng.standard_normal(shared["prompt"].shape) / dim**0.5
            )
        if self.content_tokens:
            chosen = rng.choice(
                n_content, size=self.content_tokens, replace=n_content < self.content_tokens
            )
            parts.append(
                page[chosen] + self.query_noise * _unit(rng.standard_normal((chosen.size, dim)))
            )
        if self.common_tokens:
            words = rng.choice(shared["common"], size=self.common_tokens)
            noise = self.query_noise * _unit(rng.standard_normal((words.size, dim)))
            parts.append(shared["vocab"][words] + noise)
        return _unit(np.concatenate(parts)).astype(np.float32)


def _blank_weights(rng: np.random.Generator, corpus: SyntheticPages) -> np.ndarray:
    weights = rng.random(corpus.n_blank) + 1e-3
    return weights / weights.sum()


class _DerivedPages:
    """A family made from another's pages (``base``): its ``page`` and ``query`` say how."""

    base: SyntheticPages

    @property
    def dim(self) -> int:
        return self.base.dim

    def pages(self, start: int, stop: int) -> list[np.ndarray]:
        return [self.page(index) for index in range(start, stop)]


@dataclass(frozen=True)
class PooledPages(_DerivedPages):
    """Another family's pages Ward-pooled at ingest (``hierarchical_pool``), queries unchanged."""

    base: SyntheticPages
    pool_factor: float = 3
    name: str = "pooled-x3"

    def page(self, index: int) -> np.ndarray:
        from llama_index_vlm.search import hierarchical_pool

        return hierarchical_pool(self.base.page(index), self.pool_factor)

    def query(self, target: int) -> np.ndarray:
        return self.base.query(target)


@dataclass(frozen=True)
class DuplicatedPages(_DerivedPages):
    """Another family's pages, each stored ``copies`` times in a row (page ``i`` is the base's
    page ``i // copies``); a query aims at all copies of its target."""

    base: SyntheticPages
    copies: int = 2
    name: str = "duplicated"

    def page(self, index: int) -> np.ndarray:
        return self.base.page(index // self.copies)

    def query(self, target: int) -> np.ndarray:
        return self.base.query(target // self.copies)


class EncodedPages:
    """Real vectors: rendered text pages embedded by the tiny ColPali checkpoint.

    The checkpoint (``make_tiny_checkpoint("colpali", ...)``) has random weights, so a text
    query means nothing to it; a query is instead a re-rendered copy of the target page
    (shifted by a pixel, other JPEG-like noise) embedded as an image, keeping
    ``query_tokens`` of its vectors: a page-like query whose planted page is known.
    Pages are embedded in batches and cached in memory.
    """

    name = "tiny-encoder"

    def __init__(self, checkpoint_dir, seed: int = 0, query_tokens: int = 12):
        from llama_index_vlm.encoder import ColPaliEncoder
        from llama_index_vlm.testing import make_tiny_checkpoint

        path = make_tiny_checkpoint("colpali", checkpoint_dir)
        self.encoder = ColPaliEncoder.from_pretrained(path, show_progress=False)
        self.seed, self.query_tokens = seed, query_tokens
        self.dim = self.encoder.embedding_dim
        self._cache: dict[int, np.ndarray] = {}

    def _image(self, index: int, shift: int = 0):
        from PIL import Image

        rng = np.random.default_rng([self.seed, 3, index])
        height, width = 128, 96
        pixels = np.full((height + 2, width + 2, 3), 255, dtype=np.uint8)
        for top in range(8, height - 8, 9):
            if rng.random() < 0.2:
                continue
            left, length = int(rng.integers(4, 20)), int(rng.integers(20, width - 24))
            pixels[top : top + 4, left : left + length] = rng.integers(0, 160, size=3)
        if rng.random() < 0.3:  # a figure
            top, left = int(rng.integers(10, 70)), int(rng.integers(5, 40))
            pixels[top : top + 40, left : left + 50] = rng.integers(0, 255, size=(40, 50, 3))
        crop = pixels[shift : shift + height, shift : shift + width]
        return Image.fromarray(np.ascontiguousarray(crop))

    def pages(self, start: int, stop: int) -> list[np.ndarray]:
        missing = [index for index in range(start, stop) if index not in self._cache]
        for first in range(0, len(missing), 64):
            chunk = missing[first : first + 64]
            vectors = self.encoder.embed_images(
                [self._image(i) for i in chunk], show_progress=False
            )
            for index, page in zip(chunk, vectors, strict=True):
                self._cache[index] = page.astype(np.float16)
        return [self._cache[index] for index in range(start, stop)]

    def page(self, index: int) -> np.ndarray:
        return self.pages(index, index + 1)[0]

    def query(self, target: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 4, target])
        (vectors,) = self.encoder.embed_images([self._image(target, shift=1)], show_progress=False)
        keep = rng.choice(
            vectors.shape[0], size=min(self.query_tokens, vectors.shape[0]), replace=False
        )
        noisy = vectors[np.sort(keep)] + 0.3 * _unit(rng.standard_normal((keep.size, self.dim)))
        return _unit(noisy).astype(np.float32)


def family(
    name: str,
    *,
    dim: int = 128,
    n_patches: int | Sequence[int] = 1030,
    seed: int = 0,
    checkpoint_dir=None,
):
    """The corpus family ``name`` (one of :data:`FAMILIES`), sized by ``dim`` and ``n_patches``.

    ``n_patches`` is the page length of the fixed-length families (``colqwen2`` scales its
    700-770 range by ``n_patches / 1030``); small values make test-sized corpora.
    ``tiny-encoder`` needs ``checkpoint_dir`` (where the tiny checkpoint is built) and ignores
    the sizes.
    """
    length = n_patches if isinstance(n_patches, int) else None
    fixed = (length, length) if length else tuple(n_patches)
    base = SyntheticPages(seed=seed, dim=dim, n_patches=fixed)
    if name == "blank-light":
        return replace(base, name=name, blank_share=(0.25, 0.35))
    if name == "blank-heavy":
        return replace(base, name=name, blank_share=(0.75, 0.85))
    if name == "codebook":
        return _codebook(base)
    if name == "near-tie-queries":
        return replace(
            base,
            name=name,
            blank_share=(0.5, 0.7),
            vocab_size=1024,
            n_topics=32,
            topic_zipf=1.0,
            content_tokens=6,
            common_tokens=10,
            query_noise=1.0,
        )
    if name == "colqwen2":
        scale = (length or 1030) / 1030
        return replace(
            base,
            name=name,
            n_patches=(round(700 * scale), round(770 * scale)),
            blank_share=(0.3, 0.6),
            region_share=0.5,
            content_tokens=12,
            page_weight=0.25,
        )
    if name == "pooled-x3":
        return PooledPages(_codebook(base), 3)
    if name == "duplicated":
        return DuplicatedPages(_codebook(base), 2)
    if name == "tiny-encoder":
        if checkpoint_dir is None:
            raise ValueError("the tiny-encoder family needs checkpoint_dir")
        return EncodedPages(checkpoint_dir, seed=seed)
    raise ValueError(f"unknown corpus family {name!r}; one of {', '.join(FAMILIES)}")


def _codebook(base: SyntheticPages) -> SyntheticPages:
    return replace(
        base,
        name="codebook",
        blank_share=(0.55, 0.75),
        vocab_size=256,
        n_topics=8,
        words_per_topic=48,
        topic_zipf=1.2,
        words_per_page=60,
        page_weight=0.15,
        content_noise=0.4,
    )
