"""Page retrieval as a LlamaIndex retriever.

- :mod:`~llama_index_vlm.retriever.base`: :class:`ColPaliRetriever`, the LlamaIndex retriever.
- :mod:`~llama_index_vlm.retriever.page_caches`: the store's pages in memory, one class per
  search mode (exact pages, fast page codes), shared by the retrievers over one store.
- :mod:`~llama_index_vlm.retriever.search_slots`: at most one search per CPU core at a time.
- :mod:`~llama_index_vlm.retriever.search_processes`: fast searches in worker processes
  (``ColPaliRetriever(search_processes=N)``), for many query threads on several cores.
"""

from llama_index_vlm.retriever.base import RETRIEVER_SETTINGS, ColPaliRetriever
from llama_index_vlm.retriever.page_caches import PageCacheHolder

__all__ = ["RETRIEVER_SETTINGS", "ColPaliRetriever", "PageCacheHolder"]
