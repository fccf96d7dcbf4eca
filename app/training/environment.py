"""Where and how models train: the device, mixed precision, loader workers and torch's CPU
threads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from app.training.recipe import Recipe


@dataclass
class Environment:
    """Where and how models train: device, mixed precision, loader workers."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16, as actually used
    num_workers: int
    pin_memory: bool
    notices: list[str] = field(default_factory=list)
    channels_last: bool = False  # image models in NHWC memory format (faster convolutions on CUDA)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"device": str(self.device), "precision": self.precision, "num_workers": self.num_workers,
                             "channels_last": self.channels_last}
        if self.device.type == "cuda":
            d["gpu"] = torch.cuda.get_device_name(self.device)
        else:
            d["threads"] = torch.get_num_threads()
        return d


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_environment(recipe: Recipe) -> Environment:
    """CUDA when present (mixed precision: bf16 where supported, else fp16; pinned memory, loader
    workers and channels_last images), fp32 on the CPU."""
    notices: list[str] = []
    if torch.cuda.is_available():
        device = torch.device("cuda")
        bf16_ok = torch.cuda.is_bf16_supported()
        precision = recipe.precision
        if precision == "auto":
            precision = "bf16" if bf16_ok else "fp16"
        elif precision == "bf16" and not bf16_ok:
            precision = "fp16"
            notices.append("this GPU does not support bfloat16: training in fp16 mixed precision")
        return Environment(device, precision, min(8, cpu_count()), True, notices, channels_last=True)
    if recipe.precision in ("bf16", "fp16"):
        notices.append(f"{recipe.precision} mixed precision needs CUDA: training in fp32 on the CPU")
    # Loader worker processes cost more than they save for the small batches of CPU training.
    return Environment(torch.device("cpu"), "fp32", 0, False, notices)


def effective_batch_size(batch_size: int, n_train: int) -> int:
    """The batch size, lowered for a small train set so that an epoch has at least two batches
    (fastai drops the last incomplete training batch)."""
    return max(2, min(batch_size, n_train // 2))


def configure_threads(requested: int = 0) -> int:
    """Torch's CPU threads: `requested` (Settings.torch_threads) when set, else the cores that are idle now.

    Every core is best on a machine of its own; on one shared with busy processes extra
    threads are far worse than one (OpenMP threads waiting for a descheduled sibling stall
    every kernel: a 2-thread epoch measured 8x slower than a 1-thread one under load).
    """
    if requested > 0:
        n = requested
    else:
        cores = cpu_count()
        try:
            busy = os.getloadavg()[0]
        except OSError:  # not available on this platform
            busy = 0.0
        n = max(1, min(cores, int(cores - busy + 0.5)))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def empty_cuda_cache() -> None:
    """Hand the CUDA caching allocator's free blocks back (between fold models)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
