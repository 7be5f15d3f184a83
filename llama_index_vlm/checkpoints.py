"""Loading a checkpoint, and checking it before trusting it.

One path for every model loader (the ColPali encoder, the answering VLM): the model class comes
from the ``model_type`` in the checkpoint's config, never from its name; a bad path, an offline
hub id, a checkpoint of another architecture or one with missing weights fails the same way
everywhere, with a message that says what to do; code shipped with a checkpoint runs only when
the caller turns ``trust_remote_code`` on. A fine-tuned LoRA adapter goes on the model here too
(:mod:`llama_index_vlm.adapters`), so every loader takes ``adapter=`` the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from llama_index_vlm.adapters import AdapterInfo, attach_adapter
from llama_index_vlm.errors import InvalidCheckpointError, MissingWeightsError


@dataclass(frozen=True)
class Architectures:
    """The checkpoints one loader accepts, and what it says about the others.

    Example::

        RETRIEVERS = Architectures(
            classes={"colpali": "ColPaliForRetrieval"},
            description="a ColPali-family retriever",
            examples=("vidore/colpali-v1.3-hf",),
            missing_weights_consequence="embeddings would change on every load",
            missing_weights_advice="Use a complete checkpoint in transformers' format.",
        )
    """

    #: transformers class name by the ``model_type`` in a checkpoint's config.
    classes: Mapping[str, str]
    #: What an accepted checkpoint is, for messages (``"a ColPali-family retriever"``).
    description: str
    #: Hub ids of accepted checkpoints, for messages.
    examples: tuple[str, ...]
    #: What random weights would do to the user (a clause for :func:`raise_if_missing_weights`).
    missing_weights_consequence: str
    #: What to load instead of a checkpoint with missing weights (a sentence).
    missing_weights_advice: str
    #: Why a known ``model_type`` that is not accepted is not (`` (a page retriever: ...)``).
    hints: Mapping[str, str] = field(default_factory=dict)

    def class_for(self, model_type: str, name_or_path: str) -> str:
        """The class name that loads a ``model_type`` checkpoint.

        Raises:
            InvalidCheckpointError: the loader does not accept that architecture.
        """
        class_name = self.classes.get(model_type)
        if class_name is not None:
            return class_name
        supported = ", ".join(repr(key) for key in self.classes)
        examples = " or ".join(repr(example) for example in self.examples)
        raise InvalidCheckpointError(
            f"{name_or_path!r} is a {model_type or 'unknown'!r} checkpoint"
            f"{self.hints.get(model_type, '')}, not {self.description}; use one whose config "
            f"has model_type in {supported} (e.g. {examples})"
        )


class LoadedCheckpoint(NamedTuple):
    """A checkpoint's model (in eval mode, on its device), processor and ``model_type``, and
    the LoRA adapter put on the model (None without one).
    """

    model: Any
    processor: Any
    model_type: str
    adapter: AdapterInfo | None = None


def load_model(
    name_or_path: str | os.PathLike[str],
    architectures: Architectures,
    *,
    device: Any = "auto",
    dtype: Any = "auto",
    revision: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str = "auto",
    quantization: str | None = None,
    adapter: str | os.PathLike[str] | None = None,
    merge_adapter: bool = False,
    **model_kwargs: Any,
) -> LoadedCheckpoint:
    """Load the model and processor of a checkpoint that ``architectures`` accepts.

    Weights load from safetensors files only: a checkpoint of pickled ``.bin`` weights, which
    can run code when unpickled, is refused.

    Args:
        name_or_path: a hub id or a local directory in transformers' format.
        architectures: the model classes by ``model_type`` and the messages for the others.
        device: ``"auto"`` picks cuda, then mps, then cpu (ignored with a ``device_map``, where
            accelerate places the model).
        dtype: ``"auto"`` picks bfloat16 on cuda and float32 elsewhere.
        revision: a hub branch, tag or commit.
        device_map: accelerate's placement of the model's layers (``"auto"`` spreads a model
            over every GPU, then CPU memory); None puts the whole model on ``device``.
        attn_implementation: ``"auto"`` (FlashAttention-2 on cuda in half precision when
            flash-attn is installed and the model supports it, else ``"sdpa"``), ``"sdpa"``,
            ``"flash_attention_2"`` or ``"eager"``.
        quantization: None, ``"4bit"`` or ``"8bit"`` (bitsandbytes, CUDA), or ``"int8"``
            (torchao int8 weights, CPU or CUDA); see :mod:`llama_index_vlm.quantization`.
        adapter: a LoRA adapter directory (as fine-tuning writes it) to put on the model.
        merge_adapter: merge the adapter into the weights (same outputs, faster).
        **model_kwargs: passed to the model's ``from_pretrained``; ``trust_remote_code`` is off
            unless given, and is passed to the processor's too.

    Raises:
        InvalidCheckpointError: the path or id holds no checkpoint, one of an architecture
            ``architectures`` does not accept, or one without safetensors weights.
        MissingWeightsError: the checkpoint lacks weights transformers would initialise at
            random.
        UnsupportedDeviceError: the device cannot run the quantisation or attention asked for.

    Example::

        loaded = load_model("vidore/colpali-v1.3-hf", RETRIEVERS, adapter="./my-adapter")
        loaded.model, loaded.processor, loaded.adapter.digest
    """
    from llama_index_vlm.devices import resolve_device, resolve_dtype

    name_or_path = os.fspath(name_or_path)
    found_type = model_type(name_or_path, revision)
    model_class = _model_class(architectures.class_for(found_type, name_or_path), name_or_path)
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    model_kwargs.setdefault("trust_remote_code", False)
    placement = _placement(
        model_class, resolved_device, resolved_dtype, device_map, attn_implementation, quantization
    )
    model, loading_info = _from_pretrained(
        model_class,
        name_or_path,
        revision=revision,
        dtype=resolved_dtype,
        **placement,
        **model_kwargs,
    )
    raise_if_missing_weights(
        name_or_path,
        loading_info,
        architectures.missing_weights_consequence,
        architectures.missing_weights_advice,
    )
    processor = load_processor(
        name_or_path, found_type, revision, model_kwargs["trust_remote_code"]
    )
    if "device_map" not in placement:  # with a device_map, accelerate placed it already
        model = model.to(resolved_device)
    info = None
    if adapter is not None:
        model, info = attach_adapter(model, adapter, merge=merge_adapter)
    return LoadedCheckpoint(model.eval(), processor, found_type, info)


def _model_class(class_name: str, name_or_path: str) -> Any:
    """The transformers class of that name; for an Auto class, the concrete class it picks."""
    import transformers

    model_class = getattr(transformers, class_name)
    if class_name.startswith("Auto"):
        return model_class._model_mapping[type(load_config(name_or_path))]
    return model_class


def _placement(
    model_class: Any,
    device: Any,
    dtype: Any,
    device_map: str | dict[str, Any] | None,
    attn_implementation: str,
    quantization: str | None,
) -> dict[str, Any]:
    """``from_pretrained``'s placement arguments: attention kernel, quantisation, device map."""
    from llama_index_vlm.devices import resolve_attn_implementation
    from llama_index_vlm.quantization import quantization_config

    placement: dict[str, Any] = {}
    attention = resolve_attn_implementation(attn_implementation, model_class, device, dtype)
    if attention is not None:
        placement["attn_implementation"] = attention
    if quantization is not None:
        placement["quantization_config"] = quantization_config(quantization, device)
        # Quantised weights cannot be moved after loading: they load where they will run.
        if device_map is None:
            device_map = {"": str(device)}
    if device_map is not None:
        placement["device_map"] = device_map
    return placement


def _from_pretrained(model_class: Any, name_or_path: str, **kwargs: Any) -> tuple[Any, Any]:
    """``model_class.from_pretrained`` from safetensors weights only, with its loading info."""
    try:
        return model_class.from_pretrained(
            name_or_path, use_safetensors=True, output_loading_info=True, **kwargs
        )
    except OSError as error:
        if not _has_only_pickled_weights(name_or_path):
            raise
        raise InvalidCheckpointError(
            f"{name_or_path!r} holds its weights only as pickled PyTorch files (.bin), which can "
            "run code when loaded; llama-index-vlm loads safetensors weights only. Convert it "
            "once where you trust it (load it with transformers, then save_pretrained(), which "
            "writes model.safetensors), or use a revision of the checkpoint in safetensors"
        ) from error


def _has_only_pickled_weights(name_or_path: str) -> bool:
    if not os.path.isdir(name_or_path):
        return False
    names = os.listdir(name_or_path)
    has_safetensors = any(name.endswith(".safetensors") for name in names)
    has_pickles = any(name.endswith((".bin", ".pt", ".pth", ".ckpt")) for name in names)
    return has_pickles and not has_safetensors


def load_processor(
    name_or_path: str,
    found_type: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """A checkpoint's transformers processor (tokenizer and image processor together); a
    video-capable model's processor is built without its video part, which needs torchvision
    (see :mod:`llama_index_vlm.processors`).
    """
    from llama_index_vlm import processors

    return processors.load_processor(name_or_path, found_type, revision, trust_remote_code)


def load_config(name_or_path: str, revision: str | None = None) -> Any:
    """Load a checkpoint's transformers config, or explain why it cannot be loaded.

    Raises:
        InvalidCheckpointError: the directory holds no config, the path is a file, or the hub id
            cannot be fetched (for example, offline).

    Example::

        config = load_config("llava-hf/llava-1.5-7b-hf")
        config.model_type  # "llava"
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError) as error:
        if os.path.isdir(name_or_path):
            hint = "the directory holds no config.json of a transformers checkpoint"
        elif os.path.exists(name_or_path):
            hint = "it is a file; pass the checkpoint's directory"
        else:
            hint = (
                "there is no local directory of that name, and it could not be fetched from the "
                "Hugging Face hub (offline?); download it where you have the hub, or pass a "
                "local directory holding the checkpoint"
            )
        raise InvalidCheckpointError(
            f"cannot load a checkpoint from {name_or_path!r}: {hint}"
        ) from error


def model_type(name_or_path: str, revision: str | None = None) -> str:
    """The ``model_type`` in a checkpoint's config (``"colpali"``, ``"llava"``, ``"blip-2"``...).

    Loaders pick the model class from this, never from the checkpoint's name, so a renamed or
    fine-tuned checkpoint still loads with the right class.

    Example::

        model_type("vidore/colpali-v1.3-hf")  # "colpali"
    """
    return str(getattr(load_config(name_or_path, revision), "model_type", ""))


def raise_if_missing_weights(
    name_or_path: str, loading_info: Mapping[str, Any], consequence: str, advice: str
) -> None:
    """Refuse a checkpoint that lacks weights transformers would initialise at random.

    Args:
        name_or_path: the checkpoint, for the message.
        loading_info: what ``from_pretrained(..., output_loading_info=True)`` returned.
        consequence: what random weights would do to the user (a clause for the message).
        advice: what to load instead (a sentence for the message).

    Raises:
        MissingWeightsError: ``loading_info`` lists missing keys.

    Example::

        model, info = LlavaForConditionalGeneration.from_pretrained(path, output_loading_info=True)
        raise_if_missing_weights(path, info, "answers would be noise", "Use a full checkpoint.")
    """
    missing = sorted(loading_info.get("missing_keys") or [])
    if not missing:
        return
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise MissingWeightsError(
        f"{name_or_path!r} lacks {len(missing)} weight(s) that transformers would "
        f"initialise at random ({shown}); {consequence}. {advice}",
        missing,
    )
