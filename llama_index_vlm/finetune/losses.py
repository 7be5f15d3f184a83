"""Late-interaction training losses, as pure functions of embedding tensors.

They match colpali-engine's losses (``colpali_engine/loss/late_interaction_losses.py``), which
trained the released ColPali and ColQwen2 checkpoints:

- ``"cross_entropy"`` is ``ColbertLoss``: a softmax over the MaxSim scores of each query against
  every page of the batch (the other queries' pages are its negatives), scores divided by the
  query's length and by a temperature of 0.02.
- ``"pairwise"`` is ``ColbertPairwiseCELoss``: ``softplus(best negative - positive)`` per query,
  on raw MaxSim scores.
- With hard negatives (one extra page per query), the losses are ``ColbertNegativeCELoss`` and
  ``ColbertPairwiseNegativeCELoss`` with ``in_batch_term=True``: the mean of the hard-negative
  term ``softplus(negative - positive)`` (divided by the temperature for cross-entropy) and
  the in-batch term above.

One difference, deliberate: padding is masked. transformers' retrieval models zero the padded
rows of a batch's embeddings, and colpali-engine takes the max over them too, so a zero row can
outscore every real page vector when all of them are negative; here padded page rows never win
a MaxSim. Query padding rows, zero vectors, add nothing to a score either way. Two queries of
the same page in one batch are not each other's negatives (``page_groups``). And the
cross-entropy's hard-negative term uses the same per-token scores as its in-batch term
(colpali-engine divides only the latter by the query length).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

LossName = Literal["cross_entropy", "pairwise"]

#: The values of ``loss`` that :func:`late_interaction_loss` accepts.
LOSSES: tuple[str, ...] = ("cross_entropy", "pairwise")

#: colpali-engine's default temperature for the cross-entropy loss.
DEFAULT_TEMPERATURE = 0.02

# Added to padded page rows' similarities: far below any cosine, and safe in bfloat16.
_PADDING_SCORE = -1e4


def maxsim_matrix(
    query_embeddings: torch.Tensor,
    page_embeddings: torch.Tensor,
    page_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MaxSim score of every query against every page: a ``(n_queries, n_pages)`` tensor.

    Args:
        query_embeddings: ``(n_queries, query_tokens, dim)``, padding rows zero.
        page_embeddings: ``(n_pages, page_tokens, dim)``.
        page_mask: ``(n_pages, page_tokens)``, 1 for real rows; padded rows never win a max.

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])       # one query, one real token
    >>> p = torch.tensor([[[0.6, 0.8], [1.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])
    >>> maxsim_matrix(q, p, torch.tensor([[1, 1], [1, 0]])).tolist()
    [[1.0, 0.0]]
    """
    similarities = torch.einsum("qnd,psd->qpns", query_embeddings, page_embeddings)
    if page_mask is not None:
        padding = (page_mask == 0)[None, :, None, :]
        similarities = similarities.masked_fill(padding, _PADDING_SCORE)
    return similarities.max(dim=3).values.sum(dim=2)


def maxsim_pairs(
    query_embeddings: torch.Tensor,
    page_embeddings: torch.Tensor,
    page_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MaxSim score of query ``i`` against page ``i`` only: a ``(n,)`` tensor."""
    similarities = torch.einsum("bnd,bsd->bns", query_embeddings, page_embeddings)
    if page_mask is not None:
        similarities = similarities.masked_fill((page_mask == 0)[:, None, :], _PADDING_SCORE)
    return similarities.max(dim=2).values.sum(dim=1)


def late_interaction_loss(
    query_embeddings: torch.Tensor,
    query_mask: torch.Tensor,
    page_embeddings: torch.Tensor,
    page_mask: torch.Tensor | None = None,
    negative_embeddings: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
    loss: LossName = "cross_entropy",
    temperature: float = DEFAULT_TEMPERATURE,
    page_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss of a batch of (query, page[, hard negative page]) triples.

    Query ``i``'s page is page ``i``; every other page of the batch is one of its negatives.

    Args:
        query_embeddings: ``(batch, query_tokens, dim)``, L2-normalised rows, padding zero.
        query_mask: ``(batch, query_tokens)``, 1 for real tokens.
        page_embeddings: ``(batch, page_tokens, dim)``.
        page_mask: ``(batch, page_tokens)``, 1 for real rows.
        negative_embeddings: optional ``(batch, negative_tokens, dim)``: a hard negative page
            per query.
        negative_mask: its mask.
        loss: ``"cross_entropy"`` or ``"pairwise"`` (see the module's docstring).
        temperature: the cross-entropy's temperature (colpali-engine: 0.02).
        page_groups: optional ``(batch,)`` ids; pages with the same id are the same page (two
            queries of one page in a batch), so neither is counted as the other's negative.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: an unknown ``loss``, or batches of different sizes.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
    if query_embeddings.shape[0] != page_embeddings.shape[0]:
        raise ValueError(
            f"{query_embeddings.shape[0]} queries but {page_embeddings.shape[0]} pages in a batch"
        )
    scores = maxsim_matrix(query_embeddings, page_embeddings, page_mask)
    if page_groups is not None:
        same_page = page_groups[:, None] == page_groups[None, :]
        same_page.fill_diagonal_(False)
        scores = scores.masked_fill(same_page, _PADDING_SCORE)
    negatives = (
        None
        if negative_embeddings is None
        else maxsim_pairs(query_embeddings, negative_embeddings, negative_mask)
    )
    if loss == "cross_entropy":
        # As ColbertLoss(normalize_scores=True): scores per query token, so the temperature
        # means the same for short and long queries.
        lengths = query_mask.sum(dim=1).clamp(min=1).to(scores.dtype)
        scores = scores / lengths[:, None]
        negatives = None if negatives is None else negatives / lengths
        in_batch = _in_batch_cross_entropy(scores, temperature)
        scale = temperature
    else:
        in_batch = _in_batch_pairwise(scores)
        scale = 1.0
    if negatives is None:
        return in_batch
    hard = F.softplus((negatives - scores.diagonal()) / scale).mean()
    return (hard + in_batch) / 2


def _in_batch_cross_entropy(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    targets = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores / temperature, targets)


def _in_batch_pairwise(scores: torch.Tensor) -> torch.Tensor:
    positives = scores.diagonal()
    others = scores - torch.eye(scores.shape[0], device=scores.device, dtype=scores.dtype) * 1e6
    return F.softplus(others.max(dim=1).values - positives).mean()
