"""The web app: upload, watch it paint, keep every result.

    restyle serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR]

Modules: settings (every knob of the server), jobs (the SQLite job store and the
files of each job), uploads (checking what people send), form (the form, built
from StylizeConfig), gallery (the bundled examples), worker (the process that
paints), app (FastAPI routes, the progress stream, pages), visitors (the owner
cookie), access (who may view, cancel, share or use a job: the one rule).
Feed-forward models: trained (training settings, the models a visitor can use),
media (checking clips), tasks (the worker's training, one-pass and clip jobs),
model_routes (their routes and pages).

Nothing here is imported by the core; importing this package imports nothing.
"""
