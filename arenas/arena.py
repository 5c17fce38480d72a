"""An arena: a lock, a list of heaps, a top chunk and the bins (glibc's ``malloc_state``).

An arena serves requests from its heaps without looking at any other arena.
Everything here runs with the arena's :attr:`Arena.lock` held; the callers in
:mod:`arenas.allocator` take it.  Names follow glibc's ``malloc.c`` so that the
two can be read side by side (glibc's ``_int_malloc`` is ``int_malloc`` here:
the allocator calls it, so it is not private):

* ``int_malloc``   small bin exact fit, then sort the unsorted bin, then best
                   fit from the sorted bins, then split the top chunk, then
                   ``sysmalloc`` to grow the heap (or start a new one);
* ``int_free``     check the header against our records, coalesce with free
                   neighbours, put the result in the unsorted bin or the top;
                   a big enough top is trimmed;
* ``int_realloc``  shrink in place, grow into a free neighbour or the top,
                   or move;
* ``int_memalign`` over-allocate, then free the misaligned lead and the tail.

The chunk *headers* are in the heap's bytes (in-band), exactly where glibc
puts them, and are read and written with :class:`~arenas.heap.Heap`'s chunk
vocabulary (``head``, ``set_head``, ``set_head_size``, ``prev_size``).  The
hot paths (``int_malloc``, ``int_free``, ``hand_out``, ``carve``,
``set_top``, ``checked_chunk``, ``_free_chunk``, ``_carve_slabs``) inline it,
with ``w = heap.words``: the head of ``chunk`` is ``w[((chunk - base) >> 3) + 1]``
(of the block at ``mem``, ``w[((mem - base) >> 3) - 1]``) and the ``prev_size``
word before it ``w[(chunk - base) >> 3]``.  ``head_flags`` is the arena's
``PREV_INUSE | NON_MAIN_ARENA`` part of a head whose predecessor is in use.

The chunk path is short on purpose: a request cut from the top and freed
again is one ``int_malloc`` that skips the bins when none is binned, and one
``int_free`` that checks the block's record and header and moves the top
back (the most common pair in a program's big buffers); every other case
takes the general route through the bins.

The arena also keeps two out-of-band records, ``in_use`` and ``bins.free``;
every header read is checked against them, which is how an overrun becomes
a :class:`HeapCorruption` instead of a corrupted heap, and how a double free
is caught exactly.  A third, ``lent``, lists the chunks lent to slabs.

Locking: every field of an Arena is guarded by ``Arena.lock`` except
``attached_threads``, which belongs to the registry's lock.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable, Iterator

from .bins import MIN_LARGE_SIZE, NSMALLBINS, Bins, bin_index
from .chunk import (
    CHUNK_HDR_SZ,
    IS_MMAPPED,
    MINSIZE,
    NON_MAIN_ARENA,
    PREV_INUSE,
    SIZE_BITS,
    SIZE_SZ,
    chunk2mem,
    mem2chunk,
)
from .errors import DoubleFree, HeapCorruption, InvalidPointer, OutOfMemory
from .heap import HEAP_INFO_SIZE, Heap, HeapTable
from .memory import PAGE_SIZE, Region, SystemBudget, page_align
from .slab import SlabPool, SlabTable
from .stats import ArenaStats
from .tunables import Params

__all__ = ["Arena"]

_memset = ctypes.memset


class Arena:
    """One arena.  ``index`` 0 is the main arena; the others own aligned heaps."""

    __slots__ = (
        "attached_threads",
        "bins",
        "budget",
        "head_flags",
        "heap",
        "heap_table",
        "heaps",
        "in_use",
        "index",
        "inuse_bytes",
        "is_main",
        "last_remainder",
        "lent",
        "lock",
        "max_system_mem",
        "mp",
        "nm",
        "slab_pool",
        "system_mem",
        "top",
    )

    def __init__(
        self,
        index: int,
        mp: Params,
        budget: SystemBudget,
        heap_table: HeapTable[Arena],
        slab_table: SlabTable,
        main_region: Region | None = None,
        request: int = 0,
    ) -> None:
        """``request``: the size of the request that made a non-main arena (glibc's
        ``_int_new_arena(size)``); the default policy's first heap ignores it."""
        self.lock = threading.Lock()
        self.index = index
        self.is_main = index == 0
        self.mp = mp
        self.budget = budget
        self.heap_table = heap_table
        self.nm = 0 if self.is_main else NON_MAIN_ARENA
        # The flag bits of a head in this arena whose predecessor is in use.
        self.head_flags = PREV_INUSE | self.nm
        self.bins = Bins()
        # user address -> chunk size, for every chunk handed out from this arena
        self.in_use: dict[int, int] = {}
        self.inuse_bytes = 0
        self.system_mem = 0
        self.max_system_mem = 0
        self.last_remainder = 0
        self.attached_threads = 0
        # In-use chunks lent to slabs (user address -> their heap's region): ``free``
        # refuses them; the slab pool gives them back (see slab.py).
        self.lent: dict[int, Region] = {}
        self.slab_pool = SlabPool(self, slab_table)
        self.heaps: list[Heap[Arena]] = []
        if self.is_main:
            region = main_region or Region(page_align(mp.main_heap_size))
            heap = Heap(self, region, budget, aligned=False)
            heap_table.main = heap
        else:
            heap = self.first_heap(request)
            heap_table.add(heap)
            self.account(heap.size)
        self.heaps.append(heap)
        self.heap = heap
        self.top = heap.start
        if heap.size:
            self.set_top(heap.start)

    def first_heap(self, request: int) -> Heap[Arena]:
        """A non-main arena's first heap, with room for its top chunk and top_pad."""
        mp = self.mp
        heap = Heap.new_aligned(
            self, HEAP_INFO_SIZE + MINSIZE + mp.top_pad, mp.heap_max_size, self.budget, None
        )
        if heap is None:
            raise OutOfMemory("cannot create the first heap of a new arena")
        return heap

    # ================================================================ helpers
    def heap_of(self, chunk: int) -> Heap[Arena]:
        """The heap holding ``chunk`` (which must be one of this arena's)."""
        if self.is_main:
            return self.heap
        return self.heap_table.heaps[chunk & self.heap_table.mask]

    def account(self, diff: int) -> None:
        self.system_mem += diff
        if self.system_mem > self.max_system_mem:
            self.max_system_mem = self.system_mem

    def set_top(self, top: int) -> None:
        heap = self.heap
        self.top = top
        size = heap.base + heap.size - top
        heap.words[((top - heap.base) >> 3) + 1] = size | PREV_INUSE | self.nm

    def top_size(self) -> int:
        return self.heap.base + self.heap.size - self.top

    def stats(self) -> ArenaStats:
        """This arena's figures (lock held)."""
        return ArenaStats(
            index=self.index,
            attached_threads=self.attached_threads,
            heaps=len(self.heaps),
            system_bytes=self.system_mem,
            in_use_bytes=self.inuse_bytes,
            free_bytes=self.system_mem - self.inuse_bytes,
            top_bytes=self.top_size(),
            max_system_bytes=self.max_system_mem,
            free_chunks=len(self.bins.free),
            in_use_chunks=len(self.in_use),
        )

    def hand_out(self, heap: Heap[Arena], chunk: int, size: int) -> int:
        """Record ``chunk`` as in use, mark it so in its successor, return the user address."""
        w = heap.words
        j = ((chunk + size - heap.base) >> 3) + 1
        w[j] |= PREV_INUSE
        mem = chunk + CHUNK_HDR_SZ
        self.in_use[mem] = size
        self.inuse_bytes += size
        return mem

    def carve(self, heap: Heap[Arena], chunk: int, size: int, nb: int) -> int:
        """Serve ``nb`` bytes from the free chunk ``chunk`` (already unlinked) of ``size``.

        The remainder, if it can stand as a chunk, goes back to the unsorted bin.
        """
        rem = size - nb
        if rem < MINSIZE:
            return self.hand_out(heap, chunk, size)
        w = heap.words
        base = heap.base
        nm = self.nm
        i = (chunk - base) >> 3
        w[i + 1] = nb | (w[i + 1] & PREV_INUSE) | nm
        r = chunk + nb
        k = (r - base) >> 3
        w[k + 1] = rem | PREV_INUSE | nm
        w[((r + rem - base) >> 3)] = rem
        self.bins.add_unsorted(r, rem)
        if nb < MIN_LARGE_SIZE:
            self.last_remainder = r
        mem = chunk + CHUNK_HDR_SZ
        self.in_use[mem] = nb
        self.inuse_bytes += nb
        return mem

    # ============================================================ int_malloc
    def int_malloc(self, nb: int) -> int:
        """Serve a chunk of exactly-aligned size ``nb``; return its user address or 0."""
        bins = self.bins
        if bins.free:  # (with nothing binned, the top serves at once)
            mem = self._malloc_from_bins(bins, nb)
            if mem:
                return mem

        # Split the top chunk (glibc's "use_top"), growing the heap first if need be.
        heap = self.heap
        top = self.top
        end = heap.base + heap.size
        if end - top < nb + MINSIZE:
            if not self._sysmalloc(nb):
                return 0
            heap = self.heap
            top = self.top
            end = heap.base + heap.size
        w = heap.words
        flags = self.head_flags
        i = ((top - heap.base) >> 3) + 1
        w[i] = nb | flags
        self.top = rest = top + nb
        w[i + (nb >> 3)] = (end - rest) | flags
        mem = top + CHUNK_HDR_SZ
        self.in_use[mem] = nb
        self.inuse_bytes += nb
        return mem

    def _malloc_from_bins(self, bins: Bins, nb: int) -> int:
        """int_malloc's use of the bins: the user address of a binned chunk, or 0."""
        if nb < MIN_LARGE_SIZE:
            chunk = bins.take_small(nb)
            if chunk:
                return self.hand_out(self.heap_of(chunk), chunk, nb)

        if bins.unsorted:
            chunk, size = bins.sort_unsorted(nb, self.last_remainder)
            if chunk:  # an exact fit, or the last remainder to carve again
                return self.carve(self.heap_of(chunk), chunk, size, nb)

        chunk, size = bins.take_best_fit(nb)
        if chunk:
            return self.carve(self.heap_of(chunk), chunk, size, nb)
        return 0

    # ============================================================== sysmalloc
    def _sysmalloc(self, nb: int) -> bool:
        """Make the top chunk at least ``nb + MINSIZE`` bytes.  False if it cannot."""
        heap = self.heap
        short = nb + MINSIZE - self.top_size()
        if self.is_main:
            # Like sbrk: ask for the shortfall plus top_pad, or just the shortfall,
            # or (at the very end of a fixed buffer) whatever is left.
            room = heap.max_size - heap.size
            for want in (short + self.mp.top_pad, short):
                diff = min(page_align(want), room)
                if diff >= short and heap.grow(diff):
                    self.account(diff)
                    self.set_top(self.top)
                    return True
            return False
        diff = page_align(short)
        if heap.grow(diff):
            self.account(diff)
            self.set_top(self.top)
            return True
        new = Heap.new_aligned(
            self,
            HEAP_INFO_SIZE + nb + MINSIZE + self.mp.top_pad,
            self.mp.heap_max_size,
            self.budget,
            heap,
        )
        if new is None:
            new = Heap.new_aligned(
                self, HEAP_INFO_SIZE + nb + MINSIZE, self.mp.heap_max_size, self.budget, heap
            )
            if new is None:
                return False
        self.heap_table.add(new)
        self.account(new.size)
        old_top, old_size = self.top, self.top_size()
        self.heaps.append(new)
        self.heap = new
        self.set_top(new.start)
        self._retire_heap(heap, old_top, old_size)
        return True

    def _retire_heap(self, heap: Heap[Arena], old_top: int, old_size: int) -> None:
        """Close a heap the arena has moved past: a fencepost at its end, its top freed."""
        fence_size = CHUNK_HDR_SZ if old_size >= MINSIZE + CHUNK_HDR_SZ else old_size
        fence = heap.end - fence_size
        heap.set_head(fence, fence_size | PREV_INUSE | self.nm)
        heap.fence = fence
        if fence > old_top:
            size = fence - old_top
            heap.set_head(old_top, size | PREV_INUSE | self.nm)
            self._free_chunk(heap, old_top, size)

    # ============================================================== int_free
    def diagnose_bad_pointer(self, mem: int) -> InvalidPointer:
        """Explain why ``mem`` is not a live block of this arena (the slow path of free)."""
        chunk = mem2chunk(mem)
        if chunk in self.bins.free:
            return DoubleFree(f"free(): double free detected: {mem:#x} is already free")
        for heap in self.heaps:
            if heap.start <= chunk < heap.end:
                if chunk >= self.top and heap is self.heap:
                    return DoubleFree(f"free(): double free or invalid pointer {mem:#x} (in top)")
                for start, size in self.bins.free.items():
                    if start < chunk < start + size:
                        return DoubleFree(
                            f"free(): double free or invalid pointer {mem:#x}"
                            f" (inside free chunk {start:#x})"
                        )
                break
            if heap.end <= chunk < heap.base + heap.max_size:
                # In the heap's reservation but beyond its mapped end: memory the
                # heap has given back (a trimmed top), or never used yet.
                return InvalidPointer(
                    f"free(): invalid pointer {mem:#x}: past the mapped end {heap.end:#x} of"
                    f" arena {self.index}'s heap, in memory it gave back to the system or has"
                    " not used yet (freed twice, after the top was trimmed?)"
                )
        return InvalidPointer(
            f"free(): invalid pointer {mem:#x}: not the start of a block of arena {self.index}"
        )

    def checked_chunk(self, heap: Heap[Arena], mem: int) -> int:
        """Check the live block at ``mem`` against its header; return its chunk size."""
        size = self.in_use.get(mem)
        if size is None:
            raise self.diagnose_bad_pointer(mem)
        if mem in self.lent:
            raise InvalidPointer(f"free(): invalid pointer {mem:#x}: that is a slab, not a block")
        head = heap.words[((mem - heap.base) >> 3) - 1]  # (the head of chunk mem - 16)
        # Its size, IS_MMAPPED clear and NON_MAIN_ARENA as ours; PREV_INUSE either way.
        if head | PREV_INUSE != size | self.head_flags:
            raise HeapCorruption(
                f"free(): invalid size: header of block {mem:#x} reads {head:#x},"
                f" expected size {size} (arena {self.index}); was it overrun from below?"
            )
        if mem - CHUNK_HDR_SZ + size != self.top or heap is not self.heap:
            self.check_next(heap, mem, size)
        return size

    def check_next(self, heap: Heap[Arena], mem: int, size: int) -> None:
        """Check the header after the block at ``mem`` (not the top): it must mark it in use."""
        nxt = mem - CHUNK_HDR_SZ + size
        end = heap.base + heap.size
        if nxt >= end:
            raise HeapCorruption(f"free(): invalid next size (normal) after {mem:#x}")
        nhead = heap.words[((nxt - heap.base) >> 3) + 1]
        nsize = nhead & SIZE_BITS
        if nsize < CHUNK_HDR_SZ or nxt + nsize > end or nhead & IS_MMAPPED:
            raise HeapCorruption(
                f"free(): invalid next size (normal): block {mem:#x} of size {size}"
                f" was overrun (next header reads {nhead:#x})"
            )
        if not nhead & PREV_INUSE:
            raise HeapCorruption(f"double free or corruption (!prev) at {mem:#x}")

    def int_free(self, heap: Heap[Arena], mem: int) -> None:
        """glibc's ``_int_free``: check the block at ``mem``, then coalesce and bin it.

        The common case is checked and served here: a block whose record and
        header agree, and that borders the top chunk with an in-use predecessor
        (a request freed soon after it was cut from the top) simply moves the
        top back; no other header needs trusting.  Anything else goes through
        :meth:`checked_chunk` (which raises the precise error) and :meth:`_free_chunk`.
        """
        in_use = self.in_use
        size = in_use.get(mem)
        if size is None or mem in self.lent:
            # Not a live chunk of ours: raise the precise error before touching the
            # heap's bytes (a racing free of the same block may have merged it into
            # the top and given the heap back, its memory released).
            size = self.checked_chunk(heap, mem)
        w = heap.words
        i = ((mem - heap.base) >> 3) - 1  # (the head of chunk mem - 16)
        head = w[i]
        if head | PREV_INUSE != size | self.head_flags:
            size = self.checked_chunk(heap, mem)  # (raises the precise error)
        if self.mp.perturb:  # glibc's free_perturb: after the checks, under the lock
            _memset(mem, self.mp.perturb, size - CHUNK_HDR_SZ)
        chunk = mem - CHUNK_HDR_SZ
        if chunk + size == self.top and heap is self.heap and head & PREV_INUSE:
            self.top = chunk
            top_size = heap.base + heap.size - chunk
            w[i] = top_size | self.head_flags
            del in_use[mem]
            self.inuse_bytes -= size
            if top_size >= self.mp.trim_threshold or chunk == heap.start:
                self._maybe_trim()  # (which decides whether to trim, and how)
            return
        if chunk + size != self.top or heap is not self.heap:
            self.check_next(heap, mem, size)
        self._free_chunk(heap, chunk, size)
        del in_use[mem]
        self.inuse_bytes -= size

    def take_back_slab_chunk(self, mem: int) -> None:
        """Free a chunk lent to a slab (:meth:`lend_slab_chunks`): no user-facing checks."""
        del self.lent[mem]
        size = self.in_use.pop(mem)
        self.inuse_bytes -= size
        chunk = mem - CHUNK_HDR_SZ
        self._free_chunk(self.heap_of(chunk), chunk, size)

    def _free_chunk(self, heap: Heap[Arena], chunk: int, size: int) -> None:
        """Coalesce ``chunk`` with its free neighbours and bin it (or grow the top), then
        trim a top that grew big enough (or a non-main heap that emptied)."""
        self.merge(heap, chunk, size)
        into_top = heap is self.heap and self.top <= chunk  # (a binned chunk lies below it)
        if into_top and (self.top_size() >= self.mp.trim_threshold or self.top == heap.start):
            self._maybe_trim()  # (which decides whether to trim, and how)

    def merge(self, heap: Heap[Arena], chunk: int, size: int) -> int:
        """Coalesce a chunk that is no longer in use (its records already dropped, or
        about to be) with its free neighbours, then bin it at the unsorted head or make
        it the top.  Every header it is about to trust is checked first; a mismatch
        raises before anything has changed.  Returns the merged size (the top's, if
        it went there)."""
        bins = self.bins
        w = heap.words
        base = heap.base
        i = (chunk - base) >> 3
        prev = 0
        if not w[i + 1] & PREV_INUSE:
            prev_size = w[i]
            prev = chunk - prev_size
            if bins.free.get(prev) != prev_size:
                raise HeapCorruption(
                    f"corrupted size vs. prev_size while consolidating {chunk + CHUNK_HDR_SZ:#x}"
                )
        nxt = chunk + size
        if nxt == self.top and heap is self.heap:  # give it back to the top
            if prev:
                bins.unlink(prev)
                chunk = prev
            self.set_top(chunk)
            return self.top_size()
        next_size = bins.free.get(nxt, 0)
        if next_size and w[((nxt - base) >> 3) + 1] & SIZE_BITS != next_size:
            raise HeapCorruption(f"corrupted size of free chunk {nxt:#x} after {chunk:#x}")
        if prev:
            bins.unlink(prev)
            size += chunk - prev
            chunk = prev
        if next_size:
            bins.unlink(nxt)
            size += next_size
        w[((chunk - base) >> 3) + 1] = size | self.head_flags
        j = (chunk + size - base) >> 3
        w[j] = size
        w[j + 1] &= ~PREV_INUSE
        bins.add_unsorted(chunk, size)
        return size

    # ================================================================= trim
    def _maybe_trim(self) -> None:
        if not self.is_main and self.top == self.heap.start and self.heap.prev is not None:
            self.heap_trim()
        elif self.top_size() >= self.mp.trim_threshold:
            self.trim_top(self.mp.top_pad)

    def trim_top(self, pad: int) -> int:
        """glibc's ``systrim``/``shrink_heap``: give the top's whole pages back.  Returns bytes."""
        heap = self.heap
        extra = (self.top_size() - pad - MINSIZE - 1) & ~(PAGE_SIZE - 1)
        if extra <= 0:
            return 0
        heap.shrink(extra)
        self.system_mem -= extra
        self.set_top(self.top)
        return extra

    def heap_trim(self) -> int:
        """Drop the arena's newest heaps while they hold nothing but the top chunk."""
        released = 0
        heap = self.heap
        while heap.prev is not None and self.top == heap.start:
            prev = heap.prev
            fence = prev.fence
            new_top = fence
            if not prev.head(fence) & PREV_INUSE:
                last_size = prev.prev_size(fence)
                new_top = fence - last_size
                if self.bins.free.get(new_top) != last_size:
                    break  # a forged footer: leave the heap; check() will report it
                self.bins.unlink(new_top)
                if new_top == self.last_remainder:
                    self.last_remainder = 0
            self.heap_table.remove(heap)
            self.heaps.pop()
            released += heap.size
            self.system_mem -= heap.size
            heap.release()
            prev.fence = 0
            self.heap = prev
            self.set_top(new_top)
            heap = prev
        if self.top_size() >= self.mp.trim_threshold:
            released += self.trim_top(self.mp.top_pad)
        return released

    def drop_empty_heaps(self) -> int:
        """Unmap older heaps that hold nothing but one free chunk.  Returns bytes released.

        glibc can only drop heaps from the newest end (``heap_trim``); a heap in
        the middle of the chain that emptied out is kept.  Here it is unlinked
        from the chain and unmapped as well.
        """
        released = 0
        free = self.bins.free
        for pos in range(len(self.heaps) - 2, -1, -1):
            heap = self.heaps[pos]
            if free.get(heap.start) != heap.fence - heap.start:
                continue
            self.bins.unlink(heap.start)
            if heap.start == self.last_remainder:
                self.last_remainder = 0
            newer = self.heaps[pos + 1]
            newer.prev = heap.prev
            newer.words[1] = heap.prev.base if heap.prev is not None else 0
            del self.heaps[pos]
            self.heap_table.remove(heap)
            released += heap.size
            self.system_mem -= heap.size
            heap.release()
        return released

    def discard_free_pages(self) -> int:
        """Advise the OS to drop whole pages inside free chunks and the top (glibc's mtrim).

        The chunk headers stay; the bytes between read as zero afterwards.
        Returns how many bytes were advised away.
        """
        released = 0
        for chunk, size in self.bins.free.items():
            heap = self.heap_of(chunk)
            released += heap.region.discard(chunk + CHUNK_HDR_SZ, size - CHUNK_HDR_SZ)
        top_size = self.top_size()
        if top_size > CHUNK_HDR_SZ:
            released += self.heap.region.discard(self.top + CHUNK_HDR_SZ, top_size - CHUNK_HDR_SZ)
        return released

    # ============================================================ int_realloc
    def int_realloc(self, heap: Heap[Arena], mem: int, nb: int, may_move: bool) -> int:
        """Resize the block at ``mem`` to chunk size ``nb``; return the new address or 0.

        0 means this arena cannot do it without moving and ``may_move`` is
        False, or it has no memory left; the old block is then unchanged.
        """
        old = self.checked_chunk(heap, mem)
        chunk = mem2chunk(mem)
        if old < nb:
            nxt = chunk + old
            if nxt == self.top and heap is self.heap:
                if old + self.top_size() >= nb + MINSIZE:
                    heap.set_head_size(chunk, nb)
                    self.set_top(chunk + nb)
                    self.in_use[mem] = nb
                    self.inuse_bytes += nb - old
                    return mem
            else:
                next_size = self.bins.free.get(nxt, 0)
                if next_size and old + next_size >= nb:
                    self.bins.unlink(nxt)
                    if nxt == self.last_remainder:
                        self.last_remainder = 0
                    merged = old + next_size
                    heap.set_head_size(chunk, merged)
                    after = chunk + merged
                    heap.set_head(after, heap.head(after) | PREV_INUSE)
                    self.in_use[mem] = merged
                    self.inuse_bytes += next_size
                    old = merged
            if old < nb:
                if not may_move:
                    return 0
                new = self.int_malloc(nb)
                if not new:
                    return 0
                ctypes.memmove(new, mem, old - SIZE_SZ)  # (both ours: this arena's lock)
                self.int_free(heap, mem)
                return new
        self._shrink_chunk(heap, mem, old, nb)
        return mem

    def _shrink_chunk(self, heap: Heap[Arena], mem: int, size: int, nb: int) -> None:
        """Cut an in-use chunk down to ``nb``, freeing the tail if it can stand alone."""
        rem = size - nb
        if rem < MINSIZE:
            return
        chunk = mem2chunk(mem)
        heap.set_head_size(chunk, nb)
        tail = chunk + nb
        heap.set_head(tail, rem | PREV_INUSE | self.nm)
        self.in_use[mem] = nb
        self.inuse_bytes -= rem
        self._free_chunk(heap, tail, rem)

    # =========================================================== int_memalign
    def int_memalign(self, alignment: int, nb: int) -> int:
        """A chunk of size ``nb`` whose user address is a multiple of ``alignment``, or 0."""
        mem = self.int_malloc(nb + alignment + MINSIZE)
        if not mem:
            return 0
        chunk = mem2chunk(mem)
        heap = self.heap_of(chunk)
        size = self.in_use[mem]
        if mem % alignment:
            aligned = ((mem + alignment - 1) & -alignment) - CHUNK_HDR_SZ
            if aligned - chunk < MINSIZE:
                aligned += alignment
            lead = aligned - chunk
            new_size = size - lead
            heap.set_head(aligned, new_size | PREV_INUSE | self.nm)
            heap.set_head_size(chunk, lead)
            del self.in_use[mem]
            self.inuse_bytes -= lead
            mem = chunk2mem(aligned)
            self.in_use[mem] = new_size
            self._free_chunk(heap, chunk, lead)
            size = new_size
        self._shrink_chunk(heap, mem, size, nb)
        return mem

    # ========================================================= slab chunks
    def lend_slab_chunks(
        self, length: int, count: int = 1, top: bool = True, grow: bool = True
    ) -> list[int]:
        """Up to ``count`` in-use chunks of exactly ``length`` bytes each.

        Slabs are made of these: a slab's header is its chunk's header.
        Memory freed earlier comes first: the smallest free chunk that holds
        one (best fit, address order among equal sizes, up to 32 candidates)
        gives as many as it holds, and so on.  The rest are cut from the top
        chunk in one go.  With ``grow`` false the heap is not grown for them,
        and with ``top`` false the top chunk is not cut either: only memory
        freed earlier is used (another arena's thread asks that way).
        Returns the user addresses (chunk + 16), recorded in :attr:`lent`;
        fewer than ``count`` only when the arena has no room for more.
        """
        out: list[int] = []
        while len(out) < count and self.bins.free:
            chunk, size = self._best_free_chunk(length)
            if not chunk:
                break
            pieces = min(count - len(out), size // length)
            if 0 < size - pieces * length < MINSIZE:
                pieces -= 1  # (a single piece always fits: see _best_free_chunk)
            self._carve_slabs(self.heap_of(chunk), chunk, size, length, pieces, out)
        if len(out) < count and top:
            want = count - len(out)
            if (
                grow
                and self.top_size() < want * length + MINSIZE
                and not self._sysmalloc(want * length)
                and self.top_size() < length + MINSIZE
            ):
                self._sysmalloc(length)  # a cap or a full buffer may still allow one
            want = min(want, (self.top_size() - MINSIZE) // length)
            if want > 0:
                chunk = self.top
                self.set_top(chunk + want * length)
                self._carve_slabs(self.heap, chunk, want * length, length, want, out)
        return out

    def lend_hole(self, least: int, unit: int, most: int) -> tuple[int, int]:
        """The smallest free chunk of at least ``least`` bytes, lent whole or cut to
        ``16 + k * unit`` bytes (at most ``most``): ``(user address, length)``, or
        ``(0, 0)`` if there is none.

        For a slab whose class's whole slab no free chunk can give: glibc would
        serve small requests from such a chunk, so a slab of as many blocks as
        it holds is made in it.  A remainder under ``MINSIZE`` stays in the
        piece (a chunk cannot be that small); a bigger one goes back to the bins.
        """
        if not self.bins.free:
            return 0, 0
        chunk, size = self._best_free_chunk(least)
        if not chunk:
            return 0, 0
        piece = min(CHUNK_HDR_SZ + (size - CHUNK_HDR_SZ) // unit * unit, most)
        if size - piece < MINSIZE:
            piece = size
        out: list[int] = []
        self._carve_slabs(self.heap_of(chunk), chunk, size, piece, 1, out)
        return out[0], piece

    def _best_free_chunk(self, length: int) -> tuple[int, int]:
        """Unlink the smallest free chunk that can give a ``length``-byte piece: (chunk, size)."""
        bins = self.bins
        while bins.unsorted:  # sort first, as int_malloc does, so freed chunks can be found
            bins.sort_unsorted(0, 0)  # (no chunk is of size 0: it sorts them all)
        candidates = 0
        idx = bin_index(length)
        rest = bins.binmap >> idx
        while rest:
            skip = (rest & -rest).bit_length() - 1
            idx += skip
            rest >>= skip
            found: Iterable[tuple[int, int]]
            if idx < NSMALLBINS:
                found = ((idx << 4, chunk) for chunk in bins.small[idx])
            else:
                found = bins.large[idx - NSMALLBINS]
            for size, chunk in found:
                if size == length or size >= length + MINSIZE:
                    bins.unlink(chunk)
                    if chunk == self.last_remainder:
                        self.last_remainder = 0
                    return chunk, size
                if size > length:
                    candidates += 1
                    if candidates >= 32:
                        return 0, 0
            idx += 1
            rest >>= 1
        return 0, 0

    def _carve_slabs(
        self, heap: Heap[Arena], chunk: int, size: int, length: int, pieces: int, out: list[int]
    ) -> None:
        """Mark ``pieces`` chunks of ``length`` at the start of the unlinked ``chunk`` in use.

        Whatever is left of ``size`` goes back to the bins.
        """
        w = heap.words
        base = heap.base
        head = length | PREV_INUSE | self.nm
        in_use = self.in_use
        lent = self.lent
        region = heap.region
        end = chunk + pieces * length
        for piece in range(chunk, end, length):
            w[((piece - base) >> 3) + 1] = head
            in_use[piece + CHUNK_HDR_SZ] = length
            lent[piece + CHUNK_HDR_SZ] = region
            out.append(piece + CHUNK_HDR_SZ)
        self.inuse_bytes += pieces * length
        tail = size - pieces * length
        if tail:
            w[((end - base) >> 3) + 1] = tail | PREV_INUSE | self.nm
            self._free_chunk(heap, end, tail)
        else:
            w[((end - base) >> 3) + 1] |= PREV_INUSE

    def release_heaps(self) -> None:
        """Unmap every heap: the allocator is closing, and no block of this arena lives on."""
        for heap in self.heaps:
            if not self.is_main:
                self.heap_table.remove(heap)
            heap.release()
        self.heaps.clear()
        self.in_use.clear()
        self.lent.clear()

    # ================================================================= views
    def walk(self, heap: Heap[Arena]) -> Iterator[tuple[int, int, str]]:
        """``(chunk, head, state)`` for each chunk of ``heap``, then its top or fencepost
        (lock held).  ``state`` is "in use", "slab", "free", "top" or "fence"; at a head
        whose size cannot be right it is "corrupt", and the walk stops there.  Loose
        slab blocks are settled first, so that each slab shows its free blocks."""
        self.slab_pool.settle()
        if heap.size == 0:
            return  # the main heap before its first sbrk
        last = self.top if heap is self.heap else heap.fence
        free = self.bins.free
        nxt = heap.start
        try:
            for chunk, head in heap.chunks(last):
                if chunk in free:
                    yield chunk, head, "free"
                elif chunk2mem(chunk) in self.lent:
                    yield chunk, head, "slab"
                else:
                    yield chunk, head, "in use"
                nxt = chunk + (head & SIZE_BITS)
        except HeapCorruption:
            yield nxt, heap.head(nxt), "corrupt"
            return
        yield last, heap.head(last), "top" if heap is self.heap else "fence"

    # ================================================================= check
    def check(self) -> None:
        """Walk every heap and bin; raise :class:`HeapCorruption` on a broken invariant."""

        def fail(msg: str) -> HeapCorruption:
            return HeapCorruption(f"arena {self.index}: {msg}")

        problem = self.bins.validate()
        if problem:
            raise fail(problem)
        free = self.bins.free
        seen_free = 0
        seen_used = 0
        used_bytes = 0
        system = 0
        for heap in self.heaps:
            system += heap.size
            current = heap is self.heap
            if heap.size == 0 and current and self.is_main:
                continue  # the main heap before its first sbrk
            if current != (heap.fence == 0):
                raise fail(f"heap {heap.base:#x} has a fencepost iff it is not current")
            if heap.start != heap.base and heap.words[0] != self.index:
                raise fail(f"heap_info of {heap.base:#x} names arena {heap.words[0]}")
            end = heap.end
            last = self.top if current else heap.fence
            prev_free = False
            for chunk, head in heap.chunks(last):  # (it stops at a size that cannot be right)
                size = head & SIZE_BITS
                if head & (IS_MMAPPED | NON_MAIN_ARENA) != self.nm:
                    raise fail(f"chunk {chunk:#x} has wrong arena/mmap flags {head:#x}")
                if bool(head & PREV_INUSE) == prev_free:
                    raise fail(f"chunk {chunk:#x}: PREV_INUSE disagrees with its neighbour")
                if chunk in free:
                    if prev_free:
                        raise fail(f"free chunks adjacent at {chunk:#x}")
                    if free[chunk] != size:
                        raise fail(f"free chunk {chunk:#x} size differs from its bin")
                    if heap.prev_size(chunk + size) != size:
                        raise fail(f"free chunk {chunk:#x} footer (next prev_size) is wrong")
                    seen_free += 1
                    prev_free = True
                else:
                    if self.in_use.get(chunk2mem(chunk)) != size:
                        raise fail(f"chunk {chunk:#x} is neither free nor a recorded block")
                    seen_used += 1
                    used_bytes += size
                    prev_free = False
            if last >= end:
                raise fail(f"heap {heap.base:#x} has no room for its top/fence header")
            head = heap.head(last)
            if bool(head & PREV_INUSE) == prev_free:
                raise fail(f"top/fence {last:#x}: PREV_INUSE disagrees with its neighbour")
            if current and prev_free:
                raise fail(f"free chunk left unmerged before the top chunk {last:#x}")
            if head & SIZE_BITS != end - last:
                raise fail(f"top/fence {last:#x} size {head & SIZE_BITS} != {end - last}")
        if seen_free != len(free):
            raise fail("a binned chunk lies outside every heap")
        if seen_used != len(self.in_use) or used_bytes != self.inuse_bytes:
            raise fail("in-use records disagree with the heap walk")
        if system != self.system_mem:
            raise fail(f"system_mem {self.system_mem} != sum of heap sizes {system}")
        if any(self.in_use.get(mem) is None for mem in self.lent):
            raise fail("a chunk lent to a slab is not in use")
        self.slab_pool.check()
