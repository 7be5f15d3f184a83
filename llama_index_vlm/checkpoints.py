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
    adapter: str | os.PathLike[str] | None = None,
    merge_adapter: bool = False,
    **model_kwargs: Any,
) -> LoadedCheckpoint:
    """Load the model and processor of a checkpoint that ``architectures`` accepts.

    Args:
        name_or_path: a hub id or a local directory in transformers' format.
        architectures: the model classes by ``model_type`` and the messages for the others.
        device: ``"auto"`` picks cuda, then mps, then cpu (ignored with a ``device_map``,
            where accelerate places the model).
        dtype: ``"auto"`` picks bfloat16 on cuda and float32 elsewhere.
        revision: a hub branch, tag or commit.
        adapter: a LoRA adapter directory (as fine-tuning writes it) to put on the model.
        merge_adapter: merge the adapter into the weights (same outputs, faster).
        **model_kwargs: passed to the model's ``from_pretrained``; ``trust_remote_code`` is off
            unless given, and is passed to the processor's too.

    Raises:
        InvalidCheckpointError: the path or id holds no checkpoint, or one of an architecture
            ``architectures`` does not accept.
        MissingWeightsError: the checkpoint lacks weights transformers would initialise at
            random.

    Example::

        loaded = load_model("vidore/colpali-v1.3-hf", RETRIEVERS, adapter="./my-adapter")
        loaded.model, loaded.processor, loaded.adapter.digest
    """
    import transformers

    from llama_index_vlm.devices import resolve_device, resolve_dtype

    name_or_path = os.fspath(name_or_path)
    found_type = model_type(name_or_path, revision)
    model_class = getattr(transformers, architectures.class_for(found_type, name_or_path))
    resolved_device = resolve_device(device)
    model_kwargs.setdefault("trust_remote_code", False)
    model, loading_info = model_class.from_pretrained(
        name_or_path,
        revision=revision,
        dtype=resolve_dtype(dtype, resolved_device),
        output_loading_info=True,
        **model_kwargs,
    )
    raise_if_missing_weights(
        name_or_path,
        loading_info,
        architectures.missing_weights_consequence,
        architectures.missing_weights_advice,
    )
    processor = load_processor(name_or_path, revision, model_kwargs["trust_remote_code"])
    if "device_map" not in model_kwargs:  # with a device_map, accelerate placed it already
        model = model.to(resolved_device)
    info = None
    if adapter is not None:
        model, info = attach_adapter(model, adapter, merge=merge_adapter)
    return LoadedCheckpoint(model.eval(), processor, found_type, info)


def load_processor(
    name_or_path: str, revision: str | None = None, trust_remote_code: bool = False
) -> Any:
    """A checkpoint's transformers processor (tokenizer and image processor together)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(
        name_or_path, revision=revision, trust_remote_code=trust_remote_code
    )


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
