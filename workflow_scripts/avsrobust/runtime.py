"""Where and how torch runs: the device a job uses and the kernel-selection settings.

One rule for ``auto`` everywhere (features, training, evaluation): the GPU when the job
was given one (CUDA visible), else the CPU, so the same rule runs on GPU and CPU nodes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: ``cuda`` when CUDA is available, else ``cpu``; anything else as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextlib.contextmanager
def determinism(deterministic: bool) -> Iterator[None]:
    """Kernel selection while training; the previous global settings come back afterwards.

    ``True``: ``torch.use_deterministic_algorithms(True, warn_only=True)`` and no cuDNN
    autotuning (same seed, same CUDA weights as far as kernels allow; CPU training is
    deterministic either way). ``False``: any algorithm, cuDNN autotuning on (faster convs
    for fixed shapes). Either way ``torch.utils.deterministic.fill_uninitialized_memory`` is
    off: deterministic mode would otherwise write NaN into every new tensor, one extra
    memory pass per allocation, a debugging aid our code does not need (it never reads
    memory it has not written).
    """
    fill = torch.utils.deterministic
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        fill.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    fill.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]
        fill.fill_uninitialized_memory = prev[3]
