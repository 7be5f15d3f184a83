"""``HuggingFaceVLM``: a local vision-language model as a LlamaIndex chat ``LLM``."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.indices.prompt_helper import ChatPromptHelper
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM
from PIL import Image

from llama_index_vlm.checkpoints import model_type, raise_if_missing_weights
from llama_index_vlm.errors import ContextWindowExceededError, InvalidCheckpointError
from llama_index_vlm.images import encode_image
from llama_index_vlm.vlm import generation
from llama_index_vlm.vlm.families import FAMILIES, Family, MultiImageStrategy, PromptSpec
from llama_index_vlm.vlm.messages import PageImage, Turn, images_to_blocks, to_turns

DEFAULT_VLM = "llava-hf/llava-1.5-7b-hf"

# Retrievers are vision-language checkpoints too; name the class that loads them.
_RETRIEVER_TYPES = {"colpali", "colqwen2"}
_DONE = object()

# chat_prompt_helper(): the page a default is sized for, the real tokens kept for the system
# prompt and a QA or citation template, and LlamaIndex-estimated tokens kept for those templates
# (with a refine call's existing answer) when packing by page count.
_A4_AT_150_DPI = (1240, 1754)
_INSTRUCTIONS_ROOM = 512
_TEMPLATE_ROOM = 8192
_SINGLE_IMAGE_PAGES_PER_CALL = 16


@dataclass
class _Request:
    """One model call, tokenised: what the model will see and what it costs."""

    inputs: Any
    label: str | None
    n_images: int
    image_tokens: int
    prompt_tokens: int


class HuggingFaceVLM(LLM):
    """A local Hugging Face vision-language model as a LlamaIndex chat LLM.

    Supports LLaVA 1.5, LLaVA-NeXT, PaliGemma and BLIP-2 checkpoints in transformers' format;
    the family is read from the checkpoint's config. Messages are ``ChatMessage`` s of
    ``TextBlock`` s and ``ImageBlock`` s, which is what LlamaIndex's multimodal synthesizers send
    for retrieved ``ImageNode`` pages, so it works as the ``llm`` of
    ``RetrieverQueryEngine.from_args(retriever, llm=vlm, multimodal=True)`` and of
    ``CitationQueryEngine``, streaming and async included.

    Prompts follow each family's own format (see :mod:`llama_index_vlm.vlm.families`).
    LLaVA families see every page in one prompt; PaliGemma and BLIP-2 see one image per prompt,
    and ``multi_image_strategy`` decides what happens with several pages.

    Example::

        from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock

        vlm = HuggingFaceVLM.from_pretrained("llava-hf/llava-1.5-7b-hf", max_new_tokens=128)
        answer = vlm.chat([ChatMessage(role="user", blocks=[
            ImageBlock(path="page_3.png"), TextBlock(text="What was the 2023 revenue?")])])
        print(answer.message.content)

        Settings.llm = vlm  # LlamaIndex's engines then use it by default
    """

    model_name: str = Field(
        default=DEFAULT_VLM,
        description="Hub id or local directory of the checkpoint, in transformers' format.",
    )
    revision: str | None = Field(
        default=None, description="Hub branch, tag or commit of the checkpoint."
    )
    device: str = Field(
        default="auto", description="Torch device; 'auto' picks cuda, then mps, then cpu."
    )
    dtype: str = Field(
        default="auto",
        description="Weights' dtype ('float32', 'bfloat16', ...); 'auto' is bfloat16 on cuda, "
        "float32 elsewhere.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow code shipped with the checkpoint to run. Off: the supported "
        "families are all in transformers itself.",
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments of the model's from_pretrained "
        "(attn_implementation, device_map, quantization_config, ...).",
    )
    max_new_tokens: int = Field(
        default=256, gt=0, description="The most tokens an answer may have."
    )
    do_sample: bool = Field(
        default=False,
        description="Sample the answer (with temperature and top_p) instead of greedy decoding.",
    )
    temperature: float = Field(
        default=1.0,
        ge=0.0,
        description="Sampling temperature, used only with do_sample; 0 means greedy decoding.",
    )
    top_p: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; used only with do_sample."
    )
    num_beams: int = Field(
        default=1, ge=1, description="Beam search width (beams are not streamed token by token)."
    )
    generate_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other keyword arguments of model.generate (repetition_penalty, ...).",
    )
    context_window: int | None = Field(
        default=None,
        gt=0,
        description="Tokens the model attends to: the prompt, its image tokens and the answer. "
        "None reads the model's maximum from its config; a larger value is lowered to it.",
    )
    multi_image_strategy: MultiImageStrategy = Field(
        default="per_page",
        description="For single-image families (PaliGemma, BLIP-2) asked about several pages: "
        "'per_page' asks each page and combines the answers, each prefixed by the page's label; "
        "'tile' tiles the pages into one grid image. LLaVA families ignore it: they see all "
        "pages in one prompt.",
    )
    drop_pages_to_fit: bool = Field(
        default=False,
        description="When the images do not fit in the context window, drop the last images "
        "(a retriever's lowest-scored pages) with a warning until they do, instead of raising "
        "ContextWindowExceededError. Applies to families that see several images per prompt.",
    )
    task_language: str = Field(
        default="en", description="Language code of PaliGemma's task prompts ('answer en ...')."
    )

    _model: Any = PrivateAttr(default=None)
    _processor: Any = PrivateAttr(default=None)
    _family: Family = PrivateAttr(default=None)
    _image_token_id: int | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self,
        model_name: str | os.PathLike[str] = DEFAULT_VLM,
        model: Any | None = None,
        processor: Any | None = None,
        **kwargs: Any,
    ) -> None:
        """Load ``model_name`` (or wrap an already loaded ``model`` and ``processor``).

        Prefer :meth:`from_pretrained`, which sorts generation settings from other arguments.
        """
        super().__init__(model_name=os.fspath(model_name), **kwargs)
        if model is None:
            model, processor, family = _load(self)
        else:
            family = _family_of(str(getattr(model.config, "model_type", "")), self.model_name)
            if processor is None:
                from transformers import AutoProcessor

                processor = AutoProcessor.from_pretrained(self.model_name, revision=self.revision)
        family.check_processor(processor, self.model_name)
        self._model = model.eval()
        self._processor = processor
        self._family = family
        self._image_token_id = _image_token_id(model.config, processor)
        limit = _model_context_window(model.config)
        if self.context_window is None:
            self.context_window = limit
        elif self.context_window > limit:
            warnings.warn(
                f"context_window={self.context_window} is more than {self.model_name!r} "
                f"supports; using its maximum, {limit}",
                UserWarning,
                stacklevel=2,
            )
            self.context_window = limit

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_VLM,
        device: str = "auto",
        dtype: str = "auto",
        **kwargs: Any,
    ) -> HuggingFaceVLM:
        """Load a LLaVA, LLaVA-NeXT, PaliGemma or BLIP-2 checkpoint from the hub or a directory.

        Args:
            name_or_path: a hub id (``"llava-hf/llava-1.5-7b-hf"``,
                ``"llava-hf/llava-v1.6-mistral-7b-hf"``, ``"google/paligemma-3b-mix-448"``,
                ``"Salesforce/blip2-opt-2.7b"``) or a local directory in transformers' format.
            device: ``"auto"`` picks cuda, then mps, then cpu.
            dtype: ``"auto"`` picks bfloat16 on cuda and float32 elsewhere.
            **kwargs: fields of this class (``max_new_tokens``, ``temperature``,
                ``multi_image_strategy``, ``system_prompt``, ...); anything else is passed to
                ``model.generate`` (``repetition_penalty=1.1``, ``min_new_tokens=4``, ...).

        Raises:
            InvalidCheckpointError: the path or id holds no checkpoint, or one of an unsupported
                architecture (a ColPali retriever, a text-only model, ...).
            MissingWeightsError: the checkpoint lacks weights transformers would initialise at
                random.

        Example::

            vlm = HuggingFaceVLM.from_pretrained("google/paligemma-3b-mix-448",
                                                 max_new_tokens=64, multi_image_strategy="tile")
        """
        fields = set(cls.model_fields) | {"model", "processor", "callback_manager"}
        own = {key: value for key, value in kwargs.items() if key in fields}
        extra = {key: value for key, value in kwargs.items() if key not in fields}
        own["generate_kwargs"] = {**own.get("generate_kwargs", {}), **extra}
        return cls(model_name=name_or_path, device=device, dtype=dtype, **own)

    @field_validator("device", "dtype", mode="before")
    @classmethod
    def _torch_to_name(cls, value: Any) -> Any:
        # torch.device("cuda:0") / torch.bfloat16 are stored as "cuda:0" / "bfloat16" so the
        # config stays JSON-able.
        return str(value).removeprefix("torch.") if not isinstance(value, str) else value

    @classmethod
    def class_name(cls) -> str:
        return "HuggingFaceVLM"

    @property
    def metadata(self) -> LLMMetadata:
        """LlamaIndex's view of the model: a chat model, context window from its config."""
        return LLMMetadata(
            context_window=self.context_window or DEFAULT_CONTEXT_WINDOW,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=False,
            model_name=self.model_name,
        )

    @property
    def model(self) -> Any:
        """The transformers model (``LlavaForConditionalGeneration``, ...)."""
        return self._model

    @property
    def processor(self) -> Any:
        """The checkpoint's transformers processor."""
        return self._processor

    @property
    def family(self) -> str:
        """The model family: ``"LLaVA"``, ``"LLaVA-NeXT"``, ``"PaliGemma"`` or ``"BLIP-2"``."""
        return self._family.name

    def chat_prompt_helper(self, pages_per_call: int | None = None) -> ChatPromptHelper:
        """A ``ChatPromptHelper`` that lets LlamaIndex's synthesizers send ``pages_per_call``
        retrieved pages to each model call, each page's metadata text next to its image.

        LlamaIndex's multimodal synthesizers pack pages into calls with a ``ChatPromptHelper``
        that counts every image as 2125 tokens whatever the model (LLaVA-1.5 spends 576,
        PaliGemma-448 1024, BLIP-2 32). Packed by the model's real context window, a LLaVA-1.5
        call gets one page at a time (the others come through refine calls), and a model with
        less than about 2500 tokens of context (BLIP-2) gets a page's text and its image in
        separate calls. This helper packs by page count instead; the real limit is still
        enforced by this LLM on the actual prompt (``ContextWindowExceededError``, or
        ``drop_pages_to_fit``).

        Args:
            pages_per_call: pages per model call. Default: for LLaVA families, as many A4 pages
                as fit in the context window next to ``max_new_tokens`` and 512 tokens of
                instructions; for PaliGemma and BLIP-2 (which see one page per generation
                anyway, see ``multi_image_strategy``) 16.

        Example::

            from llama_index.core import Settings

            Settings.chat_prompt_helper = vlm.chat_prompt_helper()
            engine = RetrieverQueryEngine.from_args(retriever, llm=vlm, multimodal=True)
        """
        if pages_per_call is None:
            pages_per_call = self._default_pages_per_call()
        if pages_per_call < 1:
            raise ValueError(f"pages_per_call must be at least 1, not {pages_per_call}")
        one_pixel = encode_image(Image.new("RGB", (1, 1)), "PNG")
        image_estimate = ImageBlock(image=one_pixel).estimate_tokens()
        # Less than one image's estimate of room for the pages' metadata text, so text never
        # lets one more page in, and an image is never split from its text.
        chunk_size = pages_per_call * image_estimate + image_estimate // 2
        return ChatPromptHelper(
            context_window=chunk_size + self.max_new_tokens + _TEMPLATE_ROOM,
            num_output=self.max_new_tokens,
            chunk_size_limit=chunk_size,
        )

    def _default_pages_per_call(self) -> int:
        if not self._family.multi_image:
            return _SINGLE_IMAGE_PAGES_PER_CALL
        page = Image.new("RGB", _A4_AT_150_DPI, "white")
        specs = self._family.prompts([Turn("user", "?", [PageImage(page, "")])], self._processor)
        per_page = max(1, self._tokenise(specs[0]).image_tokens)
        room = self.context_window - self.max_new_tokens - _INSTRUCTIONS_ROOM
        return max(1, room // per_page)

    # -- LlamaIndex's LLM interface -------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer the last user message, seeing every image of the conversation.

        ``kwargs`` override generation settings for this call (``max_new_tokens=32``, ...).
        """
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Like :meth:`chat`, yielding a ``ChatResponse`` per new piece of text (``delta``)."""
        requests, generate_kwargs = self._prepare(messages, kwargs)
        return self._stream_responses(requests, generate_kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt`` about ``image_documents`` (ImageNodes, ImageBlocks or PIL images).

        ``formatted=False`` puts ``system_prompt`` (if set) before the prompt.

        Example::

            vlm.complete("What is the title?", image_documents=[page_node]).text
        """
        messages = self._completion_messages(prompt, formatted, kwargs)
        return _to_completion(self._chat(messages, kwargs))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Like :meth:`complete`, streamed."""
        messages = self._completion_messages(prompt, formatted, kwargs)
        requests, generate_kwargs = self._prepare(messages, kwargs)
        return (
            _to_completion(response)
            for response in self._stream_responses(requests, generate_kwargs)
        )

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self._chat, messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """:meth:`stream_chat` without blocking the event loop: every step runs in a thread."""
        requests, generate_kwargs = await asyncio.to_thread(self._prepare, messages, kwargs)
        return _in_threads(self._stream_responses(requests, generate_kwargs))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """:meth:`complete` in a worker thread."""
        messages = self._completion_messages(prompt, formatted, kwargs)
        return _to_completion(await asyncio.to_thread(self._chat, messages, kwargs))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """:meth:`stream_complete` without blocking the event loop."""
        messages = self._completion_messages(prompt, formatted, kwargs)
        requests, generate_kwargs = await asyncio.to_thread(self._prepare, messages, kwargs)
        responses = _in_threads(self._stream_responses(requests, generate_kwargs))

        async def completions() -> CompletionResponseAsyncGen:
            async for response in responses:
                yield _to_completion(response)

        return completions()

    # -- Prompt building and generation ----------------------------------------------------------

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        requests, generate_kwargs = self._prepare(messages, kwargs)
        answers = []
        n_tokens = 0
        for request in requests:
            generated = generation.generate(
                self._model,
                self._processor.tokenizer,
                self._on_device(request.inputs),
                generate_kwargs,
                self._lock,
            )
            answers.append(_filed(generated.text, request.label))
            n_tokens += generated.n_tokens
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content="\n".join(answers)),
            additional_kwargs=_usage(requests, n_tokens),
        )

    def _stream_responses(
        self, requests: list[_Request], generate_kwargs: dict[str, Any]
    ) -> ChatResponseGen:
        usage = _usage(requests, None)
        text = ""
        for delta in self._stream_text(requests, generate_kwargs):
            text += delta
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                delta=delta,
                additional_kwargs=usage,
            )
        if not text:
            # An empty answer still ends in one response: LlamaIndex's end-of-stream events
            # need a last response to report.
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=""),
                delta="",
                additional_kwargs=usage,
            )

    def _stream_text(
        self, requests: list[_Request], generate_kwargs: dict[str, Any]
    ) -> Iterator[str]:
        # The same text as _chat, piece by piece: "label: answer" lines, one per request.
        for position, request in enumerate(requests):
            if position:
                yield "\n"
            if request.label is not None:
                yield f"{request.label}: "
            yield from generation.stream(
                self._model,
                self._processor.tokenizer,
                self._on_device(request.inputs),
                generate_kwargs,
                self._lock,
            )

    def _completion_messages(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> list[ChatMessage]:
        blocks = images_to_blocks(kwargs.pop("image_documents", None) or [])
        messages = [ChatMessage(role=MessageRole.USER, blocks=[*blocks, TextBlock(text=prompt)])]
        if not formatted and self.system_prompt:
            messages.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=self.system_prompt))
        return messages

    def _generate_kwargs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
        }
        if overrides.get("do_sample", self.do_sample):
            settings.update(temperature=self.temperature, top_p=self.top_p)
        settings.update(self.generate_kwargs)
        settings.update(overrides)
        if settings["do_sample"] and settings.get("temperature") == 0:
            # LlamaIndex users write temperature=0 for deterministic answers; transformers
            # refuses to sample at 0, and greedy decoding is what it means.
            settings["do_sample"] = False
            settings.pop("temperature")
            settings.pop("top_p", None)
        generation_config = self._model.generation_config
        if generation_config.pad_token_id is None and "pad_token_id" not in settings:
            # Without it transformers warns on every call; eos is what it would use anyway.
            settings["pad_token_id"] = generation_config.eos_token_id
        return settings

    def _prepare(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[list[_Request], dict[str, Any]]:
        """Validate, decode and tokenise: everything before generation, raised eagerly."""
        kwargs = dict(kwargs)
        kwargs.pop("image_documents", None)
        generate_kwargs = self._generate_kwargs(kwargs)
        turns = to_turns(messages)
        return self._fit(turns, generate_kwargs["max_new_tokens"]), generate_kwargs

    def _fit(self, turns: list[Turn], max_new_tokens: int) -> list[_Request]:
        dropped: list[str] = []
        while True:
            specs = self._family.prompts(
                turns,
                self._processor,
                multi_image_strategy=self.multi_image_strategy,
                language=self.task_language,
            )
            requests = [self._tokenise(spec) for spec in specs]
            longest = max(requests, key=lambda request: request.prompt_tokens)
            if longest.prompt_tokens + max_new_tokens <= self.context_window:
                break
            n_images = sum(len(turn.images) for turn in turns)
            if not (self.drop_pages_to_fit and self._family.multi_image and n_images > 1):
                raise ContextWindowExceededError(
                    self._overflow_message(longest, max_new_tokens, dropped)
                )
            dropped.append(_drop_last_image(turns))
        if dropped:
            warnings.warn(
                f"dropped {len(dropped)} page image(s) ({'; '.join(reversed(dropped))}) so the "
                f"prompt fits {self.model_name!r}'s context window: {longest.prompt_tokens} "
                f"prompt tokens ({longest.image_tokens} for {longest.n_images} image(s)) + "
                f"max_new_tokens={max_new_tokens} <= {self.context_window}",
                UserWarning,
                stacklevel=2,
            )
        return requests

    def _overflow_message(self, request: _Request, max_new_tokens: int, dropped: list[str]) -> str:
        text_tokens = request.prompt_tokens - request.image_tokens
        advice = (
            "even with one page left; shorten the question or lower max_new_tokens"
            if dropped
            else "ask about fewer pages, lower max_new_tokens, or pass drop_pages_to_fit=True "
            "to drop the lowest-ranked pages"
        )
        return (
            f"the prompt needs {request.prompt_tokens} tokens ({request.image_tokens} image "
            f"tokens for {request.n_images} image(s) + {text_tokens} text tokens) plus "
            f"max_new_tokens={max_new_tokens}, which is "
            f"{request.prompt_tokens + max_new_tokens} > the context window of "
            f"{self.context_window} tokens of {self.model_name!r}; {advice}"
        )

    def _tokenise(self, spec: PromptSpec) -> _Request:
        options: dict[str, Any] = {"return_tensors": "pt"}
        if spec.add_special_tokens is not None:
            options["add_special_tokens"] = spec.add_special_tokens
        inputs = self._processor(images=spec.images or None, text=spec.text, **options)
        # PaliGemma's processor adds training labels; generate must not get them.
        inputs.pop("labels", None)
        input_ids = inputs["input_ids"]
        image_tokens = 0
        if self._image_token_id is not None:
            image_tokens = int((input_ids == self._image_token_id).sum())
        return _Request(
            inputs=inputs,
            label=spec.label,
            n_images=len(spec.images),
            image_tokens=image_tokens,
            prompt_tokens=int(input_ids.shape[1]),
        )

    def _on_device(self, inputs: Any) -> dict[str, Any]:
        parameter = next(self._model.parameters())
        return {
            name: (
                value.to(parameter.device, parameter.dtype)
                if value.is_floating_point()
                else value.to(parameter.device)
            )
            for name, value in inputs.items()
        }


def _load(vlm: HuggingFaceVLM) -> tuple[Any, Any, Family]:
    """Load the model and processor named by ``vlm``'s fields, refusing what does not fit."""
    import transformers

    from llama_index_vlm.devices import resolve_device, resolve_dtype

    name = vlm.model_name
    family = _family_of(model_type(name, vlm.revision), name)
    device = resolve_device(vlm.device)
    model_kwargs = dict(vlm.model_kwargs)
    model_kwargs.setdefault("trust_remote_code", vlm.trust_remote_code)
    model, loading_info = getattr(transformers, family.model_class).from_pretrained(
        name,
        revision=vlm.revision,
        dtype=resolve_dtype(vlm.dtype, device),
        output_loading_info=True,
        **model_kwargs,
    )
    raise_if_missing_weights(
        name,
        loading_info,
        "its answers would be noise that changes on every load",
        "Use a complete checkpoint in transformers' format (e.g. 'llava-hf/llava-1.5-7b-hf').",
    )
    processor = transformers.AutoProcessor.from_pretrained(
        name, revision=vlm.revision, trust_remote_code=vlm.trust_remote_code
    )
    if "device_map" not in model_kwargs:  # with a device_map, accelerate placed it already
        model = model.to(device)
    return model, processor, family


def _family_of(found_type: str, name: str) -> Family:
    family = FAMILIES.get(found_type)
    if family is not None:
        return family
    supported = ", ".join(repr(key) for key in FAMILIES)
    hint = (
        " (a page retriever: load it with ColPaliEncoder.from_pretrained)"
        if found_type in _RETRIEVER_TYPES
        else ""
    )
    raise InvalidCheckpointError(
        f"{name!r} is a {found_type or 'unknown'!r} checkpoint{hint}, not a supported "
        f"vision-language model; use one whose config has model_type in {supported} "
        "(e.g. 'llava-hf/llava-1.5-7b-hf' or 'google/paligemma-3b-mix-448')"
    )


def _model_context_window(config: Any) -> int:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT_WINDOW


def _image_token_id(config: Any, processor: Any) -> int | None:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    token = getattr(processor, "image_token", None)
    if token is None:
        return None
    return processor.tokenizer.convert_tokens_to_ids(str(token))


def _drop_last_image(turns: list[Turn]) -> str:
    # Retrievers list pages best first, so the last image of the conversation is the weakest.
    for turn in reversed(turns):
        if turn.images:
            return turn.images.pop().label
    raise AssertionError("no image to drop")  # callers check there is more than one


def _filed(text: str, label: str | None) -> str:
    return text if label is None else f"{label}: {text}"


def _usage(requests: list[_Request], completion_tokens: int | None) -> dict[str, Any]:
    prompt_tokens = sum(request.prompt_tokens for request in requests)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "image_tokens": sum(request.image_tokens for request in requests),
        "images": sum(request.n_images for request in requests),
        "model_calls": len(requests),
    }
    if completion_tokens is not None:
        usage["completion_tokens"] = completion_tokens
        usage["total_tokens"] = prompt_tokens + completion_tokens
    return usage


def _to_completion(response: ChatResponse) -> CompletionResponse:
    return CompletionResponse(
        text=response.message.content or "",
        delta=response.delta,
        additional_kwargs=response.additional_kwargs,
    )


def _in_threads(responses: Iterator[ChatResponse]) -> ChatResponseAsyncGen:
    """Iterate a blocking generator from async code, each step in a worker thread."""

    async def gen() -> ChatResponseAsyncGen:
        try:
            while True:
                response = await asyncio.to_thread(next, responses, _DONE)
                if response is _DONE:
                    return
                yield response
        finally:
            try:
                responses.close()  # stops generation when the consumer stops early
            except ValueError:
                pass  # still running in a cancelled step's thread; it ends with its tokens

    return gen()
