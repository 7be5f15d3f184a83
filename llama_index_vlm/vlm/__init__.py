"""Answering questions about page images with a local vision-language model.

- :mod:`~llama_index_vlm.vlm.messages`: LlamaIndex chat messages to turns of text and images.
- :mod:`~llama_index_vlm.vlm.families`: each model family's prompt format.
- :mod:`~llama_index_vlm.vlm.tiling`: several pages as one grid image.
- :mod:`~llama_index_vlm.vlm.generation`: ``model.generate``, whole or streamed.
- :mod:`~llama_index_vlm.vlm.llm`: :class:`HuggingFaceVLM`, the LlamaIndex ``LLM``.

Example::

    from llama_index_vlm.vlm import HuggingFaceVLM

    vlm = HuggingFaceVLM.from_pretrained("llava-hf/llava-1.5-7b-hf")
"""

from llama_index_vlm.vlm.families import MULTI_IMAGE_STRATEGIES
from llama_index_vlm.vlm.llm import DEFAULT_VLM, HuggingFaceVLM

__all__ = ["DEFAULT_VLM", "MULTI_IMAGE_STRATEGIES", "HuggingFaceVLM"]
