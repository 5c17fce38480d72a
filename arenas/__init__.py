"""arenas: a multi-arena, thread-safe memory allocator in pure Python, after glibc's ptmalloc2.

It hands out real bytes: every address is the virtual address of memory this
process mapped, readable by ``ctypes`` and by the block's ``memoryview``.

The layers, from the program down to the operating system::

    program     malloc / free / realloc / calloc / memalign / view / Block
       |
    Allocator   arena_get: the calling thread's arena (a thread-local)      allocator.py
       |        free: owning arena found from the address alone             registry.py
       |
    tcache      requests <= 64 KiB: per thread, per size class, no lock     allocator.py
       |        (a miss refills from slabs, a full cache flushes to them)
    slabs       a chunk header + a few equal blocks; addr & -window         slab.py
       |        (each slab one chunk of an arena; bigger requests: chunks)
       |
    Arena 0 (main)      Arena 1          ...   Arena N  (N < arena_max)     arena.py
    lock, bins, top     lock, bins, top        lock, bins, top              bins.py
       |                   |
    main heap           aligned heaps: addr & ~(HEAP_MAX_SIZE-1) -> heap     heap.py
    (sbrk-like)         heap_info | chunk | chunk | ... | top
       |                   |
    chunks: prev_size | size|A|M|P | user bytes ...   (in-band tags)        chunk.py
       |
    mmap regions (MAP_PRIVATE | MAP_NORESERVE), real addresses              memory.py
    large requests: one mapping each                                        large.py

The module-level functions act on a default allocator created on first use;
its tunables can be set with the ``ARENAS_TUNABLES`` environment variable
(``arena_max=2:mmap_threshold=65536``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .allocator import Allocator, Block
from .errors import AllocatorError, DoubleFree, HeapCorruption, InvalidPointer, OutOfMemory
from .hooks import set_mem_functions
from .stats import ArenaStats, Stats
from .tunables import parse_tunables

__all__ = [
    "Allocator",
    "AllocatorError",
    "ArenaStats",
    "Block",
    "DoubleFree",
    "HeapCorruption",
    "InvalidPointer",
    "OutOfMemory",
    "Stats",
    "calloc",
    "default_allocator",
    "free",
    "malloc",
    "memalign",
    "realloc",
    "set_mem_functions",
    "stats",
    "strdup",
    "usable_size",
    "view",
]

__version__ = "0.1.0"

_default: Allocator | None = None
_default_lock = threading.Lock()

# The module-level functions.  Once the default allocator exists, these names
# are rebound to its own (fast) methods, so ``arenas.malloc(n)`` costs exactly
# what ``Allocator.malloc`` costs.  The functions defined below stay behind as
# forwarders for code that imported them before first use.
_API = ("malloc", "free", "calloc", "realloc", "memalign", "usable_size", "view", "strdup")


# While replacement functions are in play (see hooks.set_mem_functions), these
# names are bound to hooks' dispatching functions instead.
_replaced: dict[str, Any] | None = None


def _bind_module_api(allocator: Allocator) -> None:
    if allocator is not _default:
        return
    namespace = globals()
    for name in _API:
        if _replaced is not None and name in _replaced:
            namespace[name] = _replaced[name]
        elif allocator.closed:
            # The forwarders make a new default allocator on the next call.
            namespace[name] = _FORWARDERS[name]
        else:
            namespace[name] = getattr(allocator, name)


def _bind_replacements(replaced: dict[str, Any] | None) -> None:
    """Called by hooks: bind the module names to ``replaced``, or back to the allocator."""
    global _replaced
    _replaced = replaced
    _bind_module_api(default_allocator())


def default_allocator() -> Allocator:
    """The allocator behind the module-level functions, created on first use."""
    global _default
    allocator = _default
    if allocator is None or allocator.closed:
        with _default_lock:
            allocator = _default
            if allocator is None or allocator.closed:
                allocator = Allocator(**parse_tunables(os.environ.get("ARENAS_TUNABLES", "")))
                _default = allocator
                allocator.on_rebind(_bind_module_api)
    return allocator


def _reset_default_lock() -> None:
    global _default_lock
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_default_lock)


def _current(name: str) -> Any:
    """The module-level function ``name`` as bound now (for the forwarders)."""
    allocator = _default
    if allocator is None or allocator.closed:
        default_allocator()
    return globals()[name]


def malloc(size: int) -> int:
    """Allocate ``size`` bytes from the default allocator; return the address."""
    return _current("malloc")(size)  # type: ignore[no-any-return]


def free(addr: int) -> None:
    """Free a block of the default allocator; ``free(0)`` does nothing."""
    _current("free")(addr)


def calloc(n: int, size: int) -> int:
    """Allocate ``n * size`` zeroed bytes; an overflowing product raises ``OutOfMemory``."""
    return _current("calloc")(n, size)  # type: ignore[no-any-return]


def realloc(addr: int, size: int) -> int:
    """Resize a block: ``realloc(0, n)`` mallocs, ``realloc(p, 0)`` frees and returns 0."""
    return _current("realloc")(addr, size)  # type: ignore[no-any-return]


def memalign(alignment: int, size: int) -> int:
    """Allocate ``size`` bytes aligned to ``alignment`` (a power of two)."""
    return _current("memalign")(alignment, size)  # type: ignore[no-any-return]


def usable_size(addr: int) -> int:
    """How many bytes the block at ``addr`` can hold."""
    return _current("usable_size")(addr)  # type: ignore[no-any-return]


def view(addr: int, size: int | None = None) -> memoryview:
    """A writable memoryview of the block at ``addr``, bounded to the block."""
    return _current("view")(addr, size)  # type: ignore[no-any-return]


def strdup(data: bytes | bytearray | memoryview) -> int:
    """A NUL-terminated copy of ``data`` in the default allocator."""
    return _current("strdup")(data)  # type: ignore[no-any-return]


_FORWARDERS = {name: globals()[name] for name in _API}


def stats() -> Stats:
    """A statistics snapshot of the default allocator."""
    return default_allocator().stats()
