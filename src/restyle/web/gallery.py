"""The bundled examples: a gallery of content x style results, rendered once in the background.

Examples are files in the examples folder: the content photos are listed in
CONTENTS, every other image is a style. People pick them by key (the file's
stem), never by path.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .jobs import CANCELLED, DONE, FAILED, GALLERY, Job, JobStore, new_id
from .settings import Settings

CONTENTS = ("tubingen", "brad_pitt", "ballerina")  # examples that are photos, not paintings
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
TITLES = {
    "tubingen": "Neckarfront, Tübingen",
    "starry_night": "Van Gogh, The Starry Night",
    "picasso_selfport1907": "Picasso, Self-Portrait (1907)",
    "the_scream": "Munch, The Scream",
    "shipwreck": "Turner, The Shipwreck",
    "seated-nude": "Picasso, Seated Nude",
}
KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Example:
    key: str
    path: Path
    title: str

    @property
    def url(self) -> str:
        return f"/examples/{self.key}"


def examples(settings: Settings) -> Tuple[List[Example], List[Example]]:
    """(contents, styles) found in the examples folder, sorted by key."""
    folder = settings.examples_dir
    if folder is None or not folder.is_dir():
        return [], []
    found = [
        Example(p.stem, p, TITLES.get(p.stem, p.stem.replace("_", " ").replace("-", " ").title()))
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in SUFFIXES and p.is_file() and KEY.match(p.stem)
    ]
    return [e for e in found if e.key in CONTENTS], [e for e in found if e.key not in CONTENTS]


def find(settings: Settings, key: str) -> Optional[Example]:
    contents, styles = examples(settings)
    return next((e for e in contents + styles if e.key == key), None)


def gallery_key(content: Example, style: Example, settings: Settings) -> str:
    return f"{content.key}x{style.key}@{settings.gallery_size}"


def seed_gallery(store: JobStore, settings: Settings) -> List[str]:
    """Queue every content x style pair not rendered yet (failed ones again); returns new job ids."""
    contents, styles = examples(settings)
    wanted = [gallery_key(c, s, settings) for c in contents for s in styles] if settings.gallery else []
    store.drop_gallery_except(wanted)
    if not settings.gallery:
        return []
    added = []
    for c in contents:
        for s in styles:
            key = gallery_key(c, s, settings)
            old = store.gallery_job(key)
            if old is not None and old.state == CANCELLED and (store.folder(old.id) / old.content_file).is_file():
                store.requeue_gallery(old.id)  # only the server cancels gallery jobs: paint them now
                continue
            if old is not None and old.state not in (FAILED, CANCELLED):
                continue
            if old is not None:
                store.forget_gallery_key(key)
            job_id = new_id()
            folder = store.folder(job_id)
            folder.mkdir(parents=True)
            content_file = "content" + c.path.suffix.lower()
            style_file = "style" + s.path.suffix.lower()
            shutil.copyfile(c.path, folder / content_file)
            shutil.copyfile(s.path, folder / style_file)
            store.add(job_id, {"size": settings.gallery_size}, content_file, style_file, c.title, s.title,
                      kind=GALLERY, gallery_key=key)
            added.append(job_id)
    return added


def gallery(store: JobStore, settings: Settings) -> List[Job]:
    """The gallery's jobs for the current examples and size, done ones first."""
    if not settings.gallery:
        return []
    contents, styles = examples(settings)
    jobs = [store.gallery_job(gallery_key(c, s, settings)) for c in contents for s in styles]
    jobs = [j for j in jobs if j is not None]
    return sorted(jobs, key=lambda j: (j.state != DONE, j.seq))


def style_examples(settings: Settings) -> Dict[str, Example]:
    return {e.key: e for e in examples(settings)[1]}
