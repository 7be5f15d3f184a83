"""The JSON API's requests and responses, as pydantic models (they make ``/openapi.json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

#: ``{"key": value}`` pairs a page's metadata must all equal, as the CLI's ``--filter``.
FilterValues = dict[str, StrictStr | StrictInt | StrictFloat]

_FILTERS_DESCRIPTION = (
    "Only pages whose metadata KEY equals VALUE, for every pair: page fields (page_number, "
    'file_name, doc_id, ...) or your own metadata keys, e.g. {"page_number": 3}.'
)


class SearchRequest(BaseModel):
    """``POST /search``: rank pages by a query, without a language model."""

    query: str = Field(min_length=1, max_length=2000, description="The query, in words.")
    k: int = Field(default=5, ge=1, le=100, description="Pages to return.")
    filters: FilterValues | None = Field(default=None, description=_FILTERS_DESCRIPTION)


class PageHit(BaseModel):
    """One ranked page."""

    page_id: str = Field(description="The page's id (GET /pages/{page_id}/image shows it).")
    doc_id: str = Field(description="The document's id (DELETE /documents/{doc_id}).")
    file_name: str | None = Field(description="The document's name as it was given.")
    page_number: int | None = Field(description="1-based page number within the document.")
    page_count: int | None = Field(default=None, description="Pages in the whole document.")
    score: float | None = Field(description="Late-interaction (MaxSim) score; higher is better.")
    label: str = Field(description='How people read the page\'s name: "report.pdf, page 3".')


class SearchResponse(BaseModel):
    """The best pages, best first."""

    results: list[PageHit]


class AskRequest(BaseModel):
    """``POST /ask``: answer a question from the best pages' images."""

    question: str = Field(min_length=1, max_length=2000, description="The question, in words.")
    k: int = Field(default=3, ge=1, le=20, description="Pages given to the model.")
    filters: FilterValues | None = Field(default=None, description=_FILTERS_DESCRIPTION)
    stream: bool = Field(
        default=False,
        description="Answer as server-sent events: a 'token' event per piece of text as it is "
        "generated, then 'pages' (the cited pages), then 'done' (the whole answer).",
    )


class AskResponse(BaseModel):
    """The answer and the pages it was given, best first."""

    answer: str
    pages: list[PageHit]


class Document(BaseModel):
    """One indexed document."""

    doc_id: str
    file_name: str | None = Field(description="The name it was given (uploaded or on disk).")
    pages: int


class DocumentsResponse(BaseModel):
    """Every indexed document, by name."""

    documents: list[Document]


class DeleteResponse(BaseModel):
    """What ``DELETE /documents/{doc_id}`` removed."""

    doc_id: str
    pages_deleted: int
    pages_left: int


class FailedFileModel(BaseModel):
    """A file of an upload that was not indexed, and why."""

    file_name: str
    reason: str


class Job(BaseModel):
    """An upload being indexed in the background (``GET /jobs/{job_id}``)."""

    job_id: str
    state: Literal["queued", "running", "done", "failed"] = Field(
        description="'done' once every file was tried (some may still have failed: see "
        "'failed'); 'failed' when the whole job stopped (e.g. the store could not be written)."
    )
    file_names: list[str]
    pages_total: int = Field(description="Pages to index in the readable files.")
    pages_done: int = Field(
        description="Pages read and handed to the encoder so far (a few pages ahead of the "
        "pages stored)."
    )
    pages_added: int = 0
    pages_unchanged: int = 0
    doc_ids: list[str] = Field(default_factory=list, description="Documents now indexed.")
    failed: list[FailedFileModel] = Field(default_factory=list)
    error: str | None = None


class GenerationStatus(BaseModel):
    """The answering model's queue."""

    slots: int = Field(description="Answers generated at once.")
    active: int = Field(description="Answers being generated now.")
    waiting: int = Field(description="Askers waiting for a slot.")
    max_waiting: int = Field(description="Askers beyond this many are refused with 503.")


class Health(BaseModel):
    """``GET /health``: 'ready' once the models are loaded and the page cache is warm."""

    status: Literal["loading", "ready", "failed"]
    error: str | None = None


class Limits(BaseModel):
    """What one upload may hold."""

    max_upload_bytes: int
    max_files: int
    max_pages_per_file: int


class Info(BaseModel):
    """``GET /info``: the index, the models and the server's limits."""

    store: str
    pages: int
    documents: int
    retriever: str | None = Field(description="The retriever model the index was built with.")
    vlm: str | None = Field(description="The answering model; None: /ask is not available.")
    version: int = Field(description="The store's table version; it changes on every write.")
    auth: bool = Field(description="Whether a bearer token protects the server.")
    limits: Limits
    generation: GenerationStatus | None
