"""More than one machine: ingestion on Ray Data and the query path on Ray Serve.

- :mod:`~llama_index_vlm.distributed.ray_ingest`: ``ingest(..., engine="ray")``: render on
  CPU tasks, encode on an actor pool, commit whole files from the driver.
- :mod:`~llama_index_vlm.distributed.serving`: the retriever (and an optional answer model) as
  a Ray Serve deployment with N replicas over one store.
- :mod:`~llama_index_vlm.distributed.local_s3`: a local S3-compatible server (moto) for tests
  and benchmarks of a store on object storage.

Ray is an optional dependency (``pip install 'llama-index-vlm[ray]'``), imported only when
these are used; the store itself works on object storage (``s3://``) without Ray.
"""
