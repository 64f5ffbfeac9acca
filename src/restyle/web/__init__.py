"""The web app: upload, watch it paint, keep every result.

    restyle serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR]

Modules: settings (every knob of the server), jobs (the SQLite job store and the
files of each job), uploads (checking what people send), form (the form, built
from StylizeConfig), gallery (the bundled examples), worker (the process that
paints), app (create_app: the app's state, guards, error answers and routers),
guard (the token, body size and security headers), submitting (reading a form,
queueing a job, the answers), responses (error answers, the job page's settings),
visitors (the owner cookie), access (who may view, cancel, share or use a job: the
one rule). Routers, each an APIRouter reading `request.app.state`: paint_routes (the
form, submitting a painting), job_routes (a job's page, cancel, history, the progress
stream), model_routes (training and using feed-forward models), file_routes (a job's
files, the examples). Feed-forward models: trained (training settings, the models a
visitor can use), media (checking clips), tasks (the worker's training, one-pass and
clip jobs).

Nothing here is imported by the core; importing this package imports nothing.
"""
