"""A memory bound for the whole process, so a run that would exhaust the machine fails instead of being killed.

The kernel's OOM killer ends a process without a word and loses what it was
writing. With the data segment capped (``RLIMIT_DATA``, which counts the heap
and anonymous mappings, where numpy, torch and ONNX Runtime allocate), an
allocation past the cap fails inside the process instead: numpy raises
``MemoryError`` and ONNX Runtime an allocation error, which the pipeline
turns into a stage failure (exit 3) with one clear line.
"""

from __future__ import annotations

import os
import re

from compressctl.errors import UserError

FRACTION = 0.85  # of the machine's (or the cgroup's) memory
ENV = "COMPRESSCTL_MEMORY_LIMIT"  # e.g. "4G", "512M", or "off"
OUT_OF_MEMORY = re.compile(r"bad_alloc|Failed to allocate memory|Unable to allocate|out of memory", re.IGNORECASE)


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, or a smaller cgroup limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as handle:
                value = handle.read().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if not match:
        raise UserError(f"{ENV} must look like 4G or 512M, or be 'off' (got '{text}')")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def bound_memory() -> int | None:
    """Cap this process's data segment (``$COMPRESSCTL_MEMORY_LIMIT``, default 85 % of memory); returns the cap."""
    import resource

    wanted = os.environ.get(ENV, "").strip()
    if wanted.lower() == "off":
        return None
    limit = parse_size(wanted) if wanted else int(machine_memory() * FRACTION)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        return limit
    return soft


def current_limit() -> int | None:
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_DATA)
    return None if soft == resource.RLIM_INFINITY else soft


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or bool(OUT_OF_MEMORY.search(str(exc)))


def out_of_memory_message() -> str:
    limit = current_limit()
    cap = f" (this run may use {limit / (1 << 30):.1f} GB; {ENV} sets it)" if limit else ""
    return f"ran out of memory{cap}; use a smaller batch size, fewer samples or smaller inputs"


def resident_bytes() -> int | None:
    """This process's resident set size, from ``/proc`` (None where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def trim() -> None:
    """Hand freed heap pages back to the system (glibc keeps them after large frees, so RSS stays high).

    No ``gc.collect()``: sessions go by reference counting, and a collection costs about 80 ms once torch
    is imported (this runs at every phase of every sitting)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
