"""The one rule of who may do what with a job (web/access.py), as a table: no server, no store."""

import pytest

pytest.importorskip("fastapi")

from restyle.web import access  # noqa: E402
from restyle.web.access import CANCEL, SHARE, USE, VIEW  # noqa: E402
from restyle.web.jobs import GALLERY, PAINT, TRAIN, USER, Job  # noqa: E402
from restyle.web.uploads import UploadError  # noqa: E402

ME, YOU = "a" * 64, "b" * 64  # visitors: the sha256 of their cookies


def job(kind=USER, task=PAINT, owner=ME, shared=False) -> Job:
    return Job(seq=1, id="j" * 22, kind=kind, owner=owner, gallery_key=None, state="done", created=0.0,
               started=None, finished=None, attempts=0, worker=None, params={}, content_file="", style_file="",
               content_label="", style_label="", progress={}, preview=0, cancel=False, error=None, report=None,
               task=task, shared=shared)


PAINTING, TRAINING = job(), job(task=TRAIN)
SHARED = job(task=TRAIN, shared=True)
EXAMPLE = job(kind=GALLERY, owner=None)  # the gallery's: painted by the server
EXAMPLE_OWNED = job(kind=GALLERY, owner=ME)  # cannot happen today; still nobody's

# (action, job, visitor) -> None (allowed) or the (status, start of the message) every route answers with.
RULES = [
    (VIEW, PAINTING, ME, None), (VIEW, PAINTING, YOU, None), (VIEW, PAINTING, None, None), (VIEW, EXAMPLE, None, None),
    (CANCEL, PAINTING, ME, None),
    (CANCEL, TRAINING, ME, None),
    (CANCEL, PAINTING, YOU, (403, "only the browser that submitted this job can cancel it")),
    (CANCEL, PAINTING, None, (403, "only the browser that submitted this job can cancel it")),
    (CANCEL, EXAMPLE, ME, (403, "the gallery's pictures are painted by the server")),
    (CANCEL, EXAMPLE, None, (403, "the gallery's pictures are painted by the server")),
    (CANCEL, EXAMPLE_OWNED, ME, (403, "the gallery's pictures are painted by the server")),
    (SHARE, TRAINING, ME, None),
    (SHARE, SHARED, ME, None),  # and stop sharing
    (SHARE, TRAINING, YOU, (403, "only the browser that trained this model can share it")),
    (SHARE, SHARED, YOU, (403, "only the browser that trained this model can share it")),
    (SHARE, TRAINING, None, (403, "only the browser that trained this model can share it")),
    (SHARE, PAINTING, ME, (400, "only a trained model can be shared")),
    (SHARE, EXAMPLE, None, (400, "only a trained model can be shared")),
    (USE, TRAINING, ME, None),
    (USE, TRAINING, YOU, (403, "this model belongs to the visitor who trained it")),
    (USE, TRAINING, None, (403, "this model belongs to the visitor who trained it")),
    (USE, SHARED, YOU, None),
    (USE, SHARED, None, None),
    (USE, PAINTING, ME, (404, "only a training job has a model")),
    (USE, EXAMPLE, None, (404, "only a training job has a model")),
]


@pytest.mark.parametrize("action, the_job, visitor, refused", RULES)
def test_the_rule_table(action, the_job, visitor, refused):
    assert access.may(action, the_job, visitor) is (refused is None)
    if refused is None:
        access.check(action, the_job, visitor)  # raises nothing
        return
    with pytest.raises(UploadError) as e:
        access.check(action, the_job, visitor)
    assert (e.value.status, e.value.message[:len(refused[1])]) == refused


def test_ownership_is_the_submitting_browser_of_a_visitors_job():
    assert access.owns(PAINTING, ME) and not access.owns(PAINTING, YOU) and not access.owns(PAINTING, None)
    assert not access.owns(job(owner=None), None)  # no cookie on either side is nobody's, not everybody's
    assert not access.owns(EXAMPLE_OWNED, ME)


def test_an_unknown_action_is_named_with_the_ones_there_are():
    with pytest.raises(ValueError, match="'delete' is not one of view, cancel, share, use"):
        access.may("delete", PAINTING, ME)
