"""The JSON API: search, ask, pages, documents, jobs, health and info.

Blocking work (LanceDB reads, MaxSim scoring, model calls) runs in worker threads, so the event
loop keeps serving other clients; model calls take turns through the server's gates.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from llama_index_vlm.errors import UsageError
from llama_index_vlm.server.answers import answer_events, whole_answer
from llama_index_vlm.server.pictures import page_picture, similarity_map_picture
from llama_index_vlm.server.schemas import (
    AskRequest,
    AskResponse,
    DeleteResponse,
    DocumentsResponse,
    Health,
    Info,
    Job,
    SearchRequest,
    SearchResponse,
)
from llama_index_vlm.server.state import (
    ServerLimits,
    ServerState,
    UnknownItemError,
    document_model,
    metadata_filters,
    page_hit,
)
from llama_index_vlm.server.uploads import display_name, save_upload, upload_suffix

_IMAGE_RESPONSES = {200: {"content": {"image/jpeg": {}, "image/png": {}}}}
_SSE_RESPONSES = {
    200: {
        "description": "The answer as JSON, or with `stream: true` as server-sent events "
        "(token ..., pages, done; or error).",
        "content": {"text/event-stream": {}},
    }
}
_CACHE = {"Cache-Control": "private, max-age=3600"}


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _ready(request: Request) -> ServerState:
    state = _state(request)
    state.require_ready()
    return state


#: The server's state, loading or not.
State = Annotated[ServerState, Depends(_state)]
#: The server's state, once its models are loaded (503 before).
Ready = Annotated[ServerState, Depends(_ready)]


#: The API's routes; ``POST /documents`` is made per app by :func:`upload_router` (its size
#: limit is the app's).
router = APIRouter()


@router.get("/health", response_model=Health, tags=["server"])
async def health(state: State) -> JSONResponse:
    """'ready' once the models are loaded (503 with 'loading' or 'failed' before)."""
    status = 200 if state.status == "ready" else 503
    return JSONResponse(state.health().model_dump(), status_code=status)


@router.get("/info", tags=["server"])
async def info(state: State) -> Info:
    """The index (pages, documents, models), the limits and the answer queue."""
    return await run_in_threadpool(state.info)


@router.post("/search", tags=["search"])
async def search(body: SearchRequest, server: Ready) -> SearchResponse:
    """The best pages for a query by late-interaction (MaxSim) score, best first."""
    filters = metadata_filters(body.filters)
    hits = await run_in_threadpool(server.search, body.query, body.k, filters)
    return SearchResponse(results=[page_hit(hit) for hit in hits])


@router.post("/ask", tags=["search"], response_model=AskResponse, responses=_SSE_RESPONSES)
async def ask(body: AskRequest, request: Request, server: Ready) -> Response:
    """Answer a question from the best pages' images, with the pages cited."""
    filters = metadata_filters(body.filters)
    engine = server.query_engine(body.k, filters)
    if await run_in_threadpool(server.count_pages, filters) == 0:
        raise UsageError(
            "no pages match the filters" if filters else "the index holds no pages yet"
        )
    ticket = server.generation.ticket()
    try:
        response = await run_in_threadpool(server.answer, engine, body.question)
    except BaseException:
        ticket.release()
        raise
    if body.stream:
        return StreamingResponse(
            answer_events(response, ticket, server.generation, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            background=BackgroundTask(_release, ticket),
        )
    answer = await whole_answer(response, ticket, request)
    pages = [page_hit(hit) for hit in response.source_nodes]
    return JSONResponse(AskResponse(answer=answer, pages=pages).model_dump())


@router.get("/pages/{page_id}/image", tags=["pages"], responses=_IMAGE_RESPONSES)
async def page_image(
    page_id: str,
    server: Ready,
    size: Annotated[int | None, Query(ge=16, le=4096, description="Fit in size x size")] = None,
) -> Response:
    """The page's stored image, or a JPEG thumbnail fitting ``size`` x ``size``."""
    node = await run_in_threadpool(server.page, page_id)
    data, mimetype = await run_in_threadpool(page_picture, node, size)
    return Response(data, media_type=mimetype, headers=_CACHE)


@router.get("/pages/{page_id}/map", tags=["pages"], responses=_IMAGE_RESPONSES)
async def page_map(
    page_id: str,
    server: Ready,
    query: Annotated[str, Query(min_length=1, max_length=2000)],
    size: Annotated[int | None, Query(ge=16, le=4096, description="Fit in size x size")] = None,
) -> Response:
    """PNG: where on the page the query matched (a heatmap, the hottest region outlined).

    The region, in page pixels, is also in the ``X-Region`` header: left,top,right,bottom.
    """
    node = await run_in_threadpool(server.page, page_id)
    data, region = await run_in_threadpool(
        similarity_map_picture, server.encoder, node, query, size
    )
    headers = {**_CACHE, "X-Region": ",".join(map(str, region))}
    return Response(data, media_type="image/png", headers=headers)


@router.get("/documents", tags=["documents"])
async def documents(server: Ready) -> DocumentsResponse:
    """Every indexed document with its page count."""
    records = await run_in_threadpool(server.documents)
    return DocumentsResponse(documents=[document_model(record) for record in records])


@router.get("/jobs/{job_id}", tags=["documents"])
async def job(job_id: str, server: Ready) -> Job:
    """An upload's progress: pages read of pages total, then what was indexed or failed."""
    found = server.jobs.get(job_id)
    if found is None:
        raise UnknownItemError(f"no job {job_id!r}; POST /documents returns job ids")
    return found


@router.delete("/documents/{doc_id}", tags=["documents"])
async def delete(doc_id: str, server: Ready) -> DeleteResponse:
    """Delete every page of a document (and its uploaded file)."""
    return await run_in_threadpool(server.delete_document, doc_id)


def upload_router(limits: ServerLimits) -> APIRouter:
    """``POST /documents``, bounded by ``limits`` (request size, files per request)."""
    uploads = APIRouter()

    @uploads.post(
        "/documents",
        tags=["documents"],
        status_code=202,
        max_body_size=limits.max_upload_bytes,
        form_limits={"max_files": limits.max_files},
    )
    async def upload(
        files: Annotated[list[UploadFile], File(description="PDFs and page images")],
        server: Ready,
    ) -> Job:
        """Upload PDFs and images; they are indexed in the background (GET /jobs/{job_id}).

        Files are saved under names the server chooses; the names given are labels only.
        """
        if not files:
            raise UsageError("the upload holds no files; send them as the 'files' field")
        suffixes = [upload_suffix(file.filename, file.content_type) for file in files]
        saved = [
            await run_in_threadpool(
                save_upload, file.file, server.upload_dir, suffix, display_name(file.filename)
            )
            for file, suffix in zip(files, suffixes, strict=True)
        ]
        return server.jobs.submit(saved)

    return uploads


async def _release(ticket) -> None:
    # After the response, also when the client left before the stream began.
    ticket.release()
