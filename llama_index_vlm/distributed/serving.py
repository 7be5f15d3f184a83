"""The query path on Ray Serve: N replicas of the retriever (and an answer model) over one store.

Each replica opens the same store (on object storage such as ``s3://``, or a shared
filesystem), loads the retriever model (and the VLM, if configured) once, and answers:

- ``POST /`` with ``{"query": "...", "k": 5}``: the best pages; with ``"answer": true`` (and a
  VLM configured) also the model's answer from those pages;
- through a deployment handle: ``handle.search.remote(query, k)`` and
  ``handle.ask.remote(question, k)``.

A replica's page cache stays current by itself: the retriever compares the store's table
version with the one it loaded before every query and reads only the pages that changed, and
the store looks for other processes' commits every ``read_consistency_interval`` seconds (0:
before every query, which costs one listing request on object storage).

Example::

    from ray import serve
    from llama_index_vlm.distributed.serving import QueryServiceConfig, build_app

    config = QueryServiceConfig(store_uri="s3://bucket/index", storage_options={...})
    serve.run(build_app(config, autoscaling_config={"min_replicas": 1, "max_replicas": 4}))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llama_index_vlm.pages import page_label

#: The name of the deployment :func:`build_app` makes.
DEPLOYMENT_NAME = "llama-index-vlm"


@dataclass(frozen=True)
class QueryServiceConfig:
    """What every replica opens and loads.

    Attributes:
        store_uri: the store every replica reads (``s3://bucket/index``, a shared directory).
        table_name: the page table.
        storage_options: object-store options (endpoint, region, credentials...).
        read_consistency_interval: seconds between checks for new commits (0: every query).
        encoder: the retriever checkpoint; default: the one recorded in the store.
        vlm: the answering model (hub id or directory); None serves retrieval only.
        device: torch device of the models (``"auto"``: the replica's GPU if it has one).
        similarity_top_k: pages returned when a request does not say.
        search_mode: the retriever's ``"auto"``, ``"exact"`` or ``"fast"``.
        search_device: a torch device (``"cuda"``) on which each replica keeps every page's
            vectors and searches them exactly (``ColPaliRetriever``'s ``search_device``);
            None: the CPU.
        vlm_options: keyword arguments for ``HuggingFaceVLM.from_pretrained``
            (``max_new_tokens``...).
    """

    store_uri: str
    table_name: str = "pages"
    storage_options: dict[str, str] | None = None
    read_consistency_interval: float | None = 0.0
    encoder: str | None = None
    vlm: str | None = None
    device: str = "auto"
    similarity_top_k: int = 5
    search_mode: str = "auto"
    search_device: str | None = None
    vlm_options: dict[str, Any] = field(default_factory=dict)


class PageQueryService:
    """One replica: the store, the retriever model and the optional VLM, loaded once.

    A plain class: Ray Serve runs it as a deployment (:func:`build_app`), and it also works
    in-process (``PageQueryService(config).search("revenue")``), e.g. to test a config.
    """

    def __init__(self, config: QueryServiceConfig):
        from llama_index_vlm.encoder import ColPaliEncoder
        from llama_index_vlm.index import VisualDocumentIndex
        from llama_index_vlm.store import LanceDBPageStore

        self.config = config
        self.store = LanceDBPageStore(
            uri=config.store_uri,
            table_name=config.table_name,
            storage_options=config.storage_options,
            read_consistency_interval=config.read_consistency_interval,
        )
        fingerprint = self.store.fingerprint or {}
        recorded = fingerprint.get("model")
        name = config.encoder or recorded
        if name is None:
            raise ValueError(
                f"the store at {config.store_uri!r} holds no pages yet, so it names no model: "
                "set QueryServiceConfig(encoder=...)"
            )
        # The store's own model comes with its own fine-tuned adapter, if it was built with one.
        adapter = None if config.encoder else fingerprint.get("adapter")
        encoder = ColPaliEncoder.from_pretrained(
            name, device=config.device, show_progress=False, adapter=adapter
        )
        # The index keeps the page cache (every page, or the fast index) loaded between
        # requests: each request's retriever is its own.
        self.index = VisualDocumentIndex.from_store(self.store, encoder)
        self.vlm = None
        if config.vlm is not None:
            from llama_index_vlm.vlm import HuggingFaceVLM

            self.vlm = HuggingFaceVLM.from_pretrained(
                config.vlm, device=config.device, **config.vlm_options
            )

    def search(self, query: str, k: int | None = None) -> dict[str, Any]:
        """The best ``k`` pages for ``query``, with the table version they were read at."""
        retriever = self.index.as_retriever(**self._retriever_settings(k))
        hits = retriever.retrieve(query)
        return self._reply(pages=[_page(hit) for hit in hits])

    def ask(self, question: str, k: int | None = None) -> dict[str, Any]:
        """The VLM's answer to ``question`` from the best ``k`` pages, and those pages."""
        if self.vlm is None:
            raise ValueError("this deployment serves retrieval only: set QueryServiceConfig.vlm")
        engine = self.index.as_query_engine(llm=self.vlm, **self._retriever_settings(k))
        response = engine.query(question)
        return self._reply(
            answer=str(response), pages=[_page(hit) for hit in response.source_nodes]
        )

    async def __call__(self, request: Any) -> dict[str, Any]:
        """HTTP: ``{"query": ..., "k": ..., "answer": false}`` -> pages (and the answer)."""
        import asyncio

        body = await request.json()
        method = self.ask if body.get("answer") else self.search
        return await asyncio.to_thread(method, str(body.get("query", "")), body.get("k"))

    def _retriever_settings(self, k: int | None) -> dict[str, Any]:
        return {
            "similarity_top_k": k or self.config.similarity_top_k,
            "search_mode": self.config.search_mode,
            "search_device": self.config.search_device,
        }

    def _reply(self, **fields: Any) -> dict[str, Any]:
        return {**fields, "version": self.store.version, "replica": _replica_id()}


def _replica_id() -> str | None:
    """The Serve replica answering, or None when the service runs outside Ray Serve."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - Serve raises RayServeException outside a replica
        return None


def _page(hit: Any) -> dict[str, Any]:
    metadata = hit.node.metadata
    return {
        "page_id": hit.node.node_id,
        "score": hit.score,
        "label": page_label(hit.node),
        "file_name": metadata.get("file_name"),
        "page_number": metadata.get("page_number"),
    }


def build_app(
    config: QueryServiceConfig,
    *,
    num_replicas: int | None = 1,
    autoscaling_config: dict[str, Any] | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    max_ongoing_requests: int = 8,
) -> Any:
    """The Ray Serve application of the query path, to pass to ``serve.run``.

    Args:
        config: what each replica opens and loads.
        num_replicas: a fixed number of replicas (ignored with ``autoscaling_config``).
        autoscaling_config: Ray Serve's autoscaling settings, e.g. ``{"min_replicas": 1,
            "max_replicas": 8, "target_ongoing_requests": 2}``.
        ray_actor_options: resources per replica, e.g. ``{"num_gpus": 1}``.
        max_ongoing_requests: requests a replica handles at once before Serve queues them.
    """
    from ray import serve

    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": ray_actor_options or {"num_cpus": 1},
    }
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    return serve.deployment(PageQueryService).options(**options).bind(config)


def app(args: dict[str, str]) -> Any:
    """Ray Serve application builder, for ``serve run`` and Serve config files.

    Example (object-store credentials from the replicas' ``AWS_*`` environment)::

        serve run llama_index_vlm.distributed.serving:app store_uri=s3://bucket/index \\
            min_replicas=1 max_replicas=4 num_gpus=1

    Arguments: ``store_uri`` (required), ``table_name``, ``encoder``, ``vlm``, ``device``,
    ``similarity_top_k``, ``search_mode``, ``read_consistency_interval``; ``num_replicas``, or
    ``min_replicas`` and ``max_replicas`` for autoscaling; ``num_gpus`` and ``num_cpus`` per
    replica.
    """
    config, options = app_options(args)
    return build_app(config, **options)


def app_options(args: dict[str, str]) -> tuple[QueryServiceConfig, dict[str, Any]]:
    """:func:`app`'s text arguments as a :class:`QueryServiceConfig` and :func:`build_app`'s
    keyword arguments.

    >>> config, options = app_options({"store_uri": "s3://b/i", "max_replicas": "4"})
    >>> config.store_uri, options["autoscaling_config"]
    ('s3://b/i', {'min_replicas': 1, 'max_replicas': 4})
    """
    args = dict(args)
    if "store_uri" not in args:
        raise ValueError("serve run ...serving:app needs store_uri=URI (the store to serve)")
    numbers = {"similarity_top_k": int, "read_consistency_interval": float}
    fields = {"store_uri", "table_name", "encoder", "vlm", "device", "search_mode", *numbers}
    config = QueryServiceConfig(
        **{key: numbers.get(key, str)(args.pop(key)) for key in list(args) if key in fields}
    )
    resources = {key: float(args.pop(key)) for key in ("num_gpus", "num_cpus") if key in args}
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": 1, **resources}}
    if "min_replicas" in args or "max_replicas" in args:
        low = int(args.pop("min_replicas", 1))
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": int(args.pop("max_replicas", low)),
        }
    elif "num_replicas" in args:
        options["num_replicas"] = int(args.pop("num_replicas"))
    if args:
        raise ValueError(f"serve run ...serving:app does not take {sorted(args)}")
    return config, options
