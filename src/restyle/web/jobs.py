"""The job store: one SQLite table (standard library) and a folder of files per job.

The server writes new jobs and cancel requests; worker processes claim jobs,
write progress and results. Everything a job needs lives in its row and its
folder, so stopping the server at any moment loses nothing: a job that was
running is queued again on the next start (`recover`).

    data_dir/restyle.db
    data_dir/jobs/<id>/content.jpg  style.png  preview.jpg  result.png  report.json

A job's `task` says what the worker does with it: paint (the optimiser, the
form's job), train (a feed-forward network for the painting: model.pt,
model.ckpt.pt), stylize (a photo in one pass of a network) or video (a clip
through a network: clip.mp4 in, result.mp4 out).
"""

from __future__ import annotations

import bisect
import json
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINAL = (DONE, FAILED, CANCELLED)
USER, GALLERY = "user", "gallery"
PAINT, TRAIN, STYLIZE, VIDEO = "paint", "train", "stylize", "video"
TASKS = (PAINT, TRAIN, STYLIZE, VIDEO)
MAX_ATTEMPTS = 3  # a job interrupted this many times (it may be what kills the worker) fails

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- queue order
    id TEXT NOT NULL UNIQUE,                 -- secrets.token_urlsafe: the only way to reach a job
    kind TEXT NOT NULL,                      -- user | gallery
    owner TEXT,                              -- sha256 of the submitting browser's cookie: whose history
    gallery_key TEXT UNIQUE,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker INTEGER,
    params TEXT NOT NULL,                    -- JSON: StylizeConfig fields chosen for this job
    content_file TEXT NOT NULL,              -- names we chose inside the job folder
    style_file TEXT NOT NULL,
    content_label TEXT NOT NULL,             -- for display only, never a path
    style_label TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    preview INTEGER NOT NULL DEFAULT 0,      -- version of preview.jpg
    cancel INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    report TEXT,
    task TEXT NOT NULL DEFAULT 'paint',      -- paint | train | stylize | video
    shared INTEGER NOT NULL DEFAULT 0,       -- train: its owner lets anyone with the link use the model
    client TEXT                              -- sha256 of the submitting address: what one address may queue
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, kind, seq);
"""
# Columns added since the first release: an older database gets them on start-up.
ADDED_COLUMNS = (("task", "TEXT NOT NULL DEFAULT 'paint'"), ("shared", "INTEGER NOT NULL DEFAULT 0"),
                 ("client", "TEXT"))
COUNTED_BY = (None, "owner", "client")  # a Cap counts the whole server's jobs, one browser's or one address's


@dataclass(frozen=True)
class Cap:
    """At most `most` queued or running user jobs (of `task`, if given) on the whole server (`by` None),
    or of the submitting browser (`by` "owner") or address (`by` "client")."""

    most: int
    task: Optional[str] = None
    by: Optional[str] = None

    def __post_init__(self) -> None:
        if self.by not in COUNTED_BY:
            raise ValueError(f"by {self.by!r} is not one of {COUNTED_BY}")


class CapReached(Exception):
    """A job was not queued: `cap` is full."""

    def __init__(self, cap: Cap) -> None:
        super().__init__(f"{cap.most} {cap.task or 'job'}(s) queued or running" + (f" per {cap.by}" if cap.by else ""))
        self.cap = cap


@dataclass
class Job:
    seq: int
    id: str
    kind: str
    owner: Optional[str]
    gallery_key: Optional[str]
    state: str
    created: float
    started: Optional[float]
    finished: Optional[float]
    attempts: int
    worker: Optional[int]
    params: Dict[str, Any]
    content_file: str
    style_file: str
    content_label: str
    style_label: str
    progress: Dict[str, Any]
    preview: int
    cancel: bool
    error: Optional[str]
    report: Optional[Dict[str, Any]]
    task: str = PAINT
    shared: bool = False
    client: Optional[str] = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d["params"] = json.loads(d["params"])
        d["progress"] = json.loads(d["progress"])
        d["report"] = json.loads(d["report"]) if d["report"] else None
        d["cancel"] = bool(d["cancel"])
        d["shared"] = bool(d.get("shared"))
        return cls(**d)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def result_url(self) -> Optional[str]:
        """Where the finished job's result is (a training job's result is its model, used from its page)."""
        if self.state != DONE or self.task == TRAIN:
            return None
        return f"/jobs/{self.id}/result.{'mp4' if self.task == VIDEO else 'png'}"

    def public(self) -> Dict[str, Any]:
        """What the API shows of a job (no file system paths)."""
        return {
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind,
            "task": self.task,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "attempts": self.attempts,
            "params": self.params,
            "content": self.content_label,
            "style": self.style_label,
            "progress": self.progress,
            "preview": self.preview,
            "error": self.error,
            "result": self.result_url,
            "page": f"/jobs/{self.id}",
        }


def new_id() -> str:
    return secrets.token_urlsafe(16)  # 128 bits: unguessable


class JobStore:
    """Thread- and process-safe: every call opens its own short connection."""

    def __init__(self, db_path: Path, jobs_dir: Path, *, create: bool = True) -> None:
        self.db_path = Path(db_path)
        self.jobs_dir = Path(jobs_dir)
        if create:
            self.create()

    def create(self) -> None:
        """Make the folder and the table if missing (the server does this once it holds the data folder)."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            have = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
            for name, decl in ADDED_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        try:
            yield db
        finally:
            db.close()

    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    # --- the server's side ---------------------------------------------------

    def add(
        self,
        job_id: str,
        params: Dict[str, Any],
        content_file: str,
        style_file: str,
        content_label: str,
        style_label: str,
        *,
        kind: str = USER,
        owner: Optional[str] = None,
        gallery_key: Optional[str] = None,
        max_queue: Optional[int] = None,
        task: str = PAINT,
        client: Optional[str] = None,
        caps: Sequence[Cap] = (),
    ) -> Optional[Job]:
        """Queue a job whose files are already in its folder; None if the queue is full.

        `caps` are checked in the same transaction as the insert (two requests at once
        cannot both take the last place): CapReached names the first that is full.
        """
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if max_queue is not None and self._count(db, Cap(max_queue)) >= max_queue:
                    db.execute("ROLLBACK")
                    return None
                full = next((c for c in caps if self._count(db, c, owner, client) >= c.most), None)
                if full is not None:
                    db.execute("ROLLBACK")
                    raise CapReached(full)
                db.execute(
                    "INSERT INTO jobs (id, kind, owner, gallery_key, state, created, params, content_file, style_file,"
                    " content_label, style_label, task, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, kind, owner, gallery_key, QUEUED, time.time(), json.dumps(params),
                     content_file, style_file, content_label, style_label, task, client),
                )
                db.execute("COMMIT")
            except CapReached:
                raise
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return self.get(job_id)

    @staticmethod
    def _count(db: sqlite3.Connection, cap: Cap, owner: Optional[str] = None, client: Optional[str] = None) -> int:
        """The queued or running user jobs `cap` counts (none for a browser or address not known)."""
        where, args = "kind=? AND state IN (?, ?)", [USER, QUEUED, RUNNING]
        if cap.task is not None:
            where, args = where + " AND task=?", args + [cap.task]
        if cap.by is not None:
            who = owner if cap.by == "owner" else client
            if who is None:
                return 0
            where, args = where + f" AND {cap.by}=?", args + [who]
        (n,) = db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", args).fetchone()
        return n

    def cap_reached(self, caps: Sequence[Cap], owner: Optional[str], client: Optional[str]) -> Optional[Cap]:
        """The first of `caps` already full, if any: a check before reading an upload (`add` checks again)."""
        with self._db() as db:
            return next((c for c in caps if self._count(db, c, owner, client) >= c.most), None)

    def get(self, job_id: str) -> Optional[Job]:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def gallery_job(self, key: str) -> Optional[Job]:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE gallery_key=?", (key,)).fetchone()
        return Job.from_row(row) if row else None

    def list(self, owner: Optional[str], limit: int = 100, task: Optional[str] = None) -> List[Job]:
        """One owner's user jobs (of one task if given), newest first (no owner: none).

        By creation time: a training job that gave its turn away (`yield_turn`) took a new seq.
        """
        if not owner:
            return []
        where, args = ("", []) if task is None else (" AND task=?", [task])
        with self._db() as db:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE kind=? AND owner=?{where} ORDER BY created DESC, seq DESC LIMIT ?",
                (USER, owner, *args, limit),
            ).fetchall()
        return [Job.from_row(r) for r in rows]

    def set_shared(self, job_id: str, shared: bool) -> Optional[Job]:
        with self._db() as db:
            db.execute("UPDATE jobs SET shared=? WHERE id=? AND task=?", (int(shared), job_id, TRAIN))
        return self.get(job_id)

    def queue_position(self, job: Job) -> int:
        """How many jobs run (a gallery one too) or wait before this queued one."""
        with self._db() as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state=? OR (kind=? AND state=? AND seq<?)",
                (RUNNING, USER, QUEUED, job.seq),
            ).fetchone()
        return n

    def request_cancel(self, job_id: str) -> Optional[Job]:
        """A queued job is cancelled at once; a running one at its next iteration."""
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state=?, finished=? WHERE id=? AND state=?", (CANCELLED, time.time(), job_id, QUEUED)
            )
            db.execute("UPDATE jobs SET cancel=1 WHERE id=? AND state=?", (job_id, RUNNING))
        return self.get(job_id)

    def recover(self, worker: Optional[int] = None, *, counted: bool = True) -> List[str]:
        """Queue again the jobs a stopped server or a dead worker left running.

        Each run counts as an attempt (MAX_ATTEMPTS: then it fails); `counted=False` puts them back as
        requeue() does, for runs lost through no fault of theirs (a Ray cluster gone, ray_pool.py).
        """
        where, args = ("state=?", [RUNNING]) if worker is None else ("state=? AND worker=?", [RUNNING, worker])
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE jobs SET cancel=0 WHERE kind=? AND cancel=1", (GALLERY,))  # none may cancel those
            ids = [r["id"] for r in db.execute(f"SELECT id FROM jobs WHERE {where}", args)]
            for job_id in ids if not counted else ():
                db.execute("UPDATE jobs SET state=?, worker=NULL, attempts=MAX(0, attempts-1) WHERE id=?",
                           (QUEUED, job_id))
            for job_id in ids if counted else ():
                db.execute(
                    "UPDATE jobs SET state=CASE WHEN attempts>=? THEN ? ELSE ? END,"
                    " error=CASE WHEN attempts>=? THEN ? ELSE error END, worker=NULL WHERE id=?",
                    (MAX_ATTEMPTS, FAILED, QUEUED, MAX_ATTEMPTS,
                     f"interrupted {MAX_ATTEMPTS} times; given up", job_id),
                )
            db.execute("COMMIT")
        return ids

    def note_queued(self, note: Optional[str]) -> None:
        """Say `note` on every queued job (progress "notice": its page shows it), or take it away (None)."""
        with self._db() as db:
            if note:
                db.execute("UPDATE jobs SET progress=json_set(progress, '$.notice', ?) WHERE state=?", (note, QUEUED))
            else:
                db.execute("UPDATE jobs SET progress=json_remove(progress, '$.notice') WHERE state=?"
                           " AND json_extract(progress, '$.notice') IS NOT NULL", (QUEUED,))

    # --- the worker's side ---------------------------------------------------

    def claim(self, worker: int) -> Optional[Job]:
        """Take the oldest queued job, user jobs before the gallery's."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT id FROM jobs WHERE state=? ORDER BY kind=? DESC, seq LIMIT 1", (QUEUED, USER)
            ).fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            db.execute(
                "UPDATE jobs SET state=?, started=?, attempts=attempts+1, worker=?, progress='{}' WHERE id=?",
                (RUNNING, time.time(), worker, row["id"]),
            )
            db.execute("COMMIT")
        return self.get(row["id"])

    def set_progress(self, job_id: str, progress: Dict[str, Any], preview: bool = False) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET progress=?, preview=preview+? WHERE id=?",
                (json.dumps(progress), int(preview), job_id),
            )

    def cancel_requested(self, job_id: str) -> bool:
        with self._db() as db:
            row = db.execute("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row["cancel"])

    def finish(self, job_id: str, state: str, *, error: Optional[str] = None, report: Any = None) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state=?, finished=?, error=?, report=? WHERE id=?",
                (state, time.time(), error, json.dumps(report) if report is not None else None, job_id),
            )

    def others_waiting(self, job_id: str) -> bool:
        """Is a user job other than this one queued (a training job then gives its turn away)?"""
        with self._db() as db:
            row = db.execute("SELECT 1 FROM jobs WHERE state=? AND kind=? AND id<>? LIMIT 1",
                             (QUEUED, USER, job_id)).fetchone()
        return row is not None

    def yield_turn(self, job_id: str) -> None:
        """Queue a running job again at the back of the queue (not an attempt lost); it resumes later."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            (last,) = db.execute("SELECT MAX(seq) FROM jobs").fetchone()
            db.execute(
                "UPDATE jobs SET state=?, worker=NULL, attempts=MAX(0, attempts-1), seq=? WHERE id=? AND state=?",
                (QUEUED, last + 1, job_id, RUNNING),
            )
            db.execute("COMMIT")

    def requeue(self, job_id: str) -> None:
        """Put back a job the worker stopped because the server is stopping (not an attempt lost)."""
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state=?, worker=NULL, attempts=MAX(0, attempts-1) WHERE id=? AND state=?",
                (QUEUED, job_id, RUNNING),
            )

    def forget_gallery_key(self, key: str) -> None:
        """Detach a failed gallery job from its key so that a new one can take it."""
        with self._db() as db:
            db.execute("UPDATE jobs SET gallery_key=NULL WHERE gallery_key=?", (key,))

    def drop_gallery_except(self, keys: List[str]) -> int:
        """Cancel queued gallery jobs whose examples are gone (or whose size changed); all of them for []."""
        # An empty list must not become `NOT IN (NULL)`, which matches nothing.
        unwanted = f" AND gallery_key NOT IN ({','.join('?' * len(keys))})" if keys else ""
        with self._db() as db:
            cur = db.execute(
                f"UPDATE jobs SET state=?, finished=? WHERE kind=? AND state=?{unwanted}",
                (CANCELLED, time.time(), GALLERY, QUEUED, *keys),
            )
            return cur.rowcount

    def requeue_gallery(self, job_id: str) -> None:
        """Queue again a gallery job that was cancelled (the gallery turned off, or an old server's doing)."""
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state=?, finished=NULL, cancel=0, error=NULL, progress='{}', worker=NULL"
                " WHERE id=? AND kind=? AND state=?",
                (QUEUED, job_id, GALLERY, CANCELLED),
            )

    def snapshot(self, ids: List[str]) -> Dict[str, Job]:
        """Several jobs in one query (the event streams' poller)."""
        if not ids:
            return {}
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
        return {r["id"]: Job.from_row(r) for r in rows}

    def queue_positions(self, jobs: List[Job]) -> Dict[str, int]:
        """queue_position for several queued jobs, in one query."""
        if not jobs:
            return {}
        with self._db() as db:
            (running,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state=?", (RUNNING,)).fetchone()
            seqs = [r[0] for r in db.execute("SELECT seq FROM jobs WHERE kind=? AND state=? ORDER BY seq",
                                             (USER, QUEUED))]
        return {j.id: running + bisect.bisect_left(seqs, j.seq) for j in jobs}
