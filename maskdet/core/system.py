"""What the machine offers: the compute device, usable cores, worker counts, mixed precision, and
where a Colab run keeps its folders (Google Drive when mounted)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or empty): CUDA when available, else the CPU."""
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(cap: int = 8) -> int:
    """Worker processes sized to the machine: the usable cores, at most ``cap``."""
    return max(0, min(cap, usable_cores()))


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): there, CPU autocast
    roughly halves a ResNet-50 training step; elsewhere bf16 is emulated and slower than fp32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        return False


PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
"""Looked up when this module loads, in the parent: a forked worker must not call ``dlopen``
(the loader's lock may have been held by another thread at the fork)."""


def die_with_parent(parent: int) -> None:
    """Worker-process initializer: end this process when ``parent`` dies (``kill -9``
    included), so that a killed run leaves no workers writing files or holding memory.
    Linux: the kernel's parent-death signal; elsewhere a thread that watches the parent."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # it died before the signal was set up
        os._exit(1)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision: on CUDA bf16 where supported, else fp16; on a CPU bf16 (callers enable it
    only where :func:`cpu_has_fast_bf16`); a no-op when not ``enabled``."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu" and enabled:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


_CONSTS: dict = {}


def device_constant(values: tuple, device: torch.device) -> torch.Tensor:
    """A small float constant on ``device``, made once per device: a fresh
    ``torch.tensor(..., device="cuda")`` is a blocking copy that waits for all queued GPU work,
    which would stop the host from running ahead of the GPU. Keyed by the tuple's identity
    (hashing the 64x64 DCT matrix on every call cost more than the operations using it); the
    entry keeps the tuple alive, so its identity cannot be reused."""
    key = (id(values), str(device))
    entry = _CONSTS.get(key)
    if entry is None or entry[0] is not values:
        entry = _CONSTS[key] = (values, torch.tensor(values, dtype=torch.float32, device=device))
    return entry[1]


def can_reach(host: tuple[str, int], timeout: float = 4.0) -> bool:
    """True when a TCP connection opens within ``timeout`` seconds (DNS included)."""
    ok: list[bool] = []

    def probe():
        try:
            socket.create_connection(host, timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def storage_path(
    path: str, use_drive: bool = False, drive_root: str = "/content/drive/MyDrive/mask-detection"
) -> str:
    """A relative ``*_DIR`` parameter, moved onto Google Drive when Drive is mounted on Colab
    (``"auto"`` stays: :mod:`maskdet.evaluation.evalsets` resolves it, on Drive too)."""
    if path == "auto":
        return path
    if use_drive and not os.path.isabs(path) and os.path.isdir("/content/drive/MyDrive"):
        return str(Path(drive_root) / path)
    return path
