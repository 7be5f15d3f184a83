"""Re-indexing: every page of one index embedded again by another encoder into a new index.

An index keeps its page images, so moving to a fine-tuned retriever (a base model with a LoRA
adapter) needs no source files: :func:`reindex` reads the pages back, embeds them with the new
encoder and stores them, metadata and pooling unchanged, in another store. The old index stays
as it is (its vectors belong to the old model; the fingerprint keeps the two apart).

Example::

    encoder = ColPaliEncoder.from_pretrained("vidore/colpali-v1.3-hf", adapter="./my-adapter")
    report = reindex(LanceDBPageStore(uri="./vlm_index"), encoder,
                     LanceDBPageStore(uri="./vlm_index_tuned"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from llama_index_vlm.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from llama_index_vlm.encoder import ColPaliEncoder
    from llama_index_vlm.ingestion import IngestReport
    from llama_index_vlm.store import LanceDBPageStore


def reindex(
    source: LanceDBPageStore,
    encoder: ColPaliEncoder,
    target: LanceDBPageStore,
    batch_size: int = 16,
    pages_per_read: int = 256,
    show_progress: bool = True,
) -> IngestReport:
    """Embed every page of ``source`` with ``encoder`` into ``target``.

    Pages are read ``pages_per_read`` at a time (bounded memory) and written in atomic batches
    of ``batch_size`` as :func:`~llama_index_vlm.ingestion.ingest_documents` writes them, with
    the source's pool factor; running it again skips the pages already re-indexed.

    Raises:
        InvalidRequestError: ``source`` and ``target`` are the same table.
        ModelMismatchError: ``target`` already holds another encoder's vectors.
    """
    from llama_index_vlm.ingestion import IngestReport, ingest_documents
    from llama_index_vlm.pages import source_of

    if (source.uri, source.table_name) == (target.uri, target.table_name):
        raise InvalidRequestError(
            "re-index into another store (another uri or table_name): one table holds one "
            "encoder's vectors"
        )
    total = IngestReport()
    sources: set[str] = set()
    page_ids = source.page_ids()
    with tqdm(
        total=len(page_ids), desc="Re-indexing", unit="page", disable=not show_progress
    ) as bar:
        for start in range(0, len(page_ids), pages_per_read):
            nodes = source.get_nodes(page_ids[start : start + pages_per_read])
            sources.update(source_of(node) for node in nodes)
            report = ingest_documents(
                nodes,
                encoder,
                target,
                batch_size=batch_size,
                pool_factor=source.pool_factor,
                show_progress=False,
            )
            _add_into(total, report)
            bar.update(len(nodes))
    total.files = len(sources)
    return total


def _add_into(total: IngestReport, report: IngestReport) -> None:
    total.pages_added += report.pages_added
    total.pages_replaced += report.pages_replaced
    total.pages_unchanged += report.pages_unchanged
    total.pages_removed += report.pages_removed
    total.failed += report.failed
    total.seconds += report.seconds
