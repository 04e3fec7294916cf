"""The new tensor storages a piece of PyTorch code creates (not views of its inputs): how many bytes
of them are alive at the peak, and the biggest one. The no-copy requirements of 03/04 measure with
it in the harvest kernel; ``memory.peak_memory`` builds on it for the lessons and benchmarks."""

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class NewStorages(TorchDispatchMode):
    """While active: ``live`` and ``peak`` bytes of the storages operations create and that are still
    alive, and ``largest`` = (bytes, operation) of the biggest one. Buffers that an operation
    allocates and frees inside itself are not seen (a fused kernel's workspace, say)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.largest = (0, "")
        self.counted = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tensors_in(args) + tensors_in(list((kwargs or {}).values()))}
        for tensor in tensors_in(output):
            storage = tensor.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if key in inputs or key in self.counted or nbytes == 0:
                continue  # a view or an in-place result, or counted already
            self.counted.add(key)
            self.live += nbytes
            self.largest = max(self.largest, (nbytes, func.overloadpacket.__name__))
            weakref.finalize(storage, self._freed, key, nbytes)
        self.peak = max(self.peak, self.live)
        return output

    def _freed(self, key, nbytes):
        self.counted.discard(key)
        self.live -= nbytes


def tensors_in(tree) -> list[torch.Tensor]:
    """The tensors of an operation's arguments or outputs (nested in lists and tuples)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, list | tuple):
        return [t for item in tree for t in tensors_in(item)]
    return []
