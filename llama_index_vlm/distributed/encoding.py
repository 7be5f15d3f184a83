"""The encoder stage of a Ray ingest: one model per actor, loaded once, encoding page rows.

:class:`PageEncoder` is the callable class Ray Data's ``map_batches`` runs on an actor pool.
Each actor loads the encoder itself from an :class:`EncoderSpec` (checkpoint name or path,
revision, dtype), checks that it is the same model as the driver's (same fingerprint
identity), and turns the page rows of each batch into encoded rows. A page whose image cannot
be decoded, or a batch that fails to embed, becomes failure rows for its files, as in a local
ingest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llama_index_vlm.distributed.rows import failure_row, row_document, vectors_to_bytes
from llama_index_vlm.errors import ModelMismatchError
from llama_index_vlm.fingerprint import identity
from llama_index_vlm.pages import canonical_json, page_image


@dataclass(frozen=True)
class EncoderSpec:
    """How an actor loads the page encoder, and what it must turn out to be.

    Attributes:
        name_or_path: hub id or directory (every node must reach it).
        revision: hub revision, or None.
        dtype: torch dtype name, or ``"auto"`` (bfloat16 on a GPU, float32 on a CPU).
        batch_size: pages per forward pass.
        fingerprint: the driver's encoder fingerprint; the actor's must have the same identity.
        pool_factor: token pooling applied to each page's vectors (1: none).
        adapter: the LoRA adapter directory on the driver's encoder, or None (every node must
            reach it too).
    """

    name_or_path: str
    revision: str | None
    dtype: str
    batch_size: int
    fingerprint: dict[str, Any]
    pool_factor: float
    adapter: str | None = None

    @classmethod
    def of(
        cls, encoder: Any, fingerprint: dict[str, Any], pool_factor: float, dtype: str | None
    ) -> EncoderSpec:
        """The spec that reloads ``encoder`` (in its own dtype unless ``dtype`` is given)."""
        model_dtype = str(encoder.model.dtype).removeprefix("torch.")
        return cls(
            name_or_path=encoder.name_or_path,
            revision=encoder.revision,
            dtype=dtype or model_dtype,
            batch_size=encoder.batch_size,
            fingerprint=fingerprint,
            pool_factor=pool_factor,
            adapter=encoder.adapter.path if getattr(encoder, "adapter", None) else None,
        )


class PageEncoder:
    """Ray Data callable class: embeds the page rows of a batch (a ``pyarrow.Table``).

    Rows that are unchanged or failed pass through as they are; page rows get ``vectors`` and
    ``n_vectors``, or become failure rows of their file.
    """

    def __init__(self, spec: EncoderSpec):
        from llama_index_vlm.encoder import ColPaliEncoder

        self.spec = spec
        self.encoder = ColPaliEncoder.from_pretrained(
            spec.name_or_path,
            revision=spec.revision,
            dtype=spec.dtype,
            batch_size=spec.batch_size,
            show_progress=False,
            adapter=spec.adapter,
        )
        if identity(self.encoder.fingerprint) != identity(spec.fingerprint):
            raise ModelMismatchError(
                f"the encoder loaded from {spec.name_or_path!r} on a Ray worker is not the "
                f"driver's: {canonical_json(self.encoder.fingerprint)} versus "
                f"{canonical_json(spec.fingerprint)}; make the same checkpoint reachable at "
                "that path on every node (or use a hub id)"
            )

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        to_encode = []
        for position, row in enumerate(rows):
            if row["error"] or row["unchanged"]:
                continue
            try:
                # Reduced to the model's input size at once, as a local ingest does.
                image = self.encoder.prepare_image(page_image(row_document(row)))
                to_encode.append((position, image))
            except Exception as error:  # noqa: BLE001 - fails this page's file only
                page = row["page_id"]
                rows[position] = _failed(row, f"page {page}: image cannot be decoded: {error}")
        if to_encode:
            self._embed(rows, to_encode)
        return pa.Table.from_pylist(rows, schema=batch.schema)

    def _embed(self, rows: list[dict[str, Any]], to_encode: list[tuple[int, Any]]) -> None:
        from llama_index_vlm.search.pooling import hierarchical_pool

        try:
            vectors = self.encoder.embed_images([image for _, image in to_encode])
            if self.spec.pool_factor > 1:
                vectors = [hierarchical_pool(page, self.spec.pool_factor) for page in vectors]
        except Exception as error:  # noqa: BLE001 - reported per file, as a local ingest does
            reason = f"embedding or storing failed: {type(error).__name__}: {error}"
            for position, _ in to_encode:
                rows[position] = _failed(rows[position], reason)
            return
        for (position, _), page_vectors in zip(to_encode, vectors, strict=True):
            rows[position]["vectors"] = vectors_to_bytes(page_vectors)
            rows[position]["n_vectors"] = int(page_vectors.shape[0])


def _failed(row: dict[str, Any], reason: str) -> dict[str, Any]:
    return failure_row(row["source"], reason, row["doc_id"], row["file_path"])
