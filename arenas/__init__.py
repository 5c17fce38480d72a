"""arenas: a multi-arena, thread-safe memory allocator in pure Python, after glibc's ptmalloc2.

It hands out real bytes: every address is the virtual address of memory this
process mapped, readable by ``ctypes`` and by the block's ``memoryview``.

The layers, from the program down to the operating system::

    program     malloc / free / realloc / calloc / memalign / view / Block
       |        module functions: the default allocator, or replacements    dispatch.py
    Allocator   the entry points; free finds a chunk's arena by address    allocator.py
       |        (heap_for_ptr: HeapTable); arena_get: the calling thread's  heap.py
       |        arena, a thread-local lookup, made or shared by the ring    registry.py
       |
    tcache      requests <= 1 KiB: per thread, per size class, no lock      hotpath.py
       |        (a miss refills from slabs, a full cache flushes to them)   tcache.py
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

The module-level functions act on a default allocator created on first use
(:mod:`arenas.dispatch`); its tunables can be set with the ``ARENAS_TUNABLES``
environment variable (``arena_max=2:mmap_threshold=65536``).  They are the
same objects from import on: ``from arenas import malloc`` runs at the speed
of ``arenas.malloc``, whenever it is written.
"""

from __future__ import annotations

from .allocator import Allocator
from .block import Block
from .dispatch import (
    calloc,
    default_allocator,
    free,
    malloc,
    memalign,
    realloc,
    set_mem_functions,
    stats,
    strdup,
    usable_size,
    view,
)
from .errors import AllocatorError, DoubleFree, HeapCorruption, InvalidPointer, OutOfMemory
from .stats import ArenaStats, Stats
from .tunables import (
    M_ARENA_MAX,
    M_ARENA_TEST,
    M_MMAP_MAX,
    M_MMAP_THRESHOLD,
    M_PERTURB,
    M_TOP_PAD,
    M_TRIM_THRESHOLD,
)

__all__ = [
    "M_ARENA_MAX",
    "M_ARENA_TEST",
    "M_MMAP_MAX",
    "M_MMAP_THRESHOLD",
    "M_PERTURB",
    "M_TOP_PAD",
    "M_TRIM_THRESHOLD",
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
