"""Who may do what with a job: the one rule every route asks.

A visitor is the sha256 of its browser's owner cookie (visitors.owner_of), or
None for a browser without one. The rules:

  view    anyone with the job's id: the id (128 random bits) is the capability
  cancel  the browser that submitted the job; the gallery's jobs are the server's alone
  share   a training only, and only the browser that trained it
  use     a training's model: the browser that trained it, or anyone once it is shared

A refusal is an UploadError with the status and message the routes answer with.
Whether there is a model to use or share yet (409) is trained.py's question, not this one.
"""

from __future__ import annotations

import secrets
from typing import Optional

from .jobs import TRAIN, USER, Job
from .uploads import UploadError

VIEW, CANCEL, SHARE, USE = "view", "cancel", "share", "use"
ACTIONS = (VIEW, CANCEL, SHARE, USE)


def owns(job: Job, visitor: Optional[str]) -> bool:
    """The visitor submitted this job (the gallery's belong to no visitor)."""
    return (job.kind == USER and job.owner is not None and visitor is not None
            and secrets.compare_digest(job.owner, visitor))


def refusal(action: str, job: Job, visitor: Optional[str]) -> Optional[UploadError]:
    """Why `visitor` may not do `action` with `job` (the error to answer with); None if it may."""
    if action == VIEW:
        return None
    if action == CANCEL:
        if job.kind != USER:
            return UploadError("the gallery's pictures are painted by the server; nobody can cancel them", 403)
        if not owns(job, visitor):
            return UploadError("only the browser that submitted this job can cancel it", 403)
        return None
    if action == SHARE:
        if job.task != TRAIN:
            return UploadError("only a trained model can be shared", 400)
        if not owns(job, visitor):
            return UploadError("only the browser that trained this model can share it", 403)
        return None
    if action == USE:
        if job.task != TRAIN:
            return UploadError("only a training job has a model to use", 404)
        if not (job.shared or owns(job, visitor)):
            return UploadError("this model belongs to the visitor who trained it; they can share it from its page",
                               403)
        return None
    raise ValueError(f"action {action!r} is not one of {', '.join(ACTIONS)}")


def may(action: str, job: Job, visitor: Optional[str]) -> bool:
    return refusal(action, job, visitor) is None


def check(action: str, job: Job, visitor: Optional[str]) -> None:
    """Raise the refusal (UploadError: its status and message) unless `visitor` may do `action` with `job`."""
    error = refusal(action, job, visitor)
    if error is not None:
        raise error
