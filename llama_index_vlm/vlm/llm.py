"""``HuggingFaceVLM``: a local vision-language model as a LlamaIndex chat ``LLM``."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.indices.prompt_helper import ChatPromptHelper
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM

from llama_index_vlm.vlm import context, generation, responses
from llama_index_vlm.vlm.context import Request
from llama_index_vlm.vlm.control_tokens import neutralise
from llama_index_vlm.vlm.families import Family, MultiImageStrategy, PromptOptions
from llama_index_vlm.vlm.loading import LoadedVLM, load_vlm
from llama_index_vlm.vlm.messages import Turn, images_to_blocks, to_turns
from llama_index_vlm.vlm.structured import StructuredOutputMixin

DEFAULT_VLM = "llava-hf/llava-1.5-7b-hf"


class HuggingFaceVLM(StructuredOutputMixin, LLM):
    """A local Hugging Face vision-language model as a LlamaIndex chat LLM.

    Supports Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM, Idefics3, Gemma 3, LLaVA 1.5, LLaVA-NeXT,
    LLaVA-OneVision, PaliGemma and BLIP-2 checkpoints in transformers' format; the family is
    read from the checkpoint's config. Messages are ``ChatMessage`` s of
    ``TextBlock`` s and ``ImageBlock`` s, which is what LlamaIndex's multimodal synthesizers send
    for retrieved ``ImageNode`` pages, so it works as the ``llm`` of
    ``RetrieverQueryEngine.from_args(retriever, llm=vlm, multimodal=True)`` and of
    ``CitationQueryEngine``, streaming and async included.

    Prompts are each checkpoint's own chat template (PaliGemma's task prefixes and BLIP-2's
    ``Question: ... Answer:``; see :mod:`llama_index_vlm.vlm.families`), and every page goes
    into one prompt; PaliGemma and BLIP-2 see one image per prompt, and ``multi_image_strategy``
    decides what happens with several pages.

    Structured answers (``structured_predict``, ``as_structured_llm``, query engines with
    ``output_cls``) are generated under the output class's JSON schema, so they always parse
    (see :mod:`llama_index_vlm.vlm.structured`; needs the ``structured`` extra).

    Example::

        from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock

        vlm = HuggingFaceVLM.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct", max_new_tokens=128)
        answer = vlm.chat([ChatMessage(role="user", blocks=[
            ImageBlock(path="page_3.png"), TextBlock(text="What was the 2023 revenue?")])])
        print(answer.message.content)

        Settings.llm = vlm  # LlamaIndex's engines then use it by default
    """

    name_or_path: str = Field(
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
    device_map: str | dict[str, Any] | None = Field(
        default=None,
        description="accelerate's placement of the model's layers ('auto' spreads a large model "
        "over every GPU, then CPU memory); None puts it whole on `device`.",
    )
    attn_implementation: str = Field(
        default="auto",
        description="Attention kernel: 'auto' (FlashAttention-2 on cuda in half precision when "
        "flash-attn is installed and the model supports it, else 'sdpa'), 'sdpa', "
        "'flash_attention_2' or 'eager'.",
    )
    quantization: str | None = Field(
        default=None,
        description="Quantised weights: '4bit' or '8bit' (bitsandbytes, CUDA GPUs), 'int8' "
        "(torchao int8 weights, CPUs and CUDA GPUs), or None.",
    )
    min_pixels: int | None = Field(
        default=None, gt=0, description="Qwen-VL: the fewest pixels a page is resized to."
    )
    max_pixels: int | None = Field(
        default=None,
        gt=0,
        description="Qwen-VL: the most pixels a page is resized to (a page costs max_pixels / "
        "28**2 image tokens, 32**2 for Qwen3-VL). None: 1280 tokens, or the checkpoint's max.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow code shipped with the checkpoint to run. Off: the supported "
        "families are all in transformers itself.",
    )
    adapter: str | None = Field(
        default=None,
        description="A LoRA adapter directory (from `llama-index-vlm finetune answerer`) put on "
        "the model when it loads.",
    )
    merge_adapter: bool = Field(
        default=False, description="Merge the adapter into the weights (same answers, faster)."
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Other keyword arguments of the model's from_pretrained."
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
        "'tile' tiles the pages into one grid image. Other families ignore it: they see all "
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
    _loaded: LoadedVLM = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self,
        name_or_path: str | os.PathLike[str] = DEFAULT_VLM,
        model: Any | None = None,
        processor: Any | None = None,
        **kwargs: Any,
    ) -> None:
        """Load ``name_or_path`` (or wrap an already loaded ``model`` and ``processor``).

        Prefer :meth:`from_pretrained`, which sorts generation settings from other arguments.
        """
        super().__init__(name_or_path=os.fspath(name_or_path), **kwargs)
        loaded = load_vlm(self, model, processor)
        self._model = loaded.model
        self._processor = loaded.processor
        self._family = loaded.family
        self._loaded = loaded
        self.context_window = context.usable_context_window(
            self.context_window, loaded.model.config, self.name_or_path
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_VLM,
        device: str = "auto",
        dtype: str = "auto",
        quantization: str | None = None,
        **kwargs: Any,
    ) -> HuggingFaceVLM:
        """Load a supported vision-language checkpoint from the hub or a directory.

        Args:
            name_or_path: a hub id (``"Qwen/Qwen2.5-VL-7B-Instruct"``,
                ``"HuggingFaceTB/SmolVLM-256M-Instruct"``, ``"google/gemma-3-4b-it"``,
                ``"llava-hf/llava-onevision-qwen2-0.5b-ov-hf"``, ``"llava-hf/llava-1.5-7b-hf"``,
                ``"google/paligemma-3b-mix-448"``, ...) or a local directory in transformers'
                format.
            device: ``"auto"`` picks cuda, then mps, then cpu.
            dtype: ``"auto"`` picks bfloat16 on cuda and float32 elsewhere.
            quantization: ``"4bit"`` or ``"8bit"`` (bitsandbytes, CUDA GPUs), ``"int8"``
                (torchao int8 weights, CPUs and CUDA GPUs), or None.
            **kwargs: fields of this class (``adapter``: a LoRA adapter directory from
                :func:`~llama_index_vlm.finetune.finetune_answerer`; ``device_map``,
                ``attn_implementation``,
                ``max_pixels``, ``max_new_tokens``, ``temperature``, ``system_prompt``, ...);
                anything else is passed to ``model.generate`` (``repetition_penalty=1.1``, ...).

        Raises:
            InvalidCheckpointError: the path or id holds no checkpoint, one of an unsupported
                architecture (a ColPali retriever, a text-only model, ...), or one whose weights
                are not in safetensors files.
            MissingWeightsError: the checkpoint lacks weights transformers would initialise at
                random.
            UnsupportedDeviceError: the device cannot run the quantisation asked for.

        Example::

            vlm = HuggingFaceVLM.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct", dtype="bfloat16",
                                                 device_map="auto", max_new_tokens=128)
            tuned = HuggingFaceVLM.from_pretrained("google/paligemma-3b-mix-448",
                                                   adapter="./my-answer-adapter")
        """
        fields = set(cls.model_fields) | {"model", "processor", "callback_manager"}
        own = {key: value for key, value in kwargs.items() if key in fields}
        extra = {key: value for key, value in kwargs.items() if key not in fields}
        own["generate_kwargs"] = {**own.get("generate_kwargs", {}), **extra}
        return cls(
            name_or_path=name_or_path, device=device, dtype=dtype, quantization=quantization, **own
        )

    @field_validator("adapter", mode="before")
    @classmethod
    def _path_to_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

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
            model_name=self.name_or_path,
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
        """The model family: ``"Qwen2.5-VL"``, ``"SmolVLM"``, ``"Gemma 3"``, ``"PaliGemma"``..."""
        return self._family.name

    def chat_prompt_helper(self, pages_per_call: int | None = None) -> ChatPromptHelper:
        """A ``ChatPromptHelper`` that lets LlamaIndex's synthesizers send ``pages_per_call``
        retrieved pages to each model call, each page's metadata text next to its image.

        LlamaIndex counts every image as 2125 tokens whatever the model; this helper packs by
        page count instead (see :func:`~llama_index_vlm.vlm.context.pages_prompt_helper`), and
        this LLM still enforces the real limit on the actual prompt.

        Args:
            pages_per_call: pages per model call. Default: as many A4 pages as fit in the
                context window next to ``max_new_tokens`` and 512 tokens of instructions (under
                the image budget); for PaliGemma and BLIP-2 (one page per generation anyway,
                see ``multi_image_strategy``) 16.

        Example::

            from llama_index.core import Settings

            Settings.chat_prompt_helper = vlm.chat_prompt_helper()
            engine = RetrieverQueryEngine.from_args(retriever, llm=vlm, multimodal=True)
        """
        if pages_per_call is None:
            pages_per_call = context.default_pages_per_call(
                self._family,
                self._processor,
                self._loaded.image_token_id,
                self.context_window,
                self.max_new_tokens,
                self._prompt_options(),
            )
        return context.pages_prompt_helper(pages_per_call, self.max_new_tokens)

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
        return responses.to_completion(self._chat(messages, kwargs))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Like :meth:`complete`, streamed."""
        messages = self._completion_messages(prompt, formatted, kwargs)
        requests, generate_kwargs = self._prepare(messages, kwargs)
        return (
            responses.to_completion(response)
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
        return responses.in_threads(self._stream_responses(requests, generate_kwargs))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """:meth:`complete` in a worker thread."""
        messages = self._completion_messages(prompt, formatted, kwargs)
        return responses.to_completion(await asyncio.to_thread(self._chat, messages, kwargs))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """:meth:`stream_complete` without blocking the event loop."""
        messages = self._completion_messages(prompt, formatted, kwargs)
        requests, generate_kwargs = await asyncio.to_thread(self._prepare, messages, kwargs)
        chat_stream = responses.in_threads(self._stream_responses(requests, generate_kwargs))

        async def completions() -> CompletionResponseAsyncGen:
            async for response in chat_stream:
                yield responses.to_completion(response)

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
                generation.on_device(self._model, request.inputs),
                generate_kwargs,
                self._lock,
            )
            answers.append(responses.filed(generated.text, request.label))
            n_tokens += generated.n_tokens
        return responses.chat_response(answers, responses.usage(requests, n_tokens))

    def _stream_responses(
        self, requests: list[Request], generate_kwargs: dict[str, Any]
    ) -> ChatResponseGen:
        numbers = responses.usage(requests, None)
        pieces = self._stream_text(requests, generate_kwargs, numbers)
        return responses.stream_responses(pieces, numbers)

    def _stream_text(
        self, requests: list[Request], generate_kwargs: dict[str, Any], numbers: dict[str, Any]
    ) -> Iterator[str]:
        # The same text as _chat, piece by piece: "label: answer" lines, one per request.
        counted: list[int] = []
        for position, request in enumerate(requests):
            if position:
                yield "\n"
            if request.label is not None:
                yield f"{request.label}: "
            yield from generation.stream(
                self._model,
                self._processor.tokenizer,
                generation.on_device(self._model, request.inputs),
                generate_kwargs,
                self._lock,
                counted,
            )
        responses.complete_usage(numbers, sum(counted))

    def _completion_messages(
        self, prompt: str, formatted: bool, kwargs: dict[str, Any]
    ) -> list[ChatMessage]:
        blocks = images_to_blocks(kwargs.pop("image_documents", None) or [])
        messages = [ChatMessage(role=MessageRole.USER, blocks=[*blocks, TextBlock(text=prompt)])]
        if not formatted and self.system_prompt:
            messages.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=self.system_prompt))
        return messages

    def _generate_kwargs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        own = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        own.update(num_beams=self.num_beams, temperature=self.temperature, top_p=self.top_p)
        return generation.settings(own, self.generate_kwargs, overrides, self._model)

    def _prepare(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[list[Request], dict[str, Any]]:
        """Validate, decode and tokenise: everything before generation, raised eagerly."""
        kwargs = dict(kwargs)
        kwargs.pop("image_documents", None)
        generate_kwargs = self._generate_kwargs(kwargs)
        requests = context.fit(
            to_turns(messages),
            self._requests,
            context_window=self.context_window,
            max_new_tokens=generate_kwargs["max_new_tokens"],
            drop_pages=self.drop_pages_to_fit and self._family.multi_image,
            name_or_path=self.name_or_path,
        )
        return requests, generate_kwargs

    def _prompt_options(self) -> PromptOptions:
        return PromptOptions(
            multi_image_strategy=self.multi_image_strategy,
            language=self.task_language,
            images_kwargs=self._loaded.images_kwargs,
        )

    def _requests(self, turns: list[Turn]) -> list[Request]:
        # User text (questions, page labels, metadata) never reaches the model as its control
        # tokens: a file named "<image>.pdf" must not add an image placeholder to the prompt.
        safe_turns = [turn.with_text(self._neutralise) for turn in turns]
        specs = self._family.prompts(safe_turns, self._processor, self._prompt_options())
        return [
            context.tokenise(self._family, spec, self._processor, self._loaded.image_token_id)
            for spec in specs
        ]

    def _neutralise(self, text: str) -> str:
        return neutralise(text, self._loaded.control_tokens)
