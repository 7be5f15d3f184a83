"""Exact MaxSim with the pages kept on a torch device (a GPU), scored there in float32.

On a CPU, exact mode screens every page with float16 products and rescores the few that can
rank (:mod:`~llama_index_vlm.search.exact_search`), because widening float16 pages costs as
much as the product. A GPU has the bandwidth to widen every page: :class:`DevicePageMatrix`
keeps the pages' float16 vectors in device memory (half the memory of float32; 100,000
ColPali pages of 1,030 x 128 vectors take 25 GiB), and each query widens them block by block
to float32 and scores every page with one matrix product per block. The scores are float32
MaxSim, as :func:`~llama_index_vlm.search.maxsim.maxsim_scores` computes them on the CPU (the
last bits may differ: the device sums in another order), unless torch was told to multiply
float32 in TF32 (``torch.backends.cuda.matmul.allow_tf32``, off by default).

Only the ``(n_pages,)`` scores come back to the host; the top ``k`` is chosen there with
:func:`~llama_index_vlm.search.maxsim.top_k`, so ties go to the lower position on every device.

Example:
    >>> import numpy as np
    >>> pages = PageVectorMatrix.from_pages([np.eye(4, dtype=np.float16)[[i]] for i in range(4)])
    >>> on_device = DevicePageMatrix(pages, "cpu")  # "cuda" on a GPU
    >>> positions, scores = on_device.top_k(np.eye(4, dtype=np.float32)[[2, 3]], 2)
    >>> positions.tolist(), scores.tolist()
    ([2, 3], [1.0, 1.0])
"""

from __future__ import annotations

import numpy as np
import torch

from llama_index_vlm.errors import UnsupportedDeviceError
from llama_index_vlm.search.maxsim import PageVectorMatrix, page_blocks, tensor_view, top_k

#: Page vectors widened and multiplied at a time: 1 GiB of float32 rows on the device, and the
#: ``(rows, n_query_tokens)`` similarities (160 MiB for 20 tokens).
DEFAULT_DEVICE_BLOCK_ROWS = 1 << 21


def resolve_search_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that this process can search on.

    Raises:
        UnsupportedDeviceError: a CUDA or MPS device that torch cannot use here, or a name
            torch does not know.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UnsupportedDeviceError(f"unknown search device {device!r}: {error}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UnsupportedDeviceError(
                f"search device {device!r} needs CUDA, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}); leave search_device unset to search on the CPU"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UnsupportedDeviceError(
                f"search device {device!r}: this machine has {torch.cuda.device_count()} "
                "CUDA device(s)"
            )
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UnsupportedDeviceError(f"search device {device!r}: MPS is not available here")
    return resolved


class DevicePageMatrix:
    """Packed page vectors resident on a torch device, scored there by exact MaxSim.

    Args:
        pages: the pages, packed (float16 or float32; kept in their dtype on the device).
        device: where to keep and score them (see :func:`resolve_search_device`).
        block_rows: page vectors widened and multiplied at a time (whole pages; at least
            one page per block); bounds the device memory a query needs.

    Raises:
        UnsupportedDeviceError: the device cannot be used, or the pages do not fit in its
            memory.
    """

    def __init__(
        self,
        pages: PageVectorMatrix,
        device: str | torch.device,
        block_rows: int = DEFAULT_DEVICE_BLOCK_ROWS,
    ) -> None:
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        self.device = resolve_search_device(device)
        self.n_pages = pages.n_pages
        self.dim = pages.dim
        try:
            self.vectors = tensor_view(pages.vectors).to(self.device)
        except torch.OutOfMemoryError as error:
            raise UnsupportedDeviceError(
                f"{self.n_pages:,} pages ({pages.vectors.nbytes / 2**30:.1f} GiB of vectors) do "
                f"not fit in the memory of {self.device}; search them on the CPU "
                "(search_mode='fast' keeps only compact codes in memory)"
            ) from error
        lengths = np.diff(pages.offsets)
        self._blocks = []  # (first page, last page, first row, last row, equal length or lengths)
        for first, last in page_blocks(pages.offsets, block_rows):
            block_lengths = lengths[first:last]
            if block_lengths.min() == block_lengths.max():
                shape: int | torch.Tensor = int(block_lengths[0])
            else:
                shape = torch.from_numpy(block_lengths).to(self.device)
            rows = int(pages.offsets[first]), int(pages.offsets[last])
            self._blocks.append((first, last, *rows, shape))

    @property
    def nbytes(self) -> int:
        """Device memory held by the page vectors."""
        return self.vectors.numel() * self.vectors.element_size()

    def scores(self, query_vectors: np.ndarray) -> np.ndarray:
        """Float32 MaxSim of one ``(n_tokens, dim)`` query against every page, ``(n_pages,)``."""
        query = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise ValueError(f"query must be (n_tokens, {self.dim}), got {query.shape}")
        tokens = torch.from_numpy(query).to(self.device)
        scores = torch.empty(self.n_pages, dtype=torch.float32, device=self.device)
        for first, last, row_start, row_stop, shape in self._blocks:
            rows = self.vectors[row_start:row_stop].float()
            # (rows, tokens): a page's rows are contiguous, so its max is one reduction.
            similarities = torch.mm(rows, tokens.T)
            if isinstance(shape, int):
                best = similarities.view(last - first, shape, -1).amax(1)
            else:
                best = torch.segment_reduce(similarities, "max", lengths=shape, axis=0)
            scores[first:last] = best.sum(1)
        return scores.cpu().numpy()

    def top_k(
        self, query_vectors: np.ndarray, k: int, *, keep: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best pages by float32 MaxSim, best first: ``(positions, scores)``.

        As :func:`~llama_index_vlm.search.exact_search.exact_top_k`: pages left out by the
        ``(n_pages,)`` bool mask ``keep`` score ``-inf``.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.scores(query_vectors)
        if keep is not None:
            scores = np.where(keep, scores, -np.inf).astype(np.float32)
        return top_k(scores, min(k, scores.size))
