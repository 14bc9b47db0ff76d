"""Give freed heap memory back to the OS in a console that runs for days.

CPython's small objects live in its own arenas, but anything over 512 bytes (long
lines, lists and dict tables, buffers) comes from the C allocator. glibc keeps freed chunks in the
middle of its heap (fragmentation) and only returns the top: RSS of a long-running
wall display creeps up by the free space it holds. `malloc_trim(0)` releases every
free page of every arena (`madvise`); it takes 2-6 ms here and is run in a thread,
every `TRIM_EVERY_S` seconds, by the app (every 5 min let the soak's RSS swing by
~2 MB between trims). Elsewhere (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

TRIM_EVERY_S = 60.0

_trim_fn: Callable[[int], int] | None | bool = False  # False: not looked up yet


def _lookup() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the libc this process runs on
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def available() -> bool:
    global _trim_fn
    if _trim_fn is False:
        _trim_fn = _lookup()
    return _trim_fn is not None


def trim() -> bool:
    """Release the C heap's free pages; True if memory was returned. Blocking (ms):
    call it from a thread."""
    if not available():
        return False
    fn = _trim_fn
    return callable(fn) and bool(fn(0))
