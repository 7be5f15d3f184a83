"""How each image-text architecture embeds images and texts into one space, and matches them.

- :class:`Blip2ImageText`: BLIP-2's Q-Former (``Blip2ForImageTextRetrieval``). An image gives one
  normalised embedding per query token (32 for the released checkpoints); BLIP-2 scores a text
  by its best query token. An ANN index needs one vector per image, so the image's vector is the
  normalised mean of its query embeddings; the image-text matching head (ITM), BLIP-2's own
  second stage, then reranks the best candidates with full attention between text and image.
- :class:`SiglipImageText`: SigLIP (``SiglipModel``): one pooled vector per image and per text,
  texts padded to the model's 64 tokens as SigLIP was trained.

The computations are the models' own (the same submodules, in the order of their ``forward``),
split into an image half and a text half so that indexing an image does not run the text
tower and a query does not run the vision tower. Tests check them against ``forward``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from llama_index_vlm.errors import ContextWindowExceededError


class ImageTextArchitecture:
    """One architecture's image and text embeddings. Subclasses are stateless singletons."""

    #: The transformers class that loads the checkpoint.
    model_class: ClassVar[str]
    #: Whether :meth:`matching_scores` is available (an image-text matching head).
    can_match: ClassVar[bool] = False

    def image_embeddings(self, model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(n_images, dim)`` L2-normalised image vectors."""
        raise NotImplementedError

    def text_inputs(self, processor: Any, texts: list[str], max_tokens: int) -> dict[str, Any]:
        """The tokenised texts, as the model was trained to read them.

        Raises:
            ContextWindowExceededError: a text is longer than ``max_tokens``.
        """
        raise NotImplementedError

    def text_embeddings(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """``(n_texts, dim)`` L2-normalised text vectors."""
        raise NotImplementedError

    def max_text_tokens(self, model: Any) -> int:
        """The longest text the model reads, in tokens."""
        raise NotImplementedError

    def embedding_dim(self, model: Any) -> int:
        """The dimension of the shared image-text space."""
        raise NotImplementedError

    def identifying_weight(self, model: Any) -> torch.Tensor:
        """A small weight that differs between checkpoints, hashed into the fingerprint."""
        raise NotImplementedError

    def matching_scores(
        self, model: Any, processor: Any, text: str, images: list[Any]
    ) -> torch.Tensor:
        """``(n_images,)`` probabilities that each image matches ``text`` (ITM head)."""
        raise NotImplementedError(f"{type(self).__name__} has no image-text matching head")


class Blip2ImageText(ImageTextArchitecture):
    """BLIP-2's Q-Former contrastive (ITC) embeddings and its matching (ITM) head."""

    model_class = "Blip2ForImageTextRetrieval"
    can_match = True

    def query_embeddings(self, model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(n_images, num_query_tokens, dim)``: the normalised embedding of each query token,
        as ``Blip2ForImageTextRetrieval.forward`` returns them in ``image_embeds``.
        """
        vision = model.vision_model(pixel_values=pixel_values).last_hidden_state
        mask = torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device)
        queries = model.query_tokens.expand(vision.shape[0], -1, -1)
        hidden = model.qformer(
            query_embeds=queries, encoder_hidden_states=vision, encoder_attention_mask=mask
        ).last_hidden_state
        hidden = hidden.to(model.vision_projection.weight.dtype)
        return torch.nn.functional.normalize(model.vision_projection(hidden), dim=-1)

    def image_embeddings(self, model, pixel_values):
        pooled = self.query_embeddings(model, pixel_values).mean(dim=1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def text_inputs(self, processor, texts, max_tokens):
        inputs = processor.tokenizer(texts, padding=True, return_tensors="pt")
        _check_lengths(inputs["attention_mask"].sum(dim=1).tolist(), max_tokens)
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}

    def text_embeddings(self, model, inputs):
        embedded = model.embeddings(input_ids=inputs["input_ids"])
        hidden = model.qformer(
            query_embeds=embedded, query_length=0, attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        hidden = hidden.to(model.text_projection.weight.dtype)
        # The first token's ([CLS]) embedding, as BLIP-2 was trained.
        return torch.nn.functional.normalize(model.text_projection(hidden[:, 0, :]), dim=-1)

    def max_text_tokens(self, model):
        return int(model.config.qformer_config.max_position_embeddings)

    def embedding_dim(self, model):
        return int(model.config.image_text_hidden_size)

    def identifying_weight(self, model):
        return model.vision_projection.weight

    def matching_scores(self, model, processor, text, images):
        inputs = processor(
            images=images, text=[text] * len(images), padding=True, return_tensors="pt"
        )
        parameter = next(model.parameters())
        inputs = {
            name: value.to(parameter.device, parameter.dtype)
            if value.is_floating_point()
            else value.to(parameter.device)
            for name, value in inputs.items()
        }
        logits = model(**inputs, use_image_text_matching_head=True).logits_per_image
        return logits.float().softmax(dim=-1)[:, 1]


class SiglipImageText(ImageTextArchitecture):
    """SigLIP's pooled image and text embeddings."""

    model_class = "SiglipModel"

    def image_embeddings(self, model, pixel_values):
        pooled = model.get_image_features(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(pooled, dim=-1)

    def text_inputs(self, processor, texts, max_tokens):
        # SigLIP pools the last position and was trained on texts padded to max_length.
        lengths = [len(ids) for ids in processor.tokenizer(texts)["input_ids"]]
        _check_lengths(lengths, max_tokens)
        inputs = processor(
            text=texts, padding="max_length", max_length=max_tokens, return_tensors="pt"
        )
        return dict(inputs)

    def text_embeddings(self, model, inputs):
        pooled = model.get_text_features(**inputs).pooler_output
        return torch.nn.functional.normalize(pooled, dim=-1)

    def max_text_tokens(self, model):
        return int(model.config.text_config.max_position_embeddings)

    def embedding_dim(self, model):
        return int(model.config.vision_config.hidden_size)

    def identifying_weight(self, model):
        return model.text_model.head.weight


#: Supported architectures by the ``model_type`` in a checkpoint's config.
ARCHITECTURES: dict[str, ImageTextArchitecture] = {
    "blip-2": Blip2ImageText(),
    "siglip": SiglipImageText(),
}


def _check_lengths(lengths: list[int], max_tokens: int) -> None:
    for position, length in enumerate(lengths):
        if length > max_tokens:
            raise ContextWindowExceededError(
                f"text {position} is {length} tokens long, but the model reads at most "
                f"{max_tokens}; shorten it"
            )
