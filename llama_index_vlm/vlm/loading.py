"""Loading an answer model for ``HuggingFaceVLM``: the checkpoint, its family, and what every
call needs from them (the image token, the control tokens, the image budget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llama_index_vlm.checkpoints import load_model, load_processor
from llama_index_vlm.vlm import context
from llama_index_vlm.vlm.control_tokens import control_tokens
from llama_index_vlm.vlm.families import FAMILIES, VISION_LANGUAGE_MODELS, Family


@dataclass
class LoadedVLM:
    """An answer model ready for calls."""

    model: Any
    processor: Any
    family: Family
    image_token_id: int | None
    control_tokens: tuple[str, ...]
    #: The image processor's keyword arguments on every call (a Qwen image budget).
    images_kwargs: dict[str, Any]


def load_vlm(settings: Any, model: Any | None = None, processor: Any | None = None) -> LoadedVLM:
    """Load the checkpoint ``settings`` (a ``HuggingFaceVLM``) names, or wrap ``model`` and
    ``processor`` (the checkpoint's processor when None).

    Raises:
        InvalidCheckpointError: the checkpoint is of an unsupported family, or its processor
            cannot build its prompts.
        ValueError: an image budget is set for a family without one.
    """
    if model is None:
        model, processor, model_type, _ = load_model(
            settings.name_or_path,
            VISION_LANGUAGE_MODELS,
            device=settings.device,
            dtype=settings.dtype,
            revision=settings.revision,
            device_map=settings.device_map,
            attn_implementation=settings.attn_implementation,
            quantization=settings.quantization,
            adapter=settings.adapter,
            merge_adapter=settings.merge_adapter,
            **{"trust_remote_code": settings.trust_remote_code, **settings.model_kwargs},
        )
    else:
        model_type = str(getattr(model.config, "model_type", ""))
        VISION_LANGUAGE_MODELS.class_for(model_type, settings.name_or_path)
        if processor is None:
            processor = load_processor(
                settings.name_or_path, model_type, settings.revision, settings.trust_remote_code
            )
    family = FAMILIES[model_type]
    family.check_processor(processor, settings.name_or_path)
    return LoadedVLM(
        model=model.eval(),
        processor=processor,
        family=family,
        image_token_id=context.image_token_id(model.config, processor),
        control_tokens=control_tokens(processor),
        images_kwargs=family.images_kwargs(processor, settings.min_pixels, settings.max_pixels),
    )
