"""ColPali-family multi-vector encoder: page images and queries to unit vectors.

:class:`ColPaliEncoder` wraps transformers' native ``ColPaliForRetrieval``,
``ColQwen2ForRetrieval`` (ColQwen2 and ColQwen2.5) and ``ColModernVBertForRetrieval`` with their
processors. A page becomes hundreds to a thousand 128-dimensional unit vectors (one per image
patch, plus a few prompt tokens), a query a few dozen; the retriever scores them by late
interaction (MaxSim).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from llama_index_vlm.adapters import AdapterInfo
from llama_index_vlm.checkpoints import Architectures, load_model
from llama_index_vlm.errors import (
    ContextWindowExceededError,
    EmptyInputError,
    InvalidRequestError,
)
from llama_index_vlm.image_sizing import reduce_for_processor
from llama_index_vlm.special_tokens import SpecialTokens

DEFAULT_ENCODER = "vidore/colpali-v1.3-hf"

#: The checkpoints :meth:`ColPaliEncoder.from_pretrained` loads: transformers' native retrievers.
RETRIEVERS = Architectures(
    # ColQwen2.5 is a ColQwen2ForRetrieval over a Qwen2.5-VL backbone (model_type "colqwen2").
    classes={
        "colpali": "ColPaliForRetrieval",
        "colqwen2": "ColQwen2ForRetrieval",
        "colmodernvbert": "ColModernVBertForRetrieval",
    },
    description="a ColPali-family retriever",
    examples=("vidore/colpali-v1.3-hf", "vidore/colqwen2-v1.0-hf", "ModernVBERT/colmodernvbert-hf"),
    missing_weights_consequence="embeddings would change on every load",
    missing_weights_advice="Use a complete checkpoint in transformers' format (an '-hf' "
    "checkpoint such as 'vidore/colpali-v1.3-hf').",
)


class ColPaliEncoder:
    """Embed page images and text queries with a ColPali or ColQwen2 checkpoint.

    Build one with :meth:`from_pretrained`. Embeddings are float32 NumPy arrays of shape
    ``(n_vectors, embedding_dim)``, one per input, with L2-normalised rows and the padding rows
    of a batch removed, so the same page gives the same vectors whatever it was batched with.

    Example::

        encoder = ColPaliEncoder.from_pretrained("vidore/colpali-v1.3-hf")
        page_vectors = encoder.embed_images([page_image])        # [(1030, 128)]
        query_vectors = encoder.embed_queries(["2023 revenue"])  # [(n_tokens, 128)]
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        name_or_path: str,
        revision: str | None = None,
        batch_size: int = 4,
        show_progress: bool = True,
        adapter: AdapterInfo | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.name_or_path = name_or_path
        self.revision = revision
        self.adapter = adapter
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._fingerprint: dict[str, Any] | None = None
        self._special_tokens: SpecialTokens | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        revision: str | None = None,
        batch_size: int = 4,
        show_progress: bool = True,
        adapter: str | os.PathLike[str] | None = None,
        merge_adapter: bool = False,
        **model_kwargs: Any,
    ) -> ColPaliEncoder:
        """Load a ColPali-family checkpoint from the hub or a local directory.

        Args:
            name_or_path: a hub id (``"vidore/colpali-v1.3-hf"``, ``"vidore/colqwen2-v1.0-hf"``)
                or a local directory in transformers' native format.
            device: ``"auto"`` picks cuda, then mps, then cpu.
            dtype: ``"auto"`` picks bfloat16 on cuda and float32 elsewhere.
            revision: a hub branch, tag or commit; recorded in the fingerprint.
            batch_size: default batch size of :meth:`embed_images` and :meth:`embed_queries`.
            show_progress: show a progress bar when there is more than one batch.
            adapter: a LoRA adapter directory from
                :func:`~llama_index_vlm.finetune.finetune_retriever` (or peft) to put on the
                model; recorded in the fingerprint, so its vectors never mix with the base
                model's.
            merge_adapter: merge the adapter into the weights (same vectors, faster).
            **model_kwargs: passed to the model's ``from_pretrained`` (``attn_implementation``...).

        Example::

            encoder = ColPaliEncoder.from_pretrained("vidore/colpali-v1.3-hf",
                                                     adapter="./my-adapter")

        Raises:
            InvalidCheckpointError: the path or id holds no checkpoint, or one of another family.
            MissingWeightsError: the checkpoint lacks weights (such as the projection head) that
                transformers would otherwise initialise at random, giving inconsistent scores.
            InvalidRequestError: ``quantization`` asked for (retrievers are not quantised).
        """
        if model_kwargs.get("quantization") or model_kwargs.get("quantization_config"):
            raise InvalidRequestError(
                "retrievers are not quantised: their vectors define the index, and quantised "
                "weights would give other vectors; load it in dtype='bfloat16' to halve its "
                "memory (quantization is for HuggingFaceVLM)"
            )
        loaded = load_model(
            name_or_path,
            RETRIEVERS,
            device=device,
            dtype=dtype,
            revision=revision,
            adapter=adapter,
            merge_adapter=merge_adapter,
            **model_kwargs,
        )
        return cls(
            loaded.model,
            loaded.processor,
            name_or_path=os.fspath(name_or_path),
            revision=revision,
            batch_size=batch_size,
            show_progress=show_progress,
            adapter=loaded.adapter,
        )

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        """The dimension of every output vector (128 for the released ColPali models)."""
        return int(self.model.config.embedding_dim)

    @property
    def max_query_tokens(self) -> int | None:
        """The longest query the model reads, in tokens, counting the prompt the processor adds
        (``"Question: "``, augmentation tokens): its text model's context length (8192 for
        ColPali's Gemma). None when the config does not say.
        """
        text_config = getattr(getattr(self.model.config, "vlm_config", None), "text_config", None)
        limit = getattr(text_config, "max_position_embeddings", None)
        return int(limit) if limit else None

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What identifies this encoder's vector space, stored with an index.

        A JSON-able dict: ``model`` and ``revision`` (for people), ``model_class``,
        ``embedding_dim``, ``weights_digest`` (a hash of the projection head, which differs
        between every released ColPali version and fine-tune) and ``processor`` (the settings
        that change what the model sees), and ``adapter`` (a LoRA adapter's directory, for people
        and for reloading it) and ``adapter_digest`` (a hash of its weights), None without. Two
        encoders may share an index when the fields named in
        :data:`~llama_index_vlm.fingerprint.FINGERPRINT_IDENTITY_KEYS` are equal.
        """
        if self._fingerprint is None:
            self._fingerprint = {
                "model": self.name_or_path,
                "revision": self.revision,
                "model_class": _base_class_name(self.model),
                "embedding_dim": self.embedding_dim,
                "weights_digest": _projection_digest(self.model),
                "processor": _processor_settings(self.processor),
                "adapter": None,
                "adapter_digest": None,
                **(self.adapter.fingerprint_fields() if self.adapter is not None else {}),
            }
        return dict(self._fingerprint)

    def embed_images(
        self,
        images: Sequence[Image.Image],
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> list[np.ndarray]:
        """Embed page images; one ``(n_vectors_i, embedding_dim)`` float32 array per image.

        Images may be in any Pillow mode (RGBA, P, L, CMYK, I;16, ...): each is prepared by
        :meth:`prepare_image` (RGB, reduced to the processor's input size) before it joins a
        batch, so a batch's memory does not grow with the pages' sizes.

        Raises:
            EmptyInputError: ``images`` is empty.
            TypeError: an item is not a PIL image.
        """
        images = list(images)
        if not images:
            raise EmptyInputError("embed_images got no images; pass at least one PIL image")
        for position, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise TypeError(f"images[{position}] is a {type(image).__name__}, not a PIL image")
        return self._embed(images, self.page_inputs, batch_size, show_progress, "Embedding pages")

    def page_inputs(self, images: Sequence[Image.Image]) -> Any:
        """The model's inputs for a batch of page images, prepared as :meth:`embed_images`
        prepares them (:meth:`prepare_image`).

        Fine-tuning builds its batches with it, so training sees the pages search sees.
        """
        return self.processor.process_images(images=[self.prepare_image(image) for image in images])

    def prepare_image(self, image: Image.Image) -> Image.Image:
        """``image`` as the model reads it: RGB (transparency onto white), no more than 200
        times longer than wide (padded with white), and reduced to the size the processor
        resizes it to (:func:`~llama_index_vlm.image_sizing.reduce_for_processor`).

        :meth:`embed_images` calls it on every image; call it yourself to hold many decoded
        pages in little memory (a 9400 x 9400 page becomes 448 x 448 for ColPali) with the
        same embeddings.
        """
        if not isinstance(image, Image.Image):
            raise TypeError(f"image is a {type(image).__name__}, not a PIL image")
        return reduce_for_processor(image, self.processor.image_processor)

    def embed_queries(
        self,
        queries: Sequence[str],
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> list[np.ndarray]:
        """Embed text queries; one ``(n_tokens_i, embedding_dim)`` float32 array per query.

        Raises:
            EmptyInputError: there are no queries, or a query is empty or only whitespace.
            ContextWindowExceededError: a query is longer than :attr:`max_query_tokens`. It
                is refused, not truncated (its end would be silently ignored), before the model
                runs: attention over a query costs memory quadratic in its length.
        """
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        if not queries:
            raise EmptyInputError("embed_queries got no queries; pass at least one string")
        for position, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise EmptyInputError(
                    f"query {position} is empty or only whitespace; ask a question in words"
                )
        queries = [self._as_text(query) for query in queries]
        return self._embed(
            queries,
            lambda batch: self.processor.process_queries(text=batch),
            batch_size,
            show_progress,
            "Embedding queries",
            max_tokens=self.max_query_tokens,
        )

    def embed_image_patches(self, image: Image.Image) -> np.ndarray:
        """Embed one page and return only its image-patch vectors, laid out on the patch grid.

        Returns a float32 array of shape ``(rows, cols, embedding_dim)``: the grid comes from the
        processor (ColPali: a square grid of ``image_seq_length`` patches; ColQwen2: the
        ``image_grid_thw`` of this page divided by the merge size; ColModernVBERT: the square
        grid of its global image, the whole page resized to one tile, which follows the page's
        tiles), never from fixed numbers. Row ``r``, column ``c`` covers the same fraction of
        the page in every family, since each resizes the whole page without cropping. Used for
        similarity maps.
        """
        inputs = self.processor.process_images(images=[self.prepare_image(image)]).to(self.device)
        with torch.inference_mode():
            embeddings = self.model(**inputs).embeddings[0]
        is_patch = inputs["input_ids"][0] == self.processor.image_token_id
        patches = torch.nn.functional.normalize(embeddings.float()[is_patch], dim=-1)
        if "image_grid_thw" in inputs:
            _, height, width = inputs["image_grid_thw"][0].tolist()
            merge = int(self.processor.image_processor.merge_size)
            rows, cols = height // merge, width // merge
        elif getattr(self.processor, "image_seq_len", None):
            # Idefics3-style tiles: the last tile's tokens are the global image, row-major.
            patches = patches[-int(self.processor.image_seq_len) :]
            rows = cols = math.isqrt(patches.shape[0])
        else:
            rows = cols = math.isqrt(patches.shape[0])
        if rows * cols != patches.shape[0]:
            raise ValueError(
                f"{patches.shape[0]} image tokens do not fill a {rows}x{cols} patch grid"
            )
        return patches.reshape(rows, cols, -1).cpu().numpy()

    def query_token_labels(self, query: str) -> list[str]:
        """The token strings of ``query`` as the model sees it, one per query vector.

        They include the processor's prefix (``"Question: "``) and the augmentation tokens
        ColPali appends, so ``labels[i]`` names the i-th row of ``embed_queries([query])[0]``.
        """
        inputs = self.processor.process_queries(text=[self._as_text(query)])
        (vectors_ids,) = inputs["input_ids"].tolist()
        return self.processor.tokenizer.convert_ids_to_tokens(vectors_ids)

    def _as_text(self, query: str) -> str:
        """``query`` as the tokenizer must read it: as text only.

        Lone surrogates (text decoded with errors="surrogateescape") make the tokenizer raise a
        TypeError; they become U+FFFD, as a decoder with errors="replace" would give. A special
        token spelled in the query (``<image>`` crashed the model) is read as text
        (:class:`~llama_index_vlm.special_tokens.SpecialTokens`).
        """
        if self._special_tokens is None:
            image_token = getattr(self.processor, "image_token", None)
            extra = (image_token,) if isinstance(image_token, str) else ()
            self._special_tokens = SpecialTokens(self.processor.tokenizer, extra)
        text = query.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return self._special_tokens.escape(text)

    def _embed(
        self, items, process, batch_size, show_progress, description, max_tokens=None
    ) -> list[np.ndarray]:
        batch_size = batch_size or self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        n_batches = -(-len(items) // batch_size)
        show = self.show_progress if show_progress is None else show_progress
        embeddings: list[np.ndarray] = []
        with tqdm(
            total=len(items), desc=description, unit="item", disable=not show or n_batches < 2
        ) as progress:
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                inputs = process(batch).to(self.device)
                if max_tokens is not None:
                    lengths = inputs["attention_mask"].sum(dim=1).tolist()
                    for offset, length in enumerate(lengths):
                        if length > max_tokens:
                            raise ContextWindowExceededError(
                                f"query {start + offset} is {length} tokens long with the "
                                f"model's prompt, but {self.name_or_path!r} reads at most "
                                f"{max_tokens}; shorten it"
                            )
                with torch.inference_mode():
                    output = self.model(**inputs).embeddings
                embeddings.extend(_unpad(output, inputs["attention_mask"]))
                progress.update(len(batch))
        return embeddings


def _unpad(embeddings: torch.Tensor, attention_mask: torch.Tensor) -> list[np.ndarray]:
    """Split a padded batch into per-item float32 arrays, re-normalised in float32.

    transformers zeroes the rows under the attention mask rather than dropping them; a zero row
    never wins a MaxSim but would bloat the store, so it is removed here. Normalising again in
    float32 makes rows unit length to float32 precision even when the model ran in bfloat16.
    """
    vectors = embeddings.float()
    vectors = torch.nn.functional.normalize(vectors, dim=-1)
    keep = attention_mask.bool()
    return [vectors[row][keep[row]].cpu().numpy() for row in range(vectors.shape[0])]


def _projection_digest(model: torch.nn.Module) -> str:
    # Rounded to bfloat16 first: a float32 checkpoint loaded in bf16 on a GPU and in fp32 on a CPU
    # must give the same digest, since it holds the same model.
    weight = _projection_weight(model).detach().to("cpu", torch.bfloat16).float()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


def _projection_weight(model: torch.nn.Module) -> torch.Tensor:
    """The projection head's weight as the model applies it: with a LoRA adapter's change
    added, so an adapter merged into the weights and the same one kept apart give one digest.
    """
    layer = model.embedding_proj_layer
    weight = layer.weight  # a LoRA layer's own weight is its base layer's
    if hasattr(layer, "get_delta_weight") and not getattr(layer, "merged", False):
        for name in layer.active_adapters:
            if name in layer.lora_A:
                weight = weight + layer.get_delta_weight(name)
    return weight


def _base_class_name(model: torch.nn.Module) -> str:
    """The transformers class under a peft wrapper (or the model's own class)."""
    get_base_model = getattr(model, "get_base_model", None)
    return type(get_base_model() if get_base_model is not None else model).__name__


def _processor_settings(processor: Any) -> dict[str, Any]:
    image_processor = processor.image_processor
    settings: dict[str, Any] = {
        "class": type(processor).__name__,
        "query_prefix": getattr(processor, "query_prefix", None),
        "visual_prompt_prefix": getattr(processor, "visual_prompt_prefix", None),
    }
    if getattr(processor, "image_seq_len", None) is not None:  # ColModernVBERT's tile tokens
        settings["image_seq_len"] = processor.image_seq_len
    for name in (
        "size",
        "image_seq_length",
        "min_pixels",
        "max_pixels",
        "patch_size",
        "merge_size",
        "max_image_size",
        "do_image_splitting",
    ):
        value = getattr(image_processor, name, None)
        if value is not None:
            settings[name] = _jsonable(value)
    return settings


def _jsonable(value: Any) -> Any:
    # Image processors hold sizes as dicts or as transformers' SizeDict dataclass.
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value
