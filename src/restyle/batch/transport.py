"""How a Ray batch's files reach its workers: shared paths (every node sees the same folders), or
copies through Ray's object store with the results written back on the driver (--ray-copy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..images import write_picture
from .local import PairOutcome, PairTask, complete_key


@dataclass(frozen=True)
class CopiedPair:
    """A pair whose files travel through the object store (copy mode), for workers that cannot see
    the driver's folders: the worker paints copies and sends the result back to be written there."""

    task: PairTask
    content: Any  # ObjectRef of the content file's bytes
    style: Any  # ObjectRef of the style file's bytes (sent once for all its pairs)
    done_key: str  # the batch_key of a complete output already there, "" if none: the worker then skips it

    @property
    def index(self) -> int:
        return self.task.index

    @property
    def label(self) -> str:
        return self.task.label


Returned = Tuple[PairOutcome, Optional[bytes], Optional[str]]  # copy mode: the outcome, image and sidecar


class Paths:
    """Path mode, driver side: workers read and write the shared folders themselves."""

    def __init__(self, ray: Any) -> None:
        pass

    def send(self, task: PairTask) -> Any:
        return task

    def receive(self, task: PairTask, result: Any) -> PairOutcome:
        return result


class Copies:
    """Copy mode, driver side: files out through the object store, results back and written here."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.styles: Dict[Path, Any] = {}

    def send(self, task: PairTask) -> Any:
        """A CopiedPair, or a failed outcome when a file cannot be read here."""
        try:
            if task.style not in self.styles:
                self.styles[task.style] = self.ray.put(task.style.read_bytes())
            content = self.ray.put(task.content.read_bytes())
        except OSError as e:
            return PairOutcome(task, "failed", f"{e.filename}: {e.strerror or e}", 2)
        return CopiedPair(task, content, self.styles[task.style], complete_key(task.output))

    def receive(self, task: PairTask, result: Returned) -> PairOutcome:
        outcome, image, side = result
        try:
            if image is not None:
                write_picture(image, task.output, side)
        except OSError as e:
            return PairOutcome(task, "failed", f"cannot write {task.output}: {e.strerror or e}", 1,
                               outcome.seconds, outcome.node, outcome.attempts)
        return outcome
