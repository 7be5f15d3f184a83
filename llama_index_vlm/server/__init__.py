"""``llama-index-vlm serve``: the models loaded once behind a JSON API and a web page.

- :mod:`~llama_index_vlm.server.app`: :func:`create_app`, the FastAPI application.
- :mod:`~llama_index_vlm.server.routes`: the JSON API (search, ask, pages, documents, jobs).
- :mod:`~llama_index_vlm.server.state`: the store, the models and the limits of one server.
- :mod:`~llama_index_vlm.server.gates`: model calls take turns; answers queue for a slot.
- :mod:`~llama_index_vlm.server.answers`: answers streamed as server-sent events.
- :mod:`~llama_index_vlm.server.jobs`: uploads indexed in the background, with progress.
- :mod:`~llama_index_vlm.server.uploads`: uploaded files saved under the server's own names.
- :mod:`~llama_index_vlm.server.pictures`: page images, thumbnails and similarity maps.
- :mod:`~llama_index_vlm.server.auth`: the optional bearer token, and no cross-site writes.
- ``static/``: the page (plain HTML, CSS and JavaScript; nothing from a CDN).

Needs the ``server`` extra: ``pip install "llama-index-vlm[server]"``.

Example::

    import uvicorn
    from llama_index_vlm import ColPaliEncoder, HuggingFaceVLM, LanceDBPageStore
    from llama_index_vlm.server import create_app

    store = LanceDBPageStore(uri="./vlm_index")
    encoder = ColPaliEncoder.from_pretrained("vidore/colpali-v1.3-hf")
    app = create_app(store, encoder, HuggingFaceVLM.from_pretrained("llava-hf/llava-1.5-7b-hf"))
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from llama_index_vlm.server.app import create_app
from llama_index_vlm.server.state import Models, ServerLimits

__all__ = ["Models", "ServerLimits", "create_app"]
