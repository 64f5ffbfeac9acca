"""Count host syncs on the CPU: every call that reads a tensor's value back to Python.

On a GPU each of these waits for the device's queue to drain (cudaStreamSynchronize),
so their count per iteration is what makes a loop crawl there; on the CPU they are
free, so the count is the only way to see them without a GPU.

    with SyncCounter() as syncs:
        optimize(...)
    print(syncs.count, syncs.by_name)

Counted: .item(), .tolist(), bool(), float(), int(), index(), .numpy(), and a tensor
passed where torch takes a Python number (`alpha=`, `value=`), which torch reads with
.item() in C++ (torch.optim.LBFGS's `add_(..., alpha=<0-d tensor>)`).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
         torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy}
SCALAR_ARGS = ("alpha", "value")


class SyncCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter = Counter()

    @property
    def count(self) -> int:
        return sum(self.by_name.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS:
            self.by_name[func.__name__] += 1
        elif any(isinstance(kwargs.get(k), torch.Tensor) for k in SCALAR_ARGS):
            self.by_name[f"{getattr(func, '__name__', func)}(scalar tensor)"] += 1
        return func(*args, **kwargs)
