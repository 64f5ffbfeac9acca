"""Submitting a job, for every form (a painting, a training, a model on a photo or a clip).

Read the multipart form, write the new job's files into its folder and queue it, and answer:
the job (201 and its JSON, or a redirect to its page) or the refusal (the message and status,
as JSON or on the form's page shown again as it was). What a route needs it finds on
`request.app.state` (settings, store, pool), set by app.create_app.
"""

from __future__ import annotations

import shutil
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse

from ..errors import InputError
from .guard import too_large
from .jobs import PAINT, Cap, Job, new_id
from .responses import BodyTooLarge, Busy, _message
from .settings import Settings
from .uploads import UploadError
from .visitors import claim_owner, client_of, with_owner

Submit = Callable[[Request], Awaitable[Job]]
Refusal = Tuple[str, int, Optional[Dict[str, str]]]  # message, HTTP status, headers


async def read_form(request: Request):
    """The multipart form, its files spooled; UploadError for one too large or malformed."""
    try:
        return await request.form(max_files=4, max_fields=20, max_part_size=64 * 1024)
    except BodyTooLarge:
        raise UploadError(too_large(request.app.state.settings), 413) from None
    except Exception as e:  # a malformed body
        raise UploadError(f"could not read the form ({getattr(e, 'detail', e)})", 400) from None


def strings(form: Any) -> Dict[str, str]:
    """A form's text fields (not its files)."""
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def form_values(request: Request) -> Dict[str, str]:
    """The choices a refused form carried (not its files), to show the form again as it was."""
    try:
        form = await request.form()  # parsed already: starlette keeps it
    except Exception:
        return {}
    return strings(form)


def enqueue(request: Request, files: Dict[str, bytes], params: Dict[str, Any], content_file: str,
            style_file: str, content_label: str, style_label: str, *, task: str = PAINT,
            prepare=None, caps: Tuple[Cap, ...] = ()) -> Job:
    """Write a new job's files into its folder and queue it; Busy if the queue is full.

    `prepare(folder)` may check and write more (a clip); its exception removes the folder.
    `caps`: more limits (JobStore.add checks them); CapReached if one is full.
    """
    state = request.app.state
    job_id = new_id()
    folder = state.store.folder(job_id)
    folder.mkdir(parents=True)
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        if prepare is not None:
            prepare(folder)
        job = state.store.add(job_id, params, content_file, style_file, content_label, style_label,
                              owner=claim_owner(request), max_queue=state.settings.max_queue, task=task,
                              client=client_of(request), caps=caps)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if job is None:
        shutil.rmtree(folder, ignore_errors=True)
        raise Busy()
    state.pool.wake()
    return job


def busy_message(settings: Settings) -> str:
    return (f"the server is busy: {settings.max_queue} jobs are queued or running, the most it takes. "
            "Try again in a few minutes.")


async def try_submit(request: Request, how: Submit) -> Tuple[Optional[Job], Optional[Refusal]]:
    """(job, None), or (None, (message, HTTP status, headers)) when `how` refuses the submission."""
    try:
        return await how(request), None
    except (UploadError, InputError) as e:
        return None, (_message(e), e.status if isinstance(e, UploadError) else 400, getattr(e, "headers", None))
    except Busy:
        return None, (busy_message(request.app.state.settings), 503, {"Retry-After": "60"})


async def answer_api(request: Request, how: Submit):
    """The API's answer to a submission: 201 and the job's JSON, or the refusal as {"error": message}."""
    job, refused = await try_submit(request, how)
    if refused is not None:
        message, status, headers = refused
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return with_owner(request, JSONResponse(job.public(), status_code=201, headers={"Location": f"/jobs/{job.id}"}))


async def answer_page(request: Request, how: Submit, page: Callable):
    """A form's answer: a redirect to the job's page, or `page(request, error=, status=, headers=, values=)`,
    the form shown again with the refusal and the choices it carried."""
    job, refused = await try_submit(request, how)
    if refused is not None:
        message, status, headers = refused
        return page(request, error=message, status=status, headers=headers, values=await form_values(request))
    return with_owner(request, RedirectResponse(f"/jobs/{job.id}", status_code=303))


def add_form_routes(router: APIRouter, name: str, page_path: str, api_path: str, how: Submit, page: Callable) -> None:
    """A form's two routes on `router`: POST `api_path` (`api_NAME`, answer_api) and POST `page_path`
    (`page_NAME`, answer_page with `page`), both submitting with `how`."""
    async def api(request: Request):
        return await answer_api(request, how)

    async def form(request: Request):
        return await answer_page(request, how, page)

    router.add_api_route(api_path, api, methods=["POST"], name=f"api_{name}")
    router.add_api_route(page_path, form, methods=["POST"], name=f"page_{name}")
