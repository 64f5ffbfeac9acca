"""Video: stylize a clip frame by frame without flicker (needs the `video` extra: PyAV, OpenCV).

    from restyle.video import NetworkFrames, VideoConfig, stylize_video
    stylize_video("in.mp4", "out.mp4", NetworkFrames(model.stylize_tensor), VideoConfig(size=320))

io.py reads and writes clips, flow.py estimates motion and occlusions, temporal.py holds
the temporal term, stylizers.py paints one frame per engine, pipeline.py drives a clip.
"""

from .pipeline import FrameDone, Previous, VideoConfig, VideoDone, VideoResult, VideoStart, stylize_video
from .stylizers import NetworkFrames, OptimiserFrames

__all__ = ["stylize_video", "VideoConfig", "VideoResult", "VideoStart", "FrameDone", "VideoDone", "Previous",
           "NetworkFrames", "OptimiserFrames"]
