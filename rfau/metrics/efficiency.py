"""Cost of a step: wall seconds, peak CPU RSS (sampled) and peak CUDA memory, the latter also as
its rise over the memory allocated when the step began (what the step itself needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import torch


@contextmanager
def measure(interval: float = 0.02) -> Iterator[dict]:
    """Yield a dict filled on exit with seconds, peak_rss_mb (the whole process's), and
    peak_cuda_mb, cuda_rise_mb (max allocated, and its rise over the memory allocated at
    entry; None on CPU)."""
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], proc.memory_info().rss)

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_cuda = torch.cuda.memory_allocated()
    t = threading.Thread(target=sample, daemon=True)
    out: dict = {}
    start = time.perf_counter()
    t.start()
    try:
        yield out
    finally:
        if cuda:
            torch.cuda.synchronize()
        out["seconds"] = time.perf_counter() - start
        stop.set()
        t.join()
        out["peak_rss_mb"] = max(peak[0], proc.memory_info().rss) / 2**20
        out["peak_cuda_mb"] = out["cuda_rise_mb"] = None
        if cuda:
            peak_cuda = torch.cuda.max_memory_allocated()
            out["peak_cuda_mb"] = peak_cuda / 2**20
            out["cuda_rise_mb"] = (peak_cuda - start_cuda) / 2**20
