"""The FastAPI app: its state, the guards, the error answers and the routers; the routes are in routers.

Pages                               JSON API
  GET  /             form, gallery     GET  /api/jobs              history
  POST /jobs         submit the form   POST /api/jobs              submit (multipart)
  GET  /jobs/{id}    watch, download   GET  /api/jobs/{id}         one job
  POST /jobs/{id}/cancel               POST /api/jobs/{id}/cancel  (the submitting browser only)
  GET  /history      past jobs         GET  /api/jobs/{id}/events  progress (server-sent events)
                                       GET  /api/gallery, /api/form, /healthz
  GET  /models, POST /train, /apply, /jobs/{id}/share: feed-forward models
Routers (APIRouter modules whose routes read `request.app.state`): paint_routes.py (the form, submitting
a painting, /api/gallery, /api/form), job_routes.py (a job's page, cancel, history, the API's jobs, the
progress stream, /healthz), model_routes.py (train and use models, result.mp4, poster.jpg), file_routes.py
(/jobs/{id}/result.png (download), preview.jpg, report.json, content, style; /examples/{key}).
Submitting, for every form: submitting.py. The token, body size and security headers: guard.py.

`app.state` holds what the routes share: settings, store (the jobs), pool (the workers), hub (progress
for the streams), templates.

A job's id (128 random bits) is the capability to *see* that job: its page, files
and progress need nothing else, with or without --token, so a job link works
wherever it is followed from. Submitting, the history and the gallery need the
token; cancelling needs the browser that submitted the job (its owner cookie; access.py has the rules).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Optional

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .. import __version__
from . import file_routes, job_routes, model_routes, paint_routes
from . import gallery as gallery_mod
from .datalock import DataDirLock
from .guard import body_limit, guard
from .hub import ProgressHub
from .jobs import JobStore
from .ray_pool import RayWorkerPool
from .responses import ERROR_HANDLERS, BodyLimit
from .settings import Settings
from .worker import WorkerPool

HERE = Path(__file__).parent


def create_app(settings: Optional[Settings] = None, lock: Optional[DataDirLock] = None) -> FastAPI:
    """The app; `lock` is the data folder's lock when `server.serve` took it already (else start-up takes it)."""
    settings = settings or Settings()
    store = JobStore(settings.db_path, settings.jobs_dir, create=False)  # nothing written before start-up
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    pool = WorkerPool(settings, store) if settings.ray_address is None else RayWorkerPool(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own_lock = None
        if lock is None or not lock.held:
            own_lock = DataDirLock(settings.data_dir)
            own_lock.acquire()  # one server per data folder, before any write
        try:
            store.create()
            store.recover()  # jobs left running by a stopped server run again
            gallery_mod.seed_gallery(store, settings)
            hub.start()
            if settings.start_workers:
                pool.start()
            try:
                yield
            finally:
                await hub.stop()
                if settings.start_workers:
                    await asyncio.to_thread(pool.stop)
        finally:
            if own_lock is not None:
                own_lock.release()

    app = FastAPI(title="restyle", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.store = store
    app.state.pool = pool
    hub = ProgressHub(store, job_routes.stream_state, settings.progress_interval,
                      per_client=settings.max_streams_per_client, total=settings.max_streams)
    app.state.hub = hub
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_middleware(BodyLimit, limit=partial(body_limit, settings))
    app.middleware("http")(guard)
    for exc, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(exc, handler)
    # In this order: a path two routers match (/jobs/{id}/cancel, /jobs/{id}/result.mp4) goes to the first.
    for routes in (paint_routes, job_routes, model_routes, file_routes):
        app.include_router(routes.router)
    return app
