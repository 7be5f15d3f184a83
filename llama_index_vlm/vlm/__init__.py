"""Answering questions about page images with a local vision-language model.

- :mod:`~llama_index_vlm.vlm.messages`: LlamaIndex chat messages to turns of text and images.
- :mod:`~llama_index_vlm.vlm.families`: each model family's prompts (its chat template, or
  PaliGemma's and BLIP-2's task formats).
- :mod:`~llama_index_vlm.vlm.questions`: the question inside LlamaIndex's stock templates.
- :mod:`~llama_index_vlm.vlm.control_tokens`: keeping control tokens out of user text.
- :mod:`~llama_index_vlm.vlm.tiling`: several pages as one grid image.
- :mod:`~llama_index_vlm.vlm.context`: what a prompt costs, and making it fit the window.
- :mod:`~llama_index_vlm.vlm.loading`: a checkpoint, its family and its settings.
- :mod:`~llama_index_vlm.vlm.generation`: ``model.generate``, whole or streamed.
- :mod:`~llama_index_vlm.vlm.llm`: :class:`HuggingFaceVLM`, the LlamaIndex ``LLM``.

Example::

    from llama_index_vlm.vlm import HuggingFaceVLM

    vlm = HuggingFaceVLM.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")
"""

from llama_index_vlm.vlm.families import MULTI_IMAGE_STRATEGIES
from llama_index_vlm.vlm.llm import DEFAULT_VLM, HuggingFaceVLM

__all__ = ["DEFAULT_VLM", "MULTI_IMAGE_STRATEGIES", "HuggingFaceVLM"]
