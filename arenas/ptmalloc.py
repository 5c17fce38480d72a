"""The glibc policy: ptmalloc2's decisions, made exactly as glibc 2.36 makes them.

``Allocator(policy="glibc")`` puts every chunk where glibc 2.36 on x86-64
would put it, offset for offset from its heap's base, so that a trace
recorded from a real program replays to the same addresses (see
``python -m stress replay TRACE --policy glibc --fidelity``) and a learner's
how2heap experiment shows what it shows under glibc.  It is the same
allocator as the default policy (the same heaps, chunk headers, bins,
arenas and mappings): only the paths a request takes differ::

    malloc(n) --> tcache_get: this thread's tcache bin, LIFO    (no arena lock)
       | empty, or n > tcache_max_bytes
       v
    the thread's arena (arena_get), under its lock: _int_malloc
       fastbin (LIFO; the rest of the bin goes to the tcache)
       small bin, oldest first (the rest goes to the tcache)
       [a large request: malloc_consolidate]
       the unsorted bin, oldest first: the last remainder for a small request
          if it is alone there; an exact fit goes to the tcache (or is returned);
          anything else is sorted into its small or large bin
       the request's own large bin: smallest fit (glibc's skip-list order)
       the binmap: last(bin) of the next non-empty bin, split
       the top chunk; else malloc_consolidate and again; else sysmalloc:
          a mapping (n >= mmap_threshold), sbrk-like growth with top_pad
          (main arena), grow the heap or start a new one (other arenas)

    free(p) --> a mapping: unmapped, and the mmap threshold follows it up
       | a chunk: its arena's lock, then _int_free
       v
    the tcache if its bin has room; a fastbin (size <= mxfast); else merge
    with free neighbours into the unsorted bin or the top; a merged chunk of
    64 KiB or more consolidates the fastbins and trims the top

What stays ours: the bin links are Python lists and dicts, not pointers in
the freed memory, and every header is checked against the arena's records
before anything changes.  So glibc's checks ("double free or corruption
(fasttop)", "free(): double free detected in tcache 2") are raised as
:class:`~arenas.errors.DoubleFree` for *every* double free, not only the ones
glibc happens to catch, and a forged pointer never becomes an allocation.

A chunk's state, and where it is recorded (all under its arena's lock, except
where said)::

    handed out      arena.in_use[mem]; its successor's PREV_INUSE set
    in a tcache     arena.in_use[mem] too (glibc counts it in use), and
                    policy.tcached[mem]; in one thread's Tcache.bins
    in a fastbin    arena.in_use[mem] too, and bins.fast / bins.fast_sizes
    free            bins.free, and exactly one of unsorted / small / large
    top             arena.top

Locking: an arena's fields, its bins included, are guarded by its lock.  A
:class:`Tcache` belongs to its thread: only that thread pushes (under the
lock of the arena it frees into) and pops (with no lock: ``list.pop`` and
``dict.pop`` are atomic, under the GIL and in free-threaded builds).
``GlibcPolicy.tcached`` is shared: single atomic dict operations only, and
readers that walk it (``check``, the views) copy it first.  The list of
threads' tcaches is guarded by ``GlibcPolicy.lock``.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .arena import Arena
from .bins import MIN_LARGE_SIZE, NFASTBINS, GlibcBins, largebin_index
from .chunk import (
    CHUNK_HDR_SZ,
    MALLOC_ALIGNMENT,
    MAX_REQUEST,
    MINSIZE,
    PREV_INUSE,
    SIZE_BITS,
    SIZE_SZ,
    calloc_request,
    checked_address,
    checked_request,
    request2size,
)
from .errors import CLOSED, AllocatorError, DoubleFree, HeapCorruption, InvalidPointer, OutOfMemory
from .heap import Heap, HeapTable
from .large import MmappedChunks
from .memory import PAGE_SIZE, Region, SystemBudget, page_align
from .slab import SlabTable
from .tunables import Params

if TYPE_CHECKING:
    from .registry import ArenaRegistry

__all__ = [
    "FIRST_HEAP_HEADER",
    "GLIBC_HEAP_INFO_SIZE",
    "TCACHE_MAX_BINS",
    "TCACHE_STRUCT_SIZE",
    "GlibcArena",
    "GlibcPolicy",
    "Tcache",
    "csize2tidx",
]

_memmove = ctypes.memmove
_memset = ctypes.memset

TCACHE_MAX_BINS = 64
# sizeof(tcache_perthread_struct): 64 uint16_t counts and 64 entry pointers.
TCACHE_STRUCT_SIZE = 2 * TCACHE_MAX_BINS + 8 * TCACHE_MAX_BINS
# sizeof(heap_info) in 2.36 (ar_ptr, prev, size, mprotect_size, pagesize, pad)
# and sizeof(struct malloc_state): what comes before an arena's first chunk.
GLIBC_HEAP_INFO_SIZE = 48
MALLOC_STATE_SIZE = 2200
# The first chunk of an arena's first heap: after heap_info and malloc_state,
# moved up so that its user address is 16-byte aligned (0x8d0).
FIRST_HEAP_HEADER = (
    (GLIBC_HEAP_INFO_SIZE + MALLOC_STATE_SIZE + CHUNK_HDR_SZ + MALLOC_ALIGNMENT - 1)
    & ~(MALLOC_ALIGNMENT - 1)
) - CHUNK_HDR_SZ
HEAP_MIN_SIZE = 32 * 1024
# A freed chunk that merges to this size consolidates the fastbins and trims.
FASTBIN_CONSOLIDATION_THRESHOLD = 65536
MAX_ITERS = 10000


def csize2tidx(size: int) -> int:
    """The tcache bin of a chunk size (glibc's ``csize2tidx``)."""
    return (size - MINSIZE + MALLOC_ALIGNMENT - 1) // MALLOC_ALIGNMENT


def max_fast(mxfast: int) -> int:
    """The largest fastbin chunk for ``M_MXFAST`` bytes (glibc's ``set_max_fast``)."""
    return (mxfast + SIZE_SZ) & ~(MALLOC_ALIGNMENT - 1) if mxfast else MINSIZE // 2


def new_heap_size(size: int, top_pad: int, heap_max_size: int) -> int:
    """How much of a new heap glibc's ``new_heap`` makes usable, or 0 when it cannot."""
    if size + top_pad < HEAP_MIN_SIZE:
        size = HEAP_MIN_SIZE
    elif size + top_pad <= heap_max_size:
        size += top_pad
    elif size > heap_max_size:
        return 0
    else:
        size = heap_max_size
    return page_align(size)


class Tcache:
    """One thread's tcache (glibc's ``tcache_perthread_struct``) and its arena.

    * ``bins[i]``  user addresses of the chunks of size class ``i``, LIFO (the
                   list's end is the bin's head); ``len`` is glibc's ``counts[i]``;
    * ``struct``   the user address of the chunk that holds the struct in glibc
                   (the first chunk a thread takes), 0 until ``tcache_init``;
    * ``arena``    glibc's ``thread_arena``.
    """

    __slots__ = ("arena", "bins", "shut", "struct", "thread")

    def __init__(self, arena: GlibcArena) -> None:
        self.arena = arena
        self.bins: list[list[int]] = [[] for _ in range(TCACHE_MAX_BINS)]
        self.struct = 0
        self.shut = False
        self.thread = threading.get_ident()


class _Anchor:
    """Kept in the thread-local beside a :class:`Tcache`: when the thread ends, the
    thread-local drops it, and the tcache is queued for glibc's thread shutdown."""

    __slots__ = ("exited", "tcache")

    def __init__(self, tcache: Tcache, exited: list[Tcache]) -> None:
        self.tcache = tcache
        self.exited = exited

    def __del__(self) -> None:
        if not self.tcache.shut:
            self.exited.append(self.tcache)


class GlibcArena(Arena):
    """An arena that decides as glibc 2.36's ``_int_malloc`` and ``_int_free`` do."""

    __slots__ = ("fast_limit", "mmapped", "tcached")

    bins: GlibcBins

    def __init__(
        self,
        index: int,
        mp: Params,
        budget: SystemBudget,
        heap_table: HeapTable[Arena],
        slab_table: SlabTable,
        main_region: Region | None,
        request: int,
        mmapped: MmappedChunks,
        tcached: dict[int, int],
    ) -> None:
        super().__init__(index, mp, budget, heap_table, slab_table, main_region, request)
        self.bins = GlibcBins()
        self.mmapped = mmapped
        self.tcached = tcached
        self.fast_limit = max_fast(mp.mxfast)

    def first_heap(self, request: int) -> Heap[Arena]:
        """glibc's ``_int_new_arena``: a heap with room for heap_info, malloc_state and the
        request that made the arena (glibc's ``new_heap`` adds top_pad)."""
        mp = self.mp
        size = new_heap_size(
            request + GLIBC_HEAP_INFO_SIZE + MALLOC_STATE_SIZE + MALLOC_ALIGNMENT,
            mp.top_pad,
            mp.heap_max_size,
        )
        heap: Heap[Arena] | None = None
        if size:
            heap = Heap.new_aligned(
                self, size, mp.heap_max_size, self.budget, None, FIRST_HEAP_HEADER
            )
        if heap is None:
            raise OutOfMemory("cannot create the first heap of a new arena")
        return heap

    # ============================================================ _int_malloc
    def int_malloc(self, nb: int, tc: Tcache | None = None) -> int:
        """glibc's ``_int_malloc`` for a chunk of ``nb`` bytes; chunks it passes on the way
        may be stashed in ``tc``.  Returns the user address (maybe a mapping's), or 0."""
        bins = self.bins
        count = self.mp.tcache_count
        tidx = csize2tidx(nb)
        stash = tc.bins[tidx] if tc is not None and tidx < self.mp.tcache_bins else None
        if nb <= self.fast_limit:
            fidx = (nb >> 4) - 2
            fb = bins.fast[fidx]
            if fb:
                chunk = bins.pop_fast(fidx)
                head = self.heap_of(chunk).head(chunk)
                if head & SIZE_BITS != nb:
                    bins.push_fast(chunk, nb)
                    raise HeapCorruption(
                        f"malloc(): memory corruption (fast): chunk {chunk:#x} reads {head:#x}"
                    )
                while stash is not None and len(stash) < count and fb:
                    self.park(stash, bins.pop_fast(fidx) + CHUNK_HDR_SZ, tidx)
                return chunk + CHUNK_HDR_SZ
        if nb < MIN_LARGE_SIZE:
            idx = nb >> 4
            small = bins.small[idx]
            if small:
                chunk = next(iter(small))
                bins.unlink(chunk)
                mem = self.hand_out(self.heap_of(chunk), chunk, nb)
                while stash is not None and len(stash) < count and small:
                    extra = next(iter(small))
                    bins.unlink(extra)
                    self.park(stash, self.hand_out(self.heap_of(extra), extra, nb), tidx)
                return mem
        else:
            idx = largebin_index(nb)
            if bins.fast_sizes:
                self.malloc_consolidate()

        return_cached = False
        while True:
            unsorted = bins.unsorted
            free = bins.free
            iters = 0
            while unsorted:
                chunk = next(iter(unsorted))
                size = free[chunk]
                if (
                    nb < MIN_LARGE_SIZE
                    and len(unsorted) == 1
                    and chunk == self.last_remainder
                    and size > nb + MINSIZE
                ):
                    bins.unlink(chunk)
                    return self.carve(self.heap_of(chunk), chunk, size, nb)
                bins.unlink(chunk)
                if size == nb:
                    mem = self.hand_out(self.heap_of(chunk), chunk, nb)
                    if stash is not None and len(stash) < count:
                        self.park(stash, mem, tidx)
                        return_cached = True
                        continue
                    return mem
                bins.place(chunk, size)
                iters += 1
                if iters >= MAX_ITERS:
                    break
            if return_cached and stash is not None:
                return self.unpark(stash)

            if nb >= MIN_LARGE_SIZE:
                chunk, size = bins.take_large(nb)
                if chunk:
                    return self.carve(self.heap_of(chunk), chunk, size, nb)
            chunk, size = bins.take_next_bin(idx)
            if chunk:  # (carve advertises the remainder of a small request, as glibc does)
                return self.carve(self.heap_of(chunk), chunk, size, nb)

            if self.top_size() >= nb + MINSIZE:
                return self.split_top(nb)
            if bins.fast_sizes:
                self.malloc_consolidate()
                continue
            return self.sysmalloc(nb, tc)

    def split_top(self, nb: int) -> int:
        """Cut ``nb`` bytes from the top chunk, which must hold ``nb + MINSIZE``."""
        heap = self.heap
        top = self.top
        heap.set_head(top, nb | self.head_flags)
        self.set_top(top + nb)
        mem = top + CHUNK_HDR_SZ
        self.in_use[mem] = nb
        self.inuse_bytes += nb
        return mem

    def park(self, stash: list[int], mem: int, tidx: int) -> None:
        """``tcache_put``: an in-use chunk goes into a thread's tcache bin."""
        self.tcached[mem] = tidx
        stash.append(mem)

    def unpark(self, stash: list[int]) -> int:
        """``tcache_get``: the newest chunk of a tcache bin."""
        mem = stash.pop()
        del self.tcached[mem]
        return mem

    # ============================================================ consolidate
    def malloc_consolidate(self) -> None:
        """Merge every fastbin chunk with its free neighbours, into the unsorted bin or
        the top: fastbins in index order, each from its head."""
        bins = self.bins
        for fidx in range(NFASTBINS):
            fb = bins.fast[fidx]
            while fb:
                chunk = fb[-1]
                size = bins.fast_sizes[chunk]
                heap = self.heap_of(chunk)
                if heap.head(chunk) & SIZE_BITS != size:
                    raise HeapCorruption(f"malloc_consolidate(): invalid chunk size at {chunk:#x}")
                self.merge(heap, chunk, size)  # (raises, if it must, before any change)
                bins.pop_fast(fidx)
                del self.in_use[chunk + CHUNK_HDR_SZ]
                self.inuse_bytes -= size

    # ============================================================ _int_free
    def checked_block(self, heap: Heap[Arena], mem: int) -> int:
        """The chunk size of the live block at ``mem``, after checking that it is one:
        not free, not in a tcache or fastbin, and its header as recorded."""
        size = self.in_use.get(mem)
        chunk = mem - CHUNK_HDR_SZ
        if size is None:
            raise self.diagnose_bad_pointer(mem)
        if mem in self.tcached:
            raise DoubleFree(f"free(): double free detected in tcache 2: {mem:#x}")
        fast = self.bins.fast_sizes.get(chunk)
        if fast is not None:
            fb = self.bins.fast[(fast >> 4) - 2]
            if fb[-1] == chunk:
                raise DoubleFree(f"double free or corruption (fasttop): {mem:#x}")
            raise DoubleFree(f"free(): double free detected: {mem:#x} is in a fastbin")
        head = heap.words[((mem - heap.base) >> 3) - 1]
        if head | PREV_INUSE != size | self.head_flags:
            raise HeapCorruption(
                f"free(): invalid size: header of block {mem:#x} reads {head:#x},"
                f" expected size {size} (arena {self.index}); was it overrun from below?"
            )
        return size

    def int_free(self, heap: Heap[Arena], mem: int, tc: Tcache | None = None) -> None:
        """glibc's ``_int_free``: into ``tc`` if its bin has room, else a fastbin, else
        merged and binned; a large merge consolidates and trims."""
        size = self.checked_block(heap, mem)
        mp = self.mp
        chunk = mem - CHUNK_HDR_SZ
        if chunk + size != self.top or heap is not self.heap:
            self.check_next(heap, mem, size)
        tidx = csize2tidx(size)
        if tc is not None and tidx < mp.tcache_bins and len(tc.bins[tidx]) < mp.tcache_count:
            if mp.perturb:
                _memset(mem, mp.perturb, size - CHUNK_HDR_SZ)
            self.park(tc.bins[tidx], mem, tidx)
            return
        if mp.perturb:
            _memset(mem, mp.perturb, size - CHUNK_HDR_SZ)
        if size <= self.fast_limit:
            self.bins.push_fast(chunk, size)
            return
        merged = self.merge(heap, chunk, size)  # (raises, if it must, before any change)
        del self.in_use[mem]
        self.inuse_bytes -= size
        if merged >= FASTBIN_CONSOLIDATION_THRESHOLD:
            if self.bins.fast_sizes:
                self.malloc_consolidate()
            if self.is_main:
                if self.top_size() >= mp.trim_threshold:
                    self.trim_top(mp.top_pad)
            else:
                self.glibc_heap_trim(mp.top_pad)

    def free_old_top(
        self, heap: Heap[Arena], old_top: int, old_size: int, tc: Tcache | None
    ) -> None:
        """Close a heap the arena moved past, as glibc's ``sysmalloc`` does: the last 32
        bytes become fenceposts (one in-use 32-byte chunk here) and the rest of the old
        top is freed like any chunk (it may well land in ``tc``)."""
        freed = (old_size - MINSIZE) & ~(MALLOC_ALIGNMENT - 1)
        if freed >= MINSIZE:
            fence = old_top + freed
            heap.set_head(fence, (old_size - freed) | PREV_INUSE | self.nm)
            heap.fence = fence
            heap.set_head(old_top, freed | PREV_INUSE | self.nm)
            self.in_use[old_top + CHUNK_HDR_SZ] = freed
            self.inuse_bytes += freed
            self.int_free(heap, old_top + CHUNK_HDR_SZ, tc)
        else:
            heap.set_head(old_top, old_size | PREV_INUSE | self.nm)
            heap.fence = old_top

    # ============================================================ sysmalloc
    def sysmalloc(self, nb: int, tc: Tcache | None) -> int:
        """glibc's ``sysmalloc``: a mapping for a big request, else more top chunk."""
        mp = self.mp
        tried_mmap = False
        if nb >= mp.mmap_threshold:
            mem = self.mmapped.alloc(nb, MALLOC_ALIGNMENT, mp.mmap_max)
            if mem:
                return mem
            tried_mmap = True
        heap = self.heap
        old_top = self.top
        old_size = self.top_size()
        if self.is_main:
            # sbrk: the shortfall, top_pad and MINSIZE, less what the top has, in pages.
            diff = page_align(nb + mp.top_pad + MINSIZE - old_size)
            if not heap.grow(diff):
                return 0
            self.account(diff)
            self.set_top(old_top)
        elif MINSIZE + nb - old_size > 0 and heap.grow(page_align(MINSIZE + nb - old_size)):
            self.account(page_align(MINSIZE + nb - old_size))
            self.set_top(old_top)
        else:
            size = new_heap_size(nb + MINSIZE + GLIBC_HEAP_INFO_SIZE, mp.top_pad, mp.heap_max_size)
            new = (
                Heap.new_aligned(
                    self, size, mp.heap_max_size, self.budget, heap, GLIBC_HEAP_INFO_SIZE
                )
                if size
                else None
            )
            if new is None:
                if tried_mmap:
                    return 0
                return self.mmapped.alloc(nb, MALLOC_ALIGNMENT, mp.mmap_max)
            self.heap_table.add(new)
            self.account(new.size)
            self.heaps.append(new)
            self.heap = new
            self.set_top(new.start)
            self.free_old_top(heap, old_top, old_size, tc)
        if self.top_size() >= nb + MINSIZE:
            return self.split_top(nb)
        return 0

    def glibc_heap_trim(self, pad: int) -> None:
        """glibc's ``heap_trim``: drop the newest heaps while only the top is in them and
        the heap before has room enough, then give the top's whole pages back."""
        mp = self.mp
        heap = self.heap
        while heap.prev is not None and self.top == heap.start:
            prev = heap.prev
            fence = prev.fence
            new_top = fence
            new_size = prev.end - fence
            if not prev.head(fence) & PREV_INUSE:
                last = prev.prev_size(fence)
                new_top = fence - last
                new_size += last
            if new_size + (mp.heap_max_size - prev.size) < pad + MINSIZE + PAGE_SIZE:
                break
            self.heap_table.remove(heap)
            self.heaps.pop()
            self.system_mem -= heap.size
            heap.release()
            if new_top != fence:
                self.bins.unlink(new_top)
            prev.fence = 0
            self.heap = heap = prev
            self.set_top(new_top)
        top_size = self.top_size()
        if top_size >= mp.trim_threshold and top_size - MINSIZE - 1 > pad:
            self.trim_top(pad)

    # ============================================================ _int_realloc
    def glibc_realloc(self, heap: Heap[Arena], mem: int, nb: int, tc: Tcache | None) -> int:
        """glibc's ``_int_realloc``: in place if the chunk, its free successor or the top
        has room, else a new chunk from this arena (0 if there is none)."""
        old = self.checked_block(heap, mem)
        chunk = mem - CHUNK_HDR_SZ
        nxt = chunk + old
        at_top = nxt == self.top and heap is self.heap
        if not at_top:
            self.check_next(heap, mem, old)
        if old >= nb:
            new_size = old
        elif at_top and old + self.top_size() >= nb + MINSIZE:
            heap.set_head_size(chunk, nb)
            self.set_top(chunk + nb)
            self.in_use[mem] = nb
            self.inuse_bytes += nb - old
            return mem
        elif not at_top and nxt in self.bins.free and old + self.bins.free[nxt] >= nb:
            new_size = old + self.bins.unlink(nxt)
            heap.set_head_size(chunk, new_size)
            self.in_use[mem] = new_size
            self.inuse_bytes += new_size - old
            heap.set_head(chunk + new_size, heap.head(chunk + new_size) | PREV_INUSE)
        else:
            new = self.int_malloc(nb, tc)
            if not new:
                return 0
            if new - CHUNK_HDR_SZ != nxt:
                _memmove(new, mem, old - SIZE_SZ)  # (both ours: this arena's lock)
                self.int_free(heap, mem, tc)
                return new
            # The new chunk is the very next one (a fastbin's head): the two become one.
            new_size = old + self.in_use.pop(new)
            heap.set_head_size(chunk, new_size)
            self.in_use[mem] = new_size
        self.shrink_to(heap, mem, new_size, nb, tc)
        return mem

    def shrink_to(self, heap: Heap[Arena], mem: int, size: int, nb: int, tc: Tcache | None) -> None:
        """Cut the in-use chunk at ``mem`` (of ``size``) to ``nb``; a tail that can stand
        as a chunk is freed like any other (``_int_free``)."""
        rem = size - nb
        if rem < MINSIZE:
            return
        chunk = mem - CHUNK_HDR_SZ
        heap.set_head_size(chunk, nb)
        tail = chunk + nb
        heap.set_head(tail, rem | PREV_INUSE | self.nm)
        self.in_use[mem] = nb
        self.in_use[tail + CHUNK_HDR_SZ] = rem
        self.int_free(heap, tail + CHUNK_HDR_SZ, tc)

    # ============================================================ _int_memalign
    def glibc_memalign(self, alignment: int, nb: int, tc: Tcache | None) -> int:
        """glibc's ``_int_memalign``: over-allocate by ``alignment + MINSIZE``, free the
        misaligned lead, then a tail of more than MINSIZE."""
        mem = self.int_malloc(request2size(nb + alignment + MINSIZE), tc)
        if not mem:
            return 0
        heap = self.heap_table.heap_for_ptr(mem)
        if heap is None:  # a mapping: mapped again, aligned (glibc moves the header instead)
            self.mmapped.free(mem)
            return self.mmapped.alloc(nb, alignment, self.mp.mmap_max)
        size = self.in_use[mem]
        chunk = mem - CHUNK_HDR_SZ
        if mem % alignment:
            aligned = ((mem + alignment - 1) & -alignment) - CHUNK_HDR_SZ
            if aligned - chunk < MINSIZE:
                aligned += alignment
            lead = aligned - chunk
            size -= lead
            heap.set_head(aligned, size | PREV_INUSE | self.nm)
            heap.set_head_size(chunk, lead)
            self.in_use[mem] = lead
            mem = aligned + CHUNK_HDR_SZ
            self.in_use[mem] = size
            self.int_free(heap, chunk + CHUNK_HDR_SZ, tc)
        if size > nb + MINSIZE:
            self.shrink_to(heap, mem, size, nb, tc)
        return mem

    # ============================================================ check
    def check(self) -> None:
        super().check()  # (the bins' own validate() included)
        for chunk, size in self.bins.fast_sizes.items():
            if self.in_use.get(chunk + CHUNK_HDR_SZ) != size:
                raise HeapCorruption(f"arena {self.index}: fastbin chunk {chunk:#x} not recorded")


class GlibcPolicy:
    """glibc's ``__libc_malloc`` and friends, over :class:`GlibcArena` arenas.

    ``threads`` lists every live thread's :class:`Tcache`; ``exited`` those of
    threads that ended, waiting for :meth:`reap` to do glibc's thread shutdown
    (their chunks freed into their arenas, the tcache chunk too, the arena
    detached).
    """

    def __init__(
        self,
        registry: ArenaRegistry,
        heap_table: HeapTable[Arena],
        mmapped: MmappedChunks,
        mp: Params,
        tcached: dict[int, int],
        is_closed: Callable[[], bool],
        on_oom: Callable[[int], object] | None,
    ) -> None:
        self.registry = registry
        self.heap_table = heap_table
        self.heap_of = heap_table.heap_for_ptr
        self.mmapped = mmapped
        self.mp = mp
        self.tcached = tcached
        self.is_closed = is_closed
        self.on_oom = on_oom
        self.tls = threading.local()
        self.lock = threading.Lock()
        self.threads: dict[int, Tcache] = {}
        self.exited: list[Tcache] = []

    # ------------------------------------------------------------ threads
    def attach(self, request: int) -> Tcache:
        """``arena_get`` for a thread with no arena yet: glibc's ``arena_get2(request)``."""
        if self.is_closed():
            raise AllocatorError(CLOSED)
        self.reap()
        arena = self.registry.arena_get2(request=request)
        assert isinstance(arena, GlibcArena)
        tc = Tcache(arena)
        with self.lock:
            self.threads[id(tc)] = tc
        self.tls.tcache = tc
        self.tls.anchor = _Anchor(tc, self.exited)
        return tc

    def current(self, request: int = TCACHE_STRUCT_SIZE) -> Tcache:
        tc: Tcache | None = getattr(self.tls, "tcache", None)
        if tc is None:
            return self.attach(request)
        if self.is_closed():
            raise AllocatorError(CLOSED)
        return tc

    def tcache_init(self, tc: Tcache) -> None:
        """The thread's first chunk holds its tcache_perthread_struct (glibc's ``tcache_init``)."""
        if tc.struct or tc.shut:
            return
        tc.struct = self.arena_malloc(
            tc, request2size(TCACHE_STRUCT_SIZE), TCACHE_STRUCT_SIZE, None
        )

    def reap(self) -> None:
        """Threads that ended: glibc's thread shutdown for each (:meth:`shutdown`)."""
        while self.exited:
            try:
                tc = self.exited.pop()
            except IndexError:  # (another thread reaped the last one meanwhile)
                return
            self.shutdown(tc)

    def thread_exit(self) -> None:
        """What the calling thread's end does, now rather than whenever Python gets to it."""
        tc: Tcache | None = getattr(self.tls, "tcache", None)
        if tc is not None:
            tc.shut = True  # (its anchor queues it no more)
            del self.tls.tcache, self.tls.anchor
            self.shutdown(tc)

    def shutdown(self, tc: Tcache) -> None:
        """glibc's ``tcache_thread_shutdown`` and ``arena_thread_freeres``: the thread's
        tcache chunks, newest first, and the tcache's own chunk are freed with no tcache
        (so into fastbins and bins), and its arena is detached."""
        with self.lock:
            if self.threads.pop(id(tc), None) is None:
                return  # (closed meanwhile)
        tc.shut = True
        if not self.is_closed():
            for cached in tc.bins:
                while cached:
                    mem = cached.pop()
                    del self.tcached[mem]
                    self.free_chunk(mem, None)
            if tc.struct:
                self.free_chunk(tc.struct, None)
        with self.registry.writing():
            self.registry.detach_locked(tc.arena)

    # ------------------------------------------------------------ malloc
    def arena_malloc(self, tc: Tcache, nb: int, size: int, cached_in: Tcache | None) -> int:
        """``_int_malloc`` in the thread's arena, then ``arena_get_retry``; OutOfMemory if
        neither can serve."""
        arena = tc.arena
        with arena.lock:
            mem = arena.int_malloc(nb, cached_in)
        if mem:
            return mem
        other = self.retry_arena(tc, size)
        if other is not arena:
            with other.lock:
                mem = other.int_malloc(nb, cached_in)
            if mem:
                return mem
        if self.on_oom is not None:
            self.on_oom(size)
        raise OutOfMemory(f"cannot allocate {size} bytes: no arena can grow")

    def retry_arena(self, tc: Tcache, size: int) -> GlibcArena:
        """glibc's ``arena_get_retry``: the main arena, or for the main arena another one
        (which becomes the thread's)."""
        main = self.registry.main
        if tc.arena is not main:
            assert isinstance(main, GlibcArena)
            return main
        other = self.registry.arena_get2(avoid=main, replaced=main, request=size)
        assert isinstance(other, GlibcArena)
        tc.arena = other
        return other

    def malloc(self, size: int) -> int:
        """``__libc_malloc``: the tcache, else the thread's arena."""
        if size.__class__ is not int or size < 0 or size > MAX_REQUEST:
            size = checked_request(size, "size", self.on_oom)
        nb = request2size(size)
        tc: Tcache | None = getattr(self.tls, "tcache", None)
        if tc is None or not tc.struct:
            tc = self.current()
            self.tcache_init(tc)
        tidx = csize2tidx(nb)
        if tidx < self.mp.tcache_bins:
            cached = tc.bins[tidx]
            if cached:
                mem = cached.pop()
                del self.tcached[mem]
                return self.fill(mem, nb)
        return self.fill(self.arena_malloc(tc, nb, size, tc), nb)

    def fill(self, mem: int, nb: int) -> int:
        """perturb's fill of a block being handed out."""
        perturb = self.mp.perturb
        if perturb:
            _memset(mem, perturb ^ 0xFF, nb - CHUNK_HDR_SZ)
        return mem

    def calloc(self, n: int, size: int) -> int:
        """``__libc_calloc``: straight to ``_int_malloc`` (never the tcache), zeroed."""
        total = calloc_request(n, size, self.on_oom)
        tc = self.current()
        self.tcache_init(tc)
        mem = self.arena_malloc(tc, request2size(total), total, tc)
        if mem not in self.mmapped.chunks or self.mp.perturb:
            _memset(mem, 0, total)
        return mem

    def memalign(self, alignment: int, size: int) -> int:
        """``_mid_memalign``: a power of two above 16 (at least MINSIZE); no tcache init."""
        alignment = checked_request(alignment, "alignment", self.on_oom)
        if alignment == 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        size = checked_request(size, "size", self.on_oom)
        if alignment <= MALLOC_ALIGNMENT:
            return self.malloc(size)
        alignment = max(alignment, MINSIZE)
        tc = self.current(size + alignment + MINSIZE)
        nb = request2size(size)
        arena = tc.arena
        cache = tc if tc.struct else None
        with arena.lock:
            mem = arena.glibc_memalign(alignment, nb, cache)
        if not mem:
            other = self.retry_arena(tc, size)
            with other.lock:
                mem = other.glibc_memalign(alignment, nb, cache)
        if not mem:
            if self.on_oom is not None:
                self.on_oom(size)
            raise OutOfMemory(f"cannot allocate {size} bytes aligned to {alignment}")
        return self.fill(mem, request2size(size))

    # ------------------------------------------------------------ free
    def free(self, addr: int) -> None:
        """``__libc_free``: a mapping is unmapped (raising the mmap threshold); a chunk goes
        to its arena's ``_int_free`` with this thread's tcache."""
        if addr.__class__ is not int:
            addr = checked_address(addr)
        if not addr:
            return
        heap = self.heap_of(addr)
        if heap is None:
            size = self.mmapped.free(addr)
            if size is None:
                raise self.foreign(addr)
            self.mp.mapping_freed(size)
            return
        tc: Tcache | None = getattr(self.tls, "tcache", None)
        if tc is None or not tc.struct:
            tc = self.current()
            self.tcache_init(tc)
        self.free_chunk(addr, tc, heap)

    def free_chunk(self, mem: int, tc: Tcache | None, heap: Heap[Arena] | None = None) -> None:
        heap = heap or self.heap_of(mem)
        if heap is None:
            raise self.foreign(mem)
        arena = heap.arena
        assert isinstance(arena, GlibcArena)
        with arena.lock:
            arena.int_free(heap, mem, tc)

    def foreign(self, addr: int) -> AllocatorError:
        if self.is_closed():
            return AllocatorError(CLOSED)
        if addr & (MALLOC_ALIGNMENT - 1):
            return InvalidPointer(f"free(): invalid pointer {addr:#x}: misaligned")
        return InvalidPointer(f"free(): invalid pointer {addr:#x}: not allocated by this allocator")

    # ------------------------------------------------------------ realloc
    def realloc(self, addr: int, size: int) -> int:
        """``__libc_realloc``: ``realloc(0, n)`` mallocs, ``realloc(p, 0)`` frees; a mapping
        is remapped to its new size; a chunk is resized by ``_int_realloc``, or moved."""
        size = checked_request(size, "size", self.on_oom)
        addr = checked_address(addr)
        if addr == 0:
            return self.malloc(size)
        if size == 0:
            self.free(addr)
            return 0
        nb = request2size(size)
        heap = self.heap_of(addr)
        if heap is None:
            return self.remap(addr, size, nb)
        tc = self.current()
        self.tcache_init(tc)
        arena = heap.arena
        assert isinstance(arena, GlibcArena)
        with arena.lock:
            new = arena.glibc_realloc(heap, addr, nb, tc)
        if new:
            return new
        new = self.malloc(size)
        with arena.lock:
            old = arena.checked_block(heap, addr)
            _memmove(new, addr, min(old - SIZE_SZ, size))
            arena.int_free(heap, addr, tc)
        return new

    def remap(self, addr: int, size: int, nb: int) -> int:
        """``mremap_chunk``: a mapping stays a mapping, of the pages ``nb`` needs."""
        mapped = self.mmapped
        claimed = mapped.claim(addr)
        if claimed is None:
            raise self.foreign(addr)
        region, chunk_size = claimed
        if page_align(nb + SIZE_SZ) == region.size:
            mapped.restore(addr, region)
            return addr
        new = mapped.alloc(nb, MALLOC_ALIGNMENT, 1 << 62)
        if not new:
            mapped.restore(addr, region)
            raise OutOfMemory(f"cannot allocate {size} bytes")
        _memmove(new, addr, min(chunk_size - CHUNK_HDR_SZ, size))
        mapped.release(region)
        return new

    # ------------------------------------------------------------ views
    def is_cached(self, addr: int) -> bool:
        """Is ``addr`` a chunk parked in a tcache or a fastbin (free to the program)?"""
        if addr in self.tcached:
            return True
        heap = self.heap_of(addr)
        if heap is None:
            return False
        arena = heap.arena
        assert isinstance(arena, GlibcArena)
        return addr - CHUNK_HDR_SZ in arena.bins.fast_sizes

    def tcaches(self) -> list[Tcache]:
        """The live threads' tcaches (ended threads' are reaped where no lock is held:
        :meth:`reap`, called by the allocator's reports before they lock anything)."""
        with self.lock:
            return list(self.threads.values())

    def check(self) -> None:
        """Every parked chunk is in exactly one tcache bin of its size, and in use."""
        seen: dict[int, int] = {}
        for tc in self.tcaches():
            for tidx, cached in enumerate(list(tc.bins)):
                for mem in list(cached):
                    if mem in seen:
                        raise HeapCorruption(f"chunk {mem:#x} is in two tcache bins")
                    seen[mem] = tidx
        if seen != dict(self.tcached):
            raise HeapCorruption("the tcache bins disagree with the table of cached chunks")
        for mem, tidx in seen.items():
            heap = self.heap_of(mem)
            size = heap.arena.in_use.get(mem) if heap is not None else None
            if size is None or csize2tidx(size) != tidx:
                raise HeapCorruption(f"tcache chunk {mem:#x} is not an in-use chunk of its size")

    def trim(self, arenas: list[Arena], pad: int) -> int:
        """glibc's ``malloc_trim``: per arena, consolidate the fastbins, advise away the
        whole pages inside free chunks, and (the main arena only) cut its top to ``pad``."""
        released = 0
        for arena in arenas:
            assert isinstance(arena, GlibcArena)
            with arena.lock:
                arena.malloc_consolidate()
                released += arena.discard_free_pages()
                if arena.is_main:
                    released += arena.trim_top(pad)
        return released

    def set_max_fast(self, arenas: list[Arena]) -> None:
        """``mallopt(M_MXFAST)``: glibc consolidates the main arena, then changes the limit."""
        for arena in arenas:
            assert isinstance(arena, GlibcArena)
            with arena.lock:
                if arena.is_main:
                    arena.malloc_consolidate()
                arena.fast_limit = max_fast(self.mp.mxfast)

    def close(self) -> None:
        with self.lock:
            self.threads.clear()
        self.exited.clear()
        self.tcached.clear()
