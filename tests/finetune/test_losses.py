"""The late-interaction losses: colpali-engine's formulas, with padding masked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from llama_index_vlm.finetune.losses import late_interaction_loss, maxsim_matrix, maxsim_pairs
from llama_index_vlm.search import maxsim_scores


def unit(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator), dim=-1)


def test_maxsim_matrix_equals_the_search_maxsim():
    queries, pages = unit(3, 5, 16), unit(4, 9, 16, seed=1)
    expected = maxsim_scores(list(queries.numpy()), list(pages.numpy()))
    torch.testing.assert_close(maxsim_matrix(queries, pages), torch.from_numpy(expected))


def test_padded_page_rows_never_win_a_maxsim():
    queries = torch.zeros(2, 3, 8)
    queries[..., 0] = 1.0
    pages = torch.zeros(2, 4, 8)
    pages[:, :2, 0] = -1.0  # real rows: cosine -1 with every query token
    # rows 2 and 3 stay zero: padding, as transformers zeroes it
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]])
    assert (maxsim_matrix(queries, pages, mask) < 0).all()
    assert (maxsim_matrix(queries, pages) == 0).all()  # unmasked, the zero rows would win


def test_maxsim_pairs_is_the_diagonal_of_the_matrix():
    queries, pages = unit(3, 4, 8), unit(3, 6, 8, seed=2)
    torch.testing.assert_close(
        maxsim_pairs(queries, pages), maxsim_matrix(queries, pages).diagonal()
    )


def test_cross_entropy_is_colbert_loss():
    queries, pages = unit(4, 5, 16), unit(4, 7, 16, seed=3)
    query_mask = torch.ones(4, 5, dtype=torch.long)
    scores = torch.einsum("bnd,csd->bcns", queries, pages).max(dim=3)[0].sum(dim=2) / 5
    expected = F.cross_entropy(scores / 0.02, torch.arange(4))
    actual = late_interaction_loss(queries, query_mask, pages, loss="cross_entropy")
    torch.testing.assert_close(actual, expected)


def test_pairwise_is_colbert_pairwise_ce_loss():
    queries, pages = unit(4, 5, 16), unit(4, 7, 16, seed=4)
    scores = torch.einsum("bnd,csd->bcns", queries, pages).max(dim=3)[0].sum(dim=2)
    hardest = (scores - torch.eye(4) * 1e6).max(dim=1)[0]
    expected = F.softplus(hardest - scores.diagonal()).mean()
    actual = late_interaction_loss(queries, torch.ones(4, 5), pages, loss="pairwise")
    torch.testing.assert_close(actual, expected)


def test_hard_negative_term_is_averaged_with_the_in_batch_term():
    queries, pages, negatives = unit(3, 4, 8), unit(3, 6, 8, seed=5), unit(3, 6, 8, seed=6)
    mask = torch.ones(3, 4)
    in_batch = late_interaction_loss(queries, mask, pages, loss="pairwise")
    hard = F.softplus(maxsim_pairs(queries, negatives) - maxsim_pairs(queries, pages)).mean()
    actual = late_interaction_loss(
        queries, mask, pages, negative_embeddings=negatives, loss="pairwise"
    )
    torch.testing.assert_close(actual, (hard + in_batch) / 2)


@pytest.mark.parametrize("loss", ["cross_entropy", "pairwise"])
def test_matching_pages_cost_less_than_shuffled_ones(loss):
    queries = unit(4, 3, 16)
    pages = torch.cat([queries, unit(4, 5, 16, seed=7)], dim=1)  # page i contains query i
    mask = torch.ones(4, 3)
    matched = late_interaction_loss(queries, mask, pages, loss=loss)
    shuffled = late_interaction_loss(queries, mask, pages.roll(1, dims=0), loss=loss)
    assert matched < shuffled


def test_an_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="loss must be one of"):
        late_interaction_loss(unit(2, 3, 4), torch.ones(2, 3), unit(2, 3, 4), loss="triplet")


def test_two_queries_of_one_page_are_not_each_others_negatives():
    queries = unit(2, 3, 8)
    page = unit(1, 5, 8, seed=8).expand(2, 5, 8)  # the same page twice in the batch
    mask = torch.ones(2, 3)
    grouped = late_interaction_loss(queries, mask, page, page_groups=torch.tensor([0, 0]))
    ungrouped = late_interaction_loss(queries, mask, page)
    assert grouped == pytest.approx(0.0, abs=1e-6) and ungrouped > 0.5
