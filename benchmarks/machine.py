"""A short description of the machine a benchmark ran on, printed and stored with its figures."""

from __future__ import annotations

import os
import platform
from typing import Any

# CPU features that decide matmul speed: AVX-512 BF16 computes bf16 products in vector
# units, AMX in matrix tiles (several times faster again); without either, bf16 is emulated
MATRIX_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def describe_machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/meminfo") as handle:
            total_kb = int(handle.readline().split()[1])
        info["memory_gib"] = round(total_kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and "cpu_model" not in info:
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    info["cpu_matrix_flags"] = [f for f in MATRIX_FLAGS if f in flags]
                    break
    except OSError:
        pass
    return info


def machine_line(info: dict[str, Any]) -> str:
    device = info.get("cuda")
    if not device:
        device = f"{info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores"
        if info.get("cpu_matrix_flags"):
            device += f" ({' '.join(info['cpu_matrix_flags'])})"
    return f"{device}; torch {info['torch']} ({info['torch_threads']} threads); Python {info['python']}"
