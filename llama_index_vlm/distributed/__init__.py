"""More than one machine: ingestion on Ray Data and the query path on Ray Serve.

- :mod:`~llama_index_vlm.distributed.ray_ingest`: ``ingest(..., engine="ray")``.
- :mod:`~llama_index_vlm.distributed.serving`: the retriever (and an optional answer model) as
  a Ray Serve deployment with N replicas over one store.

Ray is an optional dependency (``pip install 'llama-index-vlm[ray]'``), imported only when
these are used; the store itself works on object storage (``s3://``) without Ray.
"""
