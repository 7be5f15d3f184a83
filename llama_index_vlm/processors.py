"""Loading a checkpoint's processor, with or without torchvision.

transformers builds the processors of video-capable models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
SmolVLM, LLaVA-OneVision) together with a video processor, and its video processors need
torchvision: an optional, torch-version-pinned package (on a CPU-only install the registry's
build often does not import at all). Its loading also wants the checkpoint's video settings,
which many checkpoints do not ship. Pages are images, never videos, so such a processor is
always built without its video part: the same processor class, loaded from the same files by
its own ``from_pretrained``, with only the image processor and the tokenizer. It tokenises text
and images exactly as the full processor would (without torchvision its image processor is
transformers' PIL backend, which gives the same pixels as the torchvision one up to resampling
rounding); asking it for a video raises :class:`~llama_index_vlm.errors.VLMError`. The same
loading works on every machine, with torchvision or without.
"""

from __future__ import annotations

import functools
from typing import Any

from llama_index_vlm.errors import VLMError

_VIDEO = "video_processor"


def load_processor(
    name_or_path: str,
    model_type: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """A checkpoint's transformers processor (tokenizer and image processor together).

    A processor that transformers would build with a video processor is built without it (see
    the module's docstring); everything else loads through ``AutoProcessor``.

    Example::

        processor = load_processor("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl")
    """
    from transformers import AutoProcessor

    processor_class = _processor_class(model_type)
    if processor_class is not None and _VIDEO in processor_class.get_attributes():
        return image_only(processor_class).from_pretrained(
            name_or_path, revision=revision, trust_remote_code=trust_remote_code
        )
    return AutoProcessor.from_pretrained(
        name_or_path, revision=revision, trust_remote_code=trust_remote_code
    )


def _processor_class(model_type: str) -> type | None:
    from transformers.models.auto.processing_auto import (
        PROCESSOR_MAPPING_NAMES,
        processor_class_from_name,
    )

    class_name = PROCESSOR_MAPPING_NAMES.get(model_type)
    return processor_class_from_name(class_name) if class_name else None


@functools.cache
def image_only(processor_class: type) -> type:
    """``processor_class`` without its video processor: the same class, loading, saving and
    tokenising as it does, with an image processor and a tokenizer as its only parts.

    transformers builds, loads and saves the parts a processor class lists in
    ``get_attributes()``; this subclass lists the class's own parts but the video processor.
    Build one directly with ``video_processor=None``.

    Example::

        from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor

        processor = image_only(Qwen2VLProcessor)(
            image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer,
            video_processor=None, chat_template=template)
    """

    def get_attributes(cls) -> list[str]:
        return [name for name in processor_class.get_attributes() if name != _VIDEO]

    def from_args_and_dict(cls, args, processor_dict, **kwargs):
        return super(subclass, cls).from_args_and_dict(
            args, processor_dict, **{_VIDEO: None, **kwargs}
        )

    subclass = type(
        # The class keeps its name, and so the "processor_class" it saves and fingerprints.
        processor_class.__name__,
        (processor_class,),
        {
            "__module__": processor_class.__module__,
            "__doc__": f"{processor_class.__name__} without its video processor.",
            "get_attributes": classmethod(get_attributes),
            "from_args_and_dict": classmethod(from_args_and_dict),
            # Some processors read their video processor's defaults on every chat template call.
            _VIDEO: _NoVideoProcessor(processor_class.__name__),
        },
    )
    return subclass


class _NoVideoProcessor:
    """Stands in for a video processor that was not loaded: its sampling settings read as unset,
    and any use says why there is none."""

    num_frames = None
    fps = None

    def __init__(self, processor_name: str) -> None:
        self._processor_name = processor_name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise VLMError(
            f"this {self._processor_name} was loaded without its video processor: "
            "llama-index-vlm reads pages, which are images; load the checkpoint with "
            "transformers' AutoProcessor (and torchvision) for videos"
        )
