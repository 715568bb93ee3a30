"""The tool's version and the machine it runs on: library versions, CPU name and its INT8 instructions.

Standard library only, so the package root, the report and the measurement
cache can all ask without importing the pipeline (or torch).
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

__version__ = "0.1.0"

#: Libraries whose versions key the caches and appear in report.json.
LIBRARIES = ("torch", "onnx", "onnxruntime", "numpy", "torch-pruning")


def library_versions() -> dict[str, str]:
    """compressctl's version and the installed versions of ``LIBRARIES`` ("absent" if not installed)."""
    versions = {"compressctl": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cpu_name() -> str:
    """The CPU model ("model name" in /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: CPU flags that decide how ONNX Runtime's INT8 kernels run on x86 (as /proc/cpuinfo names them).
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_features() -> list[str]:
    """The ``INT8_FLAGS`` this CPU has (empty where /proc/cpuinfo is not readable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in INT8_FLAGS if f in flags]
    except OSError:
        pass
    return []


def int8_saturates(features: list[str] | None = None) -> bool:
    """True on an x86 CPU without VNNI or AMX, where ONNX Runtime's u8×s8 kernels sum pairs of products in
    16 bits (``vpmaddubsw``) and saturate unless weights use 7 bits (``reduce_range``)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    found = cpu_features() if features is None else features
    return not any(f in found for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def machine_key() -> list[str]:
    """What keys cached measurements to a machine: host, CPU name and its INT8 instructions."""
    return [platform.node(), cpu_name(), ",".join(cpu_features())]
