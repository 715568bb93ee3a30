"""The tool's version and the machine it runs on: library versions, CPU name.

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
