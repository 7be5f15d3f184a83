"""``ImageTextEncoder``: photos, figures and texts as single vectors in one shared space.

Built on transformers' ``Blip2ForImageTextRetrieval`` (BLIP-2's Q-Former contrastive
embeddings, with its image-text matching head for reranking) or ``SiglipModel``; see
:mod:`~llama_index_vlm.image_search.models` for what each computes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from llama_index_vlm.checkpoints import Architectures, load_model
from llama_index_vlm.errors import EmptyInputError, InvalidCheckpointError
from llama_index_vlm.image_search.models import ARCHITECTURES, ImageTextArchitecture
from llama_index_vlm.images import to_rgb

DEFAULT_IMAGE_TEXT_ENCODER = "Salesforce/blip2-itm-vit-g"

#: The checkpoints :meth:`ImageTextEncoder.from_pretrained` loads.
IMAGE_TEXT_ENCODERS = Architectures(
    classes={model_type: a.model_class for model_type, a in ARCHITECTURES.items()},
    description="an image-text retrieval model (BLIP-2's Q-Former or SigLIP)",
    examples=(DEFAULT_IMAGE_TEXT_ENCODER, "google/siglip-base-patch16-224"),
    missing_weights_consequence="its vectors would change on every load",
    missing_weights_advice="Use an image-text retrieval checkpoint (e.g. "
    f"{DEFAULT_IMAGE_TEXT_ENCODER!r}; BLIP-2 captioning checkpoints such as "
    "'Salesforce/blip2-opt-2.7b' have no retrieval heads).",
)


class ImageTextEncoder:
    """Embed images and texts as L2-normalised vectors of one space (BLIP-2 or SigLIP).

    A text and an image that match have a high dot product; two similar images too. Build one
    with :meth:`from_pretrained`.

    Example::

        encoder = ImageTextEncoder.from_pretrained("Salesforce/blip2-itm-vit-g")
        image_vectors = encoder.embed_images([photo])            # (1, 256)
        text_vectors = encoder.embed_texts(["a dog on a beach"])  # (1, 256)
        scores = text_vectors @ image_vectors.T
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        name_or_path: str,
        revision: str | None = None,
        batch_size: int = 16,
        show_progress: bool = True,
    ) -> None:
        model_type = str(getattr(model.config, "model_type", ""))
        architecture = ARCHITECTURES.get(model_type)
        if architecture is None or type(model).__name__ != architecture.model_class:
            raise InvalidCheckpointError(
                f"{type(model).__name__} is not an image-text retrieval model; use "
                f"{', '.join(a.model_class for a in ARCHITECTURES.values())}"
            )
        self.model = model.eval()
        self.processor = processor
        self.architecture: ImageTextArchitecture = architecture
        self.name_or_path = name_or_path
        self.revision = revision
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._fingerprint: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_IMAGE_TEXT_ENCODER,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        revision: str | None = None,
        batch_size: int = 16,
        show_progress: bool = True,
        **model_kwargs: Any,
    ) -> ImageTextEncoder:
        """Load a BLIP-2 image-text retrieval or a SigLIP checkpoint (hub id or directory).

        Args:
            name_or_path: e.g. ``"Salesforce/blip2-itm-vit-g"`` or
                ``"google/siglip-base-patch16-224"``, or a local directory.
            device: ``"auto"`` picks cuda, then mps, then cpu.
            dtype: ``"auto"`` picks bfloat16 on cuda and float32 elsewhere.
            revision: a hub branch, tag or commit; recorded in the fingerprint.
            batch_size: default batch size of the ``embed_*`` methods.
            show_progress: show a progress bar when there is more than one batch.
            **model_kwargs: passed to the model's ``from_pretrained``.

        Raises:
            InvalidCheckpointError: no checkpoint there, or one of another architecture.
            MissingWeightsError: the checkpoint lacks the retrieval heads (a BLIP-2 captioning
                checkpoint such as ``blip2-opt-2.7b`` has no ITC/ITM heads).
        """
        loaded = load_model(
            name_or_path,
            IMAGE_TEXT_ENCODERS,
            device=device,
            dtype=dtype,
            revision=revision,
            **model_kwargs,
        )
        return cls(
            loaded.model,
            loaded.processor,
            name_or_path=os.fspath(name_or_path),
            revision=revision,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        """The dimension of every vector (256 for BLIP-2, 768 for SigLIP base)."""
        return self.architecture.embedding_dim(self.model)

    @property
    def max_text_tokens(self) -> int:
        """The longest text the model reads, in tokens."""
        return self.architecture.max_text_tokens(self.model)

    @property
    def can_match(self) -> bool:
        """Whether :meth:`match_scores` works (BLIP-2's image-text matching head)."""
        return self.architecture.can_match

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What identifies this encoder's vector space, stored with an image table.

        The same fields as a page encoder's (``model``, ``revision``, ``model_class``,
        ``embedding_dim``, ``weights_digest``, ``processor``), compared by the same rules
        (:func:`~llama_index_vlm.fingerprint.identity`).
        """
        if self._fingerprint is None:
            weight = self.architecture.identifying_weight(self.model)
            weight = weight.detach().to("cpu", torch.bfloat16).float()
            image_processor = self.processor.image_processor
            self._fingerprint = {
                "model": self.name_or_path,
                "revision": self.revision,
                "model_class": type(self.model).__name__,
                "embedding_dim": self.embedding_dim,
                "weights_digest": hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16],
                "processor": {
                    "class": type(self.processor).__name__,
                    "size": dict(getattr(image_processor, "size", None) or {}),
                },
            }
        return dict(self._fingerprint)

    def embed_images(
        self,
        images: Sequence[Image.Image],
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed images (any Pillow mode); a float32 ``(n_images, embedding_dim)`` array.

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

        def embed(batch: list[Image.Image]) -> torch.Tensor:
            pixels = self.processor.image_processor(images=batch, return_tensors="pt")
            pixel_values = pixels["pixel_values"].to(self.device, self.model.dtype)
            return self.architecture.image_embeddings(self.model, pixel_values)

        rgb = [to_rgb(image) for image in images]
        return self._batched(rgb, embed, batch_size, show_progress, "Embedding images")

    def embed_texts(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed texts (captions, queries); a float32 ``(n_texts, embedding_dim)`` array.

        Raises:
            EmptyInputError: no texts, or a text that is empty or only whitespace.
            ContextWindowExceededError: a text is longer than :attr:`max_text_tokens`.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise EmptyInputError("embed_texts got no texts; pass at least one string")
        for position, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise EmptyInputError(f"text {position} is empty or only whitespace")

        def embed(batch: list[str]) -> torch.Tensor:
            inputs = self.architecture.text_inputs(self.processor, batch, self.max_text_tokens)
            inputs = {name: value.to(self.device) for name, value in inputs.items()}
            return self.architecture.text_embeddings(self.model, inputs)

        return self._batched(texts, embed, batch_size, show_progress, "Embedding texts")

    def match_scores(self, text: str, images: Sequence[Image.Image]) -> np.ndarray:
        """The probability, by BLIP-2's image-text matching head, that each image shows ``text``.

        Slower than comparing vectors (the text attends to each image), and sharper: use it to
        rerank the best few candidates of a vector search.

        Raises:
            NotImplementedError: the model has no matching head (SigLIP).
        """
        images = [to_rgb(image) for image in images]
        if not images:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            scores = self.architecture.matching_scores(self.model, self.processor, text, images)
        return scores.float().cpu().numpy()

    def _batched(
        self,
        items: list[Any],
        embed: Callable[[list[Any]], torch.Tensor],
        batch_size: int | None,
        show_progress: bool | None,
        description: str,
    ) -> np.ndarray:
        batch_size = batch_size or self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        show = self.show_progress if show_progress is None else show_progress
        chunks = []
        with tqdm(
            total=len(items),
            desc=description,
            unit="item",
            disable=not show or len(items) <= batch_size,
        ) as progress:
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                with torch.inference_mode():
                    vectors = embed(batch)
                # Normalised again in float32: unit length to float32 precision under bfloat16.
                chunks.append(torch.nn.functional.normalize(vectors.float(), dim=-1).cpu())
                progress.update(len(batch))
        return torch.cat(chunks).numpy()
