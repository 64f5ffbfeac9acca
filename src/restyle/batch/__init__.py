"""Many pictures: the optimiser's local batch (local.py), photos through trained networks
(model_batch.py) and the batch on a Ray cluster (distributed.py)."""

from .distributed import run_batch_ray, run_model_batch_ray, train_styles_ray  # noqa: F401
from .local import BatchReport, paint_pair, run_batch  # noqa: F401
from .model_batch import run_model_batch, train_styles  # noqa: F401
