"""A clip through a feed-forward network on Ray workers, with the same frames as a run here.

    with ray_network_frames("starry.pt", 4.0, name, address="auto") as stylizer:
        stylize_video("in.mp4", "out.mp4", stylizer, VideoConfig(size=512))

How the temporal blending crosses chunk borders. Frame k's result is
    y_k = blend(net(x_k), warp(y_{k-1}, flow_k), mask_k)         (stylizers.NetworkFrames)
rounded to 8 bits. The costly parts, the network's picture net(x_k) and the optical flow
(flow_k, mask_k) between input frames k-1 and k, depend on the input frames only, not on
y_{k-1}. So the driver cuts the clip into chunks of consecutive frames and sends each to
an actor that holds the network (loaded once per worker) with the grey frame just before
the chunk; the actors return net(x_k) and flow_k for every frame, in parallel. The blend
is the only sequential step and is cheap (a remap and a few multiply-adds per pixel): the
driver does it in frame order as the chunks come back, starting each chunk from the
previous chunk's last result. Every number is made by the same functions on the same
inputs as a run here (NetworkFrames.raw, pipeline.frame_flows, NetworkFrames.blend), so
the frames are identical to a single-machine run's on the same device type, precision and
thread count; the work folder, resume, audio, frame rate and duration are the local
pipeline's own (stylize_video).

Faults: a chunk is a pure function of its frames, so it goes through the batch's driver
(batch/driver.py) with the batch's rules: when a worker dies, Ray restarts it and runs the
chunk again, or the driver queues the chunk for the other workers when Ray gives up on it
(at most driver.MAX_ATTEMPTS runs); each loss is a line of the stylizer's `lost`, and the
frames are the same. Frames are written here, each atomically, and a run stopped for good
resumes from the frames already written.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..batch.distributed import RayWorker, ray_workers
from ..batch.driver import Driver, Failed
from ..errors import ResourceError
from .pipeline import Made, frame_flows, to_tensor
from .stylizers import NetworkFrames

CHUNK_FRAMES = 8  # frames per task: long enough that a task's overhead (~ms) is small beside its frames
AHEAD = 2  # chunks in flight per worker, so none waits for the driver
AGAIN = "run again to continue from the frames written"  # what a run stopped by lost workers says


@dataclass(frozen=True)
class Chunk:
    """Consecutive frames of a clip, and the grey frame before them (None at the clip's start)."""

    index: int
    first: int  # the clip's number of frames[0]
    frames: List[np.ndarray]  # RGB uint8, as read_frames() decodes them
    before: Optional[np.ndarray]
    flow: str  # DIS preset

    @property
    def label(self) -> str:
        return f"frames {self.first}-{self.first + len(self.frames) - 1}"


class ChunkWorker(RayWorker):
    """Holds the network; makes each frame's network picture and flow from the frame before."""

    def setup(self, model: str, device: str, precision: str, temporal_weight: float) -> None:
        from ..networks.feedforward import open_model

        net = open_model(model, device=self.device(device), precision=precision)
        self.frames = NetworkFrames(net.stylize_tensor, temporal_weight)

    def work(self, chunk: Chunk, attempt: int, callback: Callable[[Any], None]) -> List[Made]:
        use_flow = self.frames.temporal_weight > 0
        return [Made(self.frames.raw(to_tensor(rgb)), flow)
                for _, rgb, flow in frame_flows(enumerate(chunk.frames, chunk.first), chunk.before, use_flow,
                                                chunk.flow)]


def _no_network(frame: Any) -> Any:
    raise AssertionError("the Ray workers make the network's pictures")  # ahead() hands every frame's over


class RayNetworkFrames(NetworkFrames):
    """NetworkFrames whose network pictures and flows are made ahead by Ray actors; the blend stays here.

    Its key() is NetworkFrames' key, so a run here can resume a Ray run's work folder and the reverse.
    `lost`: a line per worker lost mid-chunk (whose chunk ran again), as a batch's report has.
    """

    def __init__(self, ray: Any, actors: List[Any], board: Any, temporal_weight: float, name: str,
                 chunk_frames: int = CHUNK_FRAMES) -> None:
        super().__init__(_no_network, temporal_weight, name=name)
        self.ray, self.actors, self.board, self.chunk_frames = ray, actors, board, chunk_frames
        self.lost: List[str] = []
        self.chunks = 0  # chunks sent by this stylizer: their indices, unique on its board
        self.drivers: List[Driver] = []  # one per ahead() call; cancel_inflight() stops what they have in flight

    def cancel_inflight(self) -> None:
        """Cancel the chunks still being made (Ctrl-C, an error): none is rerun (driver.cancel_tasks)."""
        for driver in self.drivers:
            driver.cancel()

    def ahead(self, frames: Iterator[Tuple[int, np.ndarray]], done: int,
              preset: str) -> Iterator[Tuple[int, np.ndarray, Made]]:
        """(k, rgb, what frame k is made from) in order, the chunks after frame `done` made by the actors.

        The chunks go through the batch's driver (batch/driver.py), which hands them out as workers
        come free and runs a lost worker's chunk again; they come back in any order and are handed
        over here in the clip's.
        """
        from .flow import gray

        driver = Driver(self.ray, self.actors, self.board, noun="chunk", verb="making", lost=self.lost)
        self.drivers.append(driver)
        sent: Deque[Chunk] = deque()  # in the clip's order, not yet handed over
        made: Dict[int, List[Made]] = {}  # chunk index -> its frames' pictures and flows, as they come back
        use_flow = self.temporal_weight > 0
        batch: List[np.ndarray] = []
        first, before, last = done, None, None

        def send() -> None:
            chunk = Chunk(self.chunks, first, list(batch), before, preset)
            driver.put(chunk)
            sent.append(chunk)
            batch.clear()
            self.chunks += 1

        def take() -> Iterator[Tuple[int, np.ndarray, Made]]:
            chunk = sent.popleft()
            while chunk.index not in made:
                try:
                    finished = driver.step()
                except ResourceError as e:  # every worker lost
                    raise ResourceError(f"{e}; {AGAIN}") from None
                for c, result in finished:
                    if isinstance(result, Failed):  # its workers died MAX_ATTEMPTS times, or it raised
                        raise ResourceError(f"Ray workers could not make {c.label}: {result.error}; {AGAIN}")
                    made[c.index] = result
            for j, m in enumerate(made.pop(chunk.index)):
                yield chunk.first + j, chunk.frames[j], m

        for k, rgb in frames:
            if k < done:  # resumed from the work folder
                yield k, rgb, Made()
                last = rgb
                continue
            if not batch:
                first, before = k, (gray(last) if use_flow and last is not None else None)
            batch.append(rgb)
            last = rgb
            if len(batch) == self.chunk_frames:
                send()
                while len(sent) >= AHEAD * len(self.actors):
                    yield from take()
        if batch:
            send()
        while sent:
            yield from take()


@contextlib.contextmanager
def ray_network_frames(model: str, temporal_weight: float, name: str, *, device: str = "cpu",
                       precision: str = "fp32", chunk_frames: int = CHUNK_FRAMES,
                       **ray_options: Any) -> Iterator[RayNetworkFrames]:
    """A stylizer for stylize_video() whose actors (one per GPU, or per N cores) hold `model`.

    `ray_options`: address, workers, cpus_per_worker, as for distributed.run_on_ray().
    """
    with ray_workers(ChunkWorker, (model, device, precision, temporal_weight), 1 << 30, device=device,
                     **ray_options) as (ray, actors, board):
        frames = RayNetworkFrames(ray, actors, board, temporal_weight, name, chunk_frames)
        try:
            yield frames
        finally:
            frames.cancel_inflight()  # Ctrl-C: the chunks still being made are not rerun
