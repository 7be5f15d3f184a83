"""Ingestion on Ray: render on CPU tasks, encode on an actor pool, commit whole files.

``ingest(paths, encoder, store, engine="ray")`` (and ``llama-index-vlm index ... --ray``)
lands here. The pipeline is a Ray Data dataset:

1. the driver lists the files (as a local ingest does);
2. ``flat_map`` renders each file into page rows on CPU tasks
   (:func:`~llama_index_vlm.distributed.rows.render_file`), marking pages the store already
   holds unchanged so they are not encoded again;
3. ``map_batches`` encodes the page rows on a pool of actors, one model each
   (:class:`~llama_index_vlm.distributed.encoding.PageEncoder`), with ``num_gpus`` per actor
   when the cluster has GPUs and CPU actors otherwise;
4. the driver commits complete files with the store's atomic upsert
   (:class:`~llama_index_vlm.distributed.commit.FileCommitter`).

Why not Ray Data's Lance sink (``write_lance``) or ``lance-ray``: they append fragments and
commit once at the end of the job (a killed driver loses the whole run), have no upsert that
skips unchanged pages or deletes a re-ingested file's stale pages in the same commit, and pull
in a second Lance (``pylance``) beside LanceDB's own. Committing whole files from the driver
keeps every guarantee of a local ingest; the vectors (kilobytes per page) are what crosses
the network, and writing is not the bottleneck (encoding is: see benchmarks/RESULTS.md).

Ray retries a task or restarts an actor whose worker died; its rows are computed again and
the driver keys them by page id, so nothing is lost or stored twice.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from llama_index_vlm.distributed.commit import FileCommitter
from llama_index_vlm.distributed.encoding import EncoderSpec, PageEncoder
from llama_index_vlm.distributed.rows import find_vlm_error, render_file, store_config
from llama_index_vlm.errors import EmptyInputError
from llama_index_vlm.fingerprint import POOL_FACTOR_KEY
from llama_index_vlm.ingestion import IngestReport, _page_fingerprint
from llama_index_vlm.reader import SUPPORTED_EXTENSIONS, PDFPageReader

__all__ = ["connect", "ingest"]

#: Environment variables LanceDB's object stores read their endpoint and credentials from.
_OBJECT_STORE_VARIABLE_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")


def connect(address: str | None = None) -> Any:
    """Connect to Ray (once per process) and return the ``ray`` module.

    ``address``: ``None`` connects to the cluster in ``RAY_ADDRESS`` or one already running on
    this machine, else starts a local one; ``"auto"`` requires a running cluster;
    ``"ray://host:10001"`` uses Ray Client. Does nothing if Ray is already initialised.
    """
    try:
        import ray
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ingesting with engine='ray' needs Ray: pip install 'llama-index-vlm[ray]'"
        ) from error
    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=False)
    return ray


def ingest(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    encoder: Any,
    store: Any,
    *,
    reader: PDFPageReader | None = None,
    batch_size: int = 16,
    pool_factor: float | None = None,
    show_progress: bool = True,
    address: str | None = None,
    encoders: int | None = None,
    gpus_per_encoder: float | None = None,
    cpus_per_encoder: float = 1,
    dtype: str | None = None,
) -> Any:
    """Read, embed and store the pages under ``paths`` on a Ray cluster.

    Same arguments, guarantees and :class:`~llama_index_vlm.ingestion.IngestReport` as
    :func:`llama_index_vlm.ingestion.ingest`, plus:

    Args:
        address: the Ray cluster (see :func:`connect`); ignored when Ray is initialised.
        encoders: encoder actors (models loaded at once). Default: one per GPU in the cluster,
            or one on a CPU-only cluster.
        gpus_per_encoder: GPUs per actor. Default: 1 when the cluster has GPUs, else 0.
        cpus_per_encoder: CPUs per actor (its torch threads), default 1.
        dtype: the dtype the actors load the model in (``"auto"``: bfloat16 on a GPU).
            Default: the given encoder's own dtype, so the vectors match a local ingest's.

    Every worker must reach the checkpoint (a hub id, or the same path on every node) and the
    store (object storage such as ``s3://``, or a shared filesystem). Workers open the store
    with its ``storage_options``, and the driver's ``AWS_*``/``GOOGLE_*``/``AZURE_*``
    environment variables are set for them too.

    Example::

        store = LanceDBPageStore(uri="s3://bucket/index", storage_options={...})
        report = ingest("reports/", encoder, store, engine="ray")
    """
    started = time.perf_counter()
    reader = reader or PDFPageReader()
    files = reader.list_files(paths)
    if not files:
        raise EmptyInputError(
            f"no PDF or image files ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) under {paths!r}"
        )
    fingerprint = _page_fingerprint(encoder, store, pool_factor)
    ray = connect(address)
    spec = EncoderSpec.of(encoder, fingerprint, float(fingerprint[POOL_FACTOR_KEY]), dtype)
    gpus = _gpus_per_encoder(ray, gpus_per_encoder)
    report = IngestReport(files=len(files))
    committer = FileCommitter(store, fingerprint, report, batch_size)
    # A dataset keeps the DataContext of its creation, progress settings included.
    with _progress_bars(ray, show_progress), _original_errors():
        dataset = _pipeline(ray, files, reader, store, spec, encoders, gpus, cpus_per_encoder)
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                committer.take(row)
    committer.finish()
    # Failures in the order of the files, as a local ingest lists them (workers finish in any).
    order = {str(path): position for position, path in enumerate(files)}
    report.failed.sort(key=lambda failed: order.get(failed.path, len(order)))
    report.seconds = time.perf_counter() - started
    return report


def _pipeline(
    ray: Any,
    files: list[Any],
    reader: PDFPageReader,
    store: Any,
    spec: EncoderSpec,
    encoders: int | None,
    gpus: float,
    cpus: float,
) -> Any:
    if encoders is None:
        encoders = max(1, int(ray.cluster_resources().get("GPU", 0) // gpus)) if gpus else 1
    items = [{"path": str(path)} for path in files]
    environment = _object_store_environment()
    # One block per file (up to a thousand): each render task then reads a few files.
    rendered = ray.data.from_items(items, override_num_blocks=min(len(items), 1000)).flat_map(
        render_file,
        fn_kwargs={"reader": reader, "store_config": store_config(store)},
        num_cpus=1,
        **environment,
    )
    return rendered.map_batches(
        PageEncoder,
        fn_constructor_kwargs={"spec": spec},
        batch_size=spec.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=encoders),
        num_gpus=gpus,
        num_cpus=cpus,
        **environment,
    )


def _object_store_environment() -> dict[str, Any]:
    """The driver's object-store settings (``AWS_*``, ``GOOGLE_*``, ``AZURE_*`` variables) for
    the workers, so they open the store as the driver does; nothing when none is set.
    """
    variables = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(_OBJECT_STORE_VARIABLE_PREFIXES)
    }
    return {"runtime_env": {"env_vars": variables}} if variables else {}


def _gpus_per_encoder(ray: Any, requested: float | None) -> float:
    if requested is not None:
        return float(requested)
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


@contextlib.contextmanager
def _progress_bars(ray: Any, show: bool) -> Iterator[None]:
    """Ray Data's own progress bars, or none; the context's setting is restored after."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.enable_operator_progress_bars
    context.enable_progress_bars = context.enable_operator_progress_bars = show
    try:
        yield
    finally:
        context.enable_progress_bars, context.enable_operator_progress_bars = saved


@contextlib.contextmanager
def _original_errors() -> Iterator[None]:
    """Raise our own error (a model mismatch, an unwritable store) rather than Ray's wrapper."""
    try:
        yield
    except Exception as error:
        original = find_vlm_error(error)
        if original is None or original is error:
            raise
        raise original from error
