"""Slabs: runs of equal-size blocks for small requests (balloc's classes, mimalloc's pages).

A request of at most ``SLAB_MAX`` (1 KiB, where glibc's tcache and
mimalloc's small pages stop) bytes is rounded up to a *size class* and
served from a slab of that class; anything larger is a chunk, cut to its
exact size.  The table has glibc-like 16-byte steps up to 256 bytes, then
four classes per doubling, as jemalloc and mimalloc do; it contains
GoAhead balloc's power-of-two classes up to 1 KiB and bounds the internal
waste of a block at 20% (see docs/slabs.md for the measured figures)::

    16 32 48 ... 224 240 256 | 320 384 448 512 | 640 768 896 1024

Why 1 KiB and not more: on real programs' traces (``python -m stress
where``) most of the memory a slab allocator wastes is free blocks in
partly used slabs and blocks kept in caches, and both grow with the class
size; a chunk of exact size wastes neither.  A block has no header, so a
slab block is 8 bytes smaller on average than glibc's chunk for the same
request, which is what lets the small sizes come out leaner than glibc.

A slab is one chunk of its arena: the chunk's own 16-byte header, then a few
blocks (at least 4, and at least 512 bytes of them), and nothing after them
(:meth:`Arena.lend_slab_chunks`).  It needs no alignment, so slabs cut one
after another from the top chunk tile the heap with no gap::

    arena heap:  ... | slab: chunk hdr | blk | blk | ... | blk | slab: chunk hdr | blk | ...
                     ^ base            ^ blocks       ^ bump    ^ end = the next chunk

The slab of a block is found by masking its address, one level below
``heap_for_ptr``: every class has a *window* (a power of two), the
:class:`SlabTable` lists, for every window address, the slabs overlapping
that window in address order, and the block's slab is the last of
``table[addr & -window]`` that starts at or below it.

Blocks never touched stay beyond ``bump`` (their pages are never made
resident); freed blocks go on the slab's ``free`` list.  Refills take the
fullest partial slab first, so emptier ones drain.  A slab whose blocks are
all free again is kept as a *spare* of its class, which the next refill
takes before carving a new slab; spares go back to the arena as ordinary
free chunks before it cuts its top or grows its heap for a slab, and on
``trim()``, so memory from a finished burst can serve any size.

Locking: a slab and its :class:`SlabPool` are guarded by the owning arena's
lock.  :class:`SlabTable` (window -> slabs) is read without a lock (one
``dict.get`` of an entry that is replaced whole, never changed in place:
atomic under the GIL and on free-threaded builds alike) and written under
its own lock.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterable
from typing import Protocol

from . import fork
from .chunk import CHUNK_HDR_SZ, MINSIZE, chunk2mem, mem2chunk
from .errors import HeapCorruption
from .memory import Region

__all__ = [
    "CLASS_BLOCKS",
    "CLASS_OF",
    "CLASS_SIZES",
    "CLASS_SLAB_BYTES",
    "CLASS_WINDOWS",
    "NCLASSES",
    "SLAB_MAX",
    "ChunkLender",
    "Slab",
    "SlabPool",
    "SlabTable",
    "blocks_for",
    "class_sizes",
    "slab_bytes_for",
    "window_for",
]

SLAB_MAX = 1024
# Blocks in a slab.  Few, because a slab goes back to its arena only when all
# of its blocks are free: the memory a class pins beyond its live blocks
# grows with the blocks per slab (``python -m stress slabmodel`` models it on
# a churn; ``python -m stress where`` measures it on real programs, where 4
# blocks and 512 bytes came out 3-11% leaner than 8 blocks and 1 KiB, and
# fastpath's pairs and churn within noise of them).
SLAB_BLOCKS = 4
# The fewest bytes of blocks in a slab: small classes get more blocks, so
# that a slab's bookkeeping (a Python object, table entries) is paid per
# half kilobyte at most.
MIN_SLAB_BYTES = 512
# The fewest blocks a hole slab (one cut from a free chunk too small for its
# class's slab) is made with: one block would be a chunk with a header, as
# costly as an ordinary chunk and no faster to find.
MIN_HOLE_BLOCKS = 2
# Classes have 16-byte steps up to here (glibc's tcache bins have them all
# the way): most small requests of real programs are below it, and a finer
# step wastes less of every block.
FINE_CLASSES_UP_TO = 256
# The slab table's *window* for a class: a power of two, at least MIN_WINDOW
# and at least the class's slab, so that a slab is entered under one or two
# window addresses.  Smaller windows would mean more keys, and more tuples
# to build and drop as slabs come and go; a window shared by a few slabs
# costs a lookup a comparison or two.
MIN_WINDOW = 1024


def class_sizes(per_doubling: int = 4) -> tuple[int, ...]:
    """16-byte steps up to FINE_CLASSES_UP_TO, then ``per_doubling`` classes per doubling
    up to SLAB_MAX."""
    sizes = list(range(16, FINE_CLASSES_UP_TO + 1, 16))
    base = FINE_CLASSES_UP_TO
    while base < SLAB_MAX:
        step = base // per_doubling
        sizes.extend(base + step * k for k in range(1, per_doubling + 1))
        base *= 2
    return tuple(sizes)


CLASS_SIZES: tuple[int, ...] = class_sizes()
NCLASSES = len(CLASS_SIZES)


def blocks_for(size: int, small: int = SLAB_BLOCKS) -> int:
    """How many blocks a slab of ``size``-byte blocks holds: ``small``, or more to fill
    MIN_SLAB_BYTES."""
    return max(small, -(-MIN_SLAB_BYTES // size))


def slab_bytes_for(size: int) -> int:
    """The length of a slab's chunk: its 16-byte header and its blocks, nothing more."""
    return CHUNK_HDR_SZ + blocks_for(size) * size


def window_for(size: int) -> int:
    """The window by which the slab table finds a slab of ``size``-byte blocks."""
    window = MIN_WINDOW
    while window < slab_bytes_for(size):
        window *= 2
    return window


CLASS_BLOCKS: tuple[int, ...] = tuple(blocks_for(s) for s in CLASS_SIZES)
CLASS_SLAB_BYTES: tuple[int, ...] = tuple(slab_bytes_for(s) for s in CLASS_SIZES)
CLASS_WINDOWS: tuple[int, ...] = tuple(window_for(s) for s in CLASS_SIZES)


def _class_of() -> bytes:
    table = bytearray(SLAB_MAX + 1)
    cls = 0
    for size in range(SLAB_MAX + 1):
        while CLASS_SIZES[cls] < size:
            cls += 1
        table[size] = cls
    return bytes(table)


# CLASS_OF[size] is the class index serving a request of ``size`` bytes (size <= SLAB_MAX).
CLASS_OF: bytes = _class_of()


class Slab:
    """One slab: ``capacity`` blocks of ``size`` bytes from ``base``, in ``region``.

    Its chunk is ``length`` bytes: the class's slab (``CLASS_SLAB_BYTES``),
    or a free chunk too small for one that still holds ``MIN_HOLE_BLOCKS``
    blocks or more (a *hole slab*, which may end in a tail of less than
    ``MINSIZE`` bytes after its last block).  Blocks below ``bump`` have been
    handed out at least once; ``free`` lists those of them that are free
    now, and ``nfree`` counts them and the untouched ones beyond ``bump``.
    """

    __slots__ = (
        "base",
        "bump",
        "capacity",
        "cls",
        "end",
        "free",
        "length",
        "nfree",
        "pool",
        "region",
        "size",
    )

    def __init__(
        self, pool: SlabPool, region: Region, base: int, cls: int, length: int = 0
    ) -> None:
        self.pool = pool
        self.region = region
        self.base = base
        self.cls = cls
        self.size = size = CLASS_SIZES[cls]
        self.length = length = length or CLASS_SLAB_BYTES[cls]
        first = base + CHUNK_HDR_SZ  # the slab's own chunk header comes first
        self.capacity = min((length - CHUNK_HDR_SZ) // size, CLASS_BLOCKS[cls])
        self.end = first + self.capacity * size
        self.bump = first
        self.free: list[int] = []
        self.nfree = self.capacity

    def is_block(self, addr: int) -> bool:
        first = self.base + CHUNK_HDR_SZ
        return first <= addr < self.end and (addr - first) % self.size == 0


class SlabTable(fork.OneLock):
    """Window addresses -> the slabs overlapping them: ``addr & -window``, then a range check.

    A slab of class ``cls`` is entered under every multiple of
    ``CLASS_WINDOWS[cls]`` from ``base & -window`` up to its end.  A window
    may overlap more than one slab (slabs need no alignment, and classes
    have different windows), so an entry is a tuple of slabs in address
    order, most often of one.  A block's slab is then the last one in its
    window's entry that starts at or below it.  Entries are replaced, never
    changed in place, so a reader that takes no lock sees a whole tuple, old
    or new, and either holds every slab that had a live block when it looked.
    """

    __slots__ = ("count", "slabs")

    def __init__(self) -> None:
        self.slabs: dict[int, tuple[Slab, ...]] = {}
        self.count = 0  # slabs entered, each under one or more windows
        self.lock = threading.Lock()

    @staticmethod
    def windows(slab: Slab) -> range:
        window = CLASS_WINDOWS[slab.cls]
        return range(slab.base & -window, slab.base + slab.length, window)

    def add(self, new: list[Slab]) -> None:
        slabs = self.slabs
        get = slabs.get
        with self.lock:
            for slab in new:
                for key in self.windows(slab):
                    found = get(key)
                    if found is None:
                        slabs[key] = (slab,)
                    elif found[-1].base < slab.base:
                        slabs[key] = (*found, slab)
                    else:
                        slabs[key] = tuple(sorted((*found, slab), key=_base))
            self.count += len(new)

    def clear(self) -> None:
        """Forget every slab (the allocator is closing)."""
        with self.lock:
            self.slabs.clear()
            self.count = 0

    def remove(self, slab: Slab) -> None:
        slabs = self.slabs
        with self.lock:
            for key in self.windows(slab):
                found = slabs[key]
                if len(found) == 1:
                    del slabs[key]
                else:
                    slabs[key] = tuple([other for other in found if other is not slab])
            self.count -= 1

    def slab_of(self, addr: int, cls: int) -> Slab | None:
        """The slab of class ``cls`` whose chunk holds ``addr``, or None."""
        slab = _holder(fork.lookup(self.slabs, addr & -CLASS_WINDOWS[cls]) or (), addr)
        return slab if slab is not None and slab.cls == cls else None

    def owners(self, blocks: list[int], cls: int) -> list[Slab]:
        """The slab of each of ``blocks``, all live blocks of class ``cls`` (a flush)."""
        slabs = self.slabs
        mask = -CLASS_WINDOWS[cls]
        out: list[Slab] = []
        append = out.append
        for addr in blocks:
            found = slabs[addr & mask]
            slab = found[-1]
            if slab.base > addr:  # the window is shared: an earlier slab holds it
                for slab in reversed(found):
                    if slab.base <= addr:
                        break
            append(slab)
        return out

    def check_blocks(self, held: Iterable[tuple[int, int, str]], pools: list[SlabPool]) -> None:
        """Every slab block is held (live or cached, as ``held`` lists them) or free in its
        slab, exactly one of them, and every slab of ``pools`` (all of them) is entered
        here.  Each pool is read under its lock; the holders must be idle."""
        count: dict[Slab, int] = {}
        seen: set[int] = set()
        for addr, cls, what in held:
            slab = self.slab_of(addr, cls)
            if slab is None or not slab.is_block(addr) or addr >= slab.bump:
                raise HeapCorruption(f"{what} block {addr:#x} is not a block of any slab")
            if addr in seen:
                raise HeapCorruption(f"block {addr:#x} is {what} and also elsewhere")
            seen.add(addr)
            count[slab] = count.get(slab, 0) + 1
        owned = 0
        for pool in pools:
            with pool.lock:
                pool.settle()
                owned += len(pool.slabs)
                for slab in pool.slabs.values():
                    if not seen.isdisjoint(slab.free):
                        raise HeapCorruption(
                            f"slab {slab.base:#x} has a block free and also in use"
                        )
                    if count.get(slab, 0) + slab.nfree != slab.capacity:
                        raise HeapCorruption(
                            f"slab {slab.base:#x}: {count.get(slab, 0)} held + {slab.nfree}"
                            f" free != {slab.capacity} blocks"
                        )
        entered = {slab for found in self.slabs.values() for slab in found}
        if self.count != owned or len(entered) != owned:
            raise HeapCorruption("the slab table holds slabs no arena owns")

    def find(self, addr: int) -> Slab | None:
        """The slab holding ``addr`` whatever its class (slow: tries every window)."""
        for window in sorted(set(CLASS_WINDOWS)):
            slab = _holder(fork.lookup(self.slabs, addr & -window) or (), addr)
            if slab is not None:
                return slab
        return None


def _holder(found: tuple[Slab, ...], addr: int) -> Slab | None:
    """The slab of a window's entry (in address order) whose chunk holds ``addr``."""
    for slab in reversed(found):
        if slab.base <= addr:
            return slab if addr < slab.end else None
    return None


# ===================================================================== pool
class ChunkLender(Protocol):
    """What a :class:`SlabPool` needs from its arena: chunks to cut slabs from.

    The arena lends a slab's chunk, records it as lent (so that ``free`` of
    the chunk's address is refused), and takes it back when the slab is
    wholly free.  Its ``lock`` guards the pool as well as the arena.
    """

    @property
    def index(self) -> int: ...

    @property
    def lock(self) -> threading.Lock: ...

    @property
    def lent(self) -> dict[int, Region]: ...

    @property
    def in_use(self) -> dict[int, int]: ...

    def lend_slab_chunks(self, length: int, count: int, top: bool, grow: bool) -> list[int]: ...

    def lend_hole(self, least: int, unit: int, most: int) -> tuple[int, int]: ...

    def take_back_slab_chunk(self, mem: int) -> None: ...


class SlabPool:
    """One arena's slabs, and the lists that make refills fast.

    A slab is in exactly one of these states, and on these lists::

        state     free blocks         partial[cls]  spares[cls]  slabs
        full      0                   no            no           yes
        partial   1 .. capacity - 1   yes           no           yes
        spare     capacity            no            yes          yes
        gone      -                   no            no           no: the arena's chunk again

    A flush whose blocks all lie in one heap of this arena (the usual case:
    a thread frees what its own arena served) does not sort them into their
    slabs: they go on ``loose[cls]`` (:meth:`give_back_loose`), a list the
    next refill of the class takes from first, so a burst freed and
    allocated again costs two list operations per batch, not a table lookup
    per block.  Their slabs still count them as in use.  :meth:`settle`
    sorts every loose block into its slab; it runs before a new slab is cut
    (so that emptied slabs can serve first), and before anything reads the
    slabs' state (checks, statistics, views, ``trim()``, a forked child's
    clean-up).

    A slab whose last block comes back is kept as a spare of its class: the
    next refill of the class takes it with no work on the arena, where
    carving a slab and freeing it as a chunk cost about ten times what
    handing out its blocks does (a program that frees a burst and allocates
    the next carved and freed every slab of it).  Spares go back to the
    arena when it needs the room: before a new slab is cut from the top
    chunk or the heap grows, one at a time, as many as it takes
    (:meth:`_new_slabs`), and all of them on ``trim()``.

    Locking: everything here is guarded by the owning arena's lock
    (:attr:`lock`); the :class:`SlabTable` has its own.
    """

    __slots__ = ("loose", "owner", "partial", "slabs", "spares", "table")

    def __init__(self, owner: ChunkLender, table: SlabTable) -> None:
        self.owner = owner
        self.table = table
        self.slabs: dict[int, Slab] = {}  # chunk address -> slab
        # per class: the slabs with some blocks free (chunk address -> slab), and
        # the slabs with all of them free
        self.partial: list[dict[int, Slab]] = [{} for _ in range(NCLASSES)]
        self.spares: list[list[Slab]] = [[] for _ in range(NCLASSES)]
        # per class: free blocks given back but not yet sorted into their slabs
        self.loose: list[list[int]] = [[] for _ in range(NCLASSES)]

    @property
    def lock(self) -> threading.Lock:
        """The owning arena's lock (read each time: a forked child renews it)."""
        return self.owner.lock

    # ------------------------------------------------------------------ take
    def take(self, cls: int, n: int, top: bool = True, grow: bool = True) -> list[int]:
        """Up to ``n`` free blocks of class ``cls`` (new slabs if needed); lock held.

        Partial slabs first, fullest first, so that emptier ones drain; then
        the class's spares; then new slabs.  Returns fewer (possibly none)
        only when the arena cannot lend a new slab's chunk: from free chunks,
        then from the top chunk if ``top``, then from a grown heap if
        ``grow`` (:meth:`Arena.lend_slab_chunks`), every class's spares going
        back before the heap grows.  The partial slabs are sorted once per
        call: a scan per slab taken would make a refill quadratic in their
        number.
        """
        loose = self.loose[cls]
        if len(loose) >= n:
            out = loose[-n:]
            del loose[-n:]
            return out
        out = loose[:]
        loose.clear()
        n -= len(out)
        partial = self.partial[cls]
        if partial:
            order = (
                sorted(partial.values(), key=_free_count) if len(partial) > 1 else partial.values()
            )
            full = []
            for slab in order:
                n -= _take(slab, n, out)
                if slab.nfree == 0:
                    full.append(slab.base)
                if not n:
                    break
            for base in full:
                del partial[base]
            if not n:
                return out
        spares = self.spares[cls]
        while spares:
            slab = spares.pop()
            n -= _take(slab, n, out)
            if slab.nfree:
                partial[slab.base] = slab
            if not n:
                return out
        if n:
            # Other classes' loose blocks into their slabs, so that slabs they empty
            # are spares that _new_slabs can give back before cutting new memory.
            # (This class's loose blocks are all in ``out`` already.)
            self.settle()
        while n:
            # All the slabs the rest needs, carved in one go, or as many as fit.
            fresh = self._new_slabs(cls, -(-n // CLASS_BLOCKS[cls]), top, grow)
            if not fresh:
                break
            for new in fresh:
                n -= _take(new, n, out)
                if new.nfree:
                    partial[new.base] = new
        return out

    def _new_slabs(self, cls: int, count: int, top: bool, grow: bool) -> list[Slab]:
        owner = self.owner
        length = CLASS_SLAB_BYTES[cls]
        mems = owner.lend_slab_chunks(length, count, False, False)
        # Free chunks too small for a whole slab, as glibc would fill them with
        # small chunks: a slab of as many blocks as each holds.
        holes: list[Slab] = []
        size = CLASS_SIZES[cls]
        while len(mems) + len(holes) < count:
            mem, hole = owner.lend_hole(CHUNK_HDR_SZ + MIN_HOLE_BLOCKS * size, size, length)
            if not mem:
                break
            holes.append(Slab(self, owner.lent[mem], mem2chunk(mem), cls, hole))
        count -= len(holes)
        # Before the top chunk is cut or the heap grows, spares of other classes go
        # back, one at a time, each a free chunk that may serve.
        while len(mems) < count:
            spare = self._spare_for(length)
            if spare is None:
                break
            self._release(spare)
            mems += owner.lend_slab_chunks(length, count - len(mems), False, False)
        if len(mems) < count and top:
            mems += owner.lend_slab_chunks(length, count - len(mems), top, grow)
        if not mems and not holes:
            return []
        # One run of slabs may come from free chunks in several of the arena's heaps.
        lent = owner.lent
        new = holes + [Slab(self, lent[mem], mem2chunk(mem), cls) for mem in mems]
        slabs = self.slabs
        for slab in new:
            slabs[slab.base] = slab
        self.table.add(new)
        return new

    # ---------------------------------------------------------------- return
    def give_back_loose(self, cls: int, blocks: list[int]) -> None:
        """Take back ``blocks`` of class ``cls``, all in one heap of this arena, onto the
        class's loose list (lock held): a flush's usual case, one list extend."""
        self.loose[cls] += blocks

    def settle(self) -> None:
        """Sort every loose block into its slab (lock held)."""
        for cls, loose in enumerate(self.loose):
            if loose:
                blocks = loose[:]
                loose.clear()
                self.give_back(cls, blocks)

    def give_back(self, cls: int, blocks: list[int]) -> list[int]:
        """Free those of ``blocks`` (class ``cls``) whose slabs are in this pool in their
        slabs (lock held); return the others, in order.  A slab that becomes wholly
        free is kept as a spare of its class."""
        partial = self.partial[cls]
        emptied: list[Slab] = []
        others: list[int] = []
        for addr, slab in zip(blocks, self.table.owners(blocks, cls), strict=True):
            if slab.pool is not self:
                others.append(addr)
                continue
            slab.free.append(addr)
            slab.nfree = nfree = slab.nfree + 1
            if nfree == 1:
                partial[slab.base] = slab
            elif nfree == slab.capacity:
                emptied.append(slab)
        if emptied:
            for slab in emptied:
                del partial[slab.base]
            self.spares[cls] += emptied
        return others

    def _spare_for(self, length: int) -> Slab | None:
        """The spare to give back so that a ``length``-byte slab can be cut: the
        smallest that holds one, else the biggest (its neighbours may be free)."""
        best: list[Slab] | None = None
        for cls in _BY_SLAB_BYTES:
            spares = self.spares[cls]
            if spares:
                best = spares
                if CLASS_SLAB_BYTES[cls] >= length:
                    break
        return None if best is None else best.pop()

    def release_spares(self) -> int:
        """Give every spare slab back to the arena as a chunk (lock held).  Returns their bytes."""
        self.settle()
        released = 0
        for spares in self.spares:
            if spares:
                for slab in spares:
                    released += slab.length
                    self._release(slab)
                spares.clear()
        return released

    def reclaim_orphans(self, held: set[int]) -> None:
        """Every block of these slabs that is neither in ``held`` nor free goes back.

        Only a forked child calls this: a thread that did not survive the fork
        may have been carrying blocks between a slab and its cache (a refill, a
        flush), and nothing can reach them now.  The only thread left is inside
        ``os.fork``, not the allocator, so ``held`` (every live and cached block)
        is exact.
        """
        self.settle()
        for slab in list(self.slabs.values()):  # (a slab that empties goes back)
            free = set(slab.free)
            orphans = [
                addr
                for addr in range(slab.base + CHUNK_HDR_SZ, slab.bump, slab.size)
                if addr not in held and addr not in free
            ]
            if orphans:
                self.give_back(slab.cls, orphans)

    def _release(self, slab: Slab) -> None:
        del self.slabs[slab.base]
        self.table.remove(slab)
        self.owner.take_back_slab_chunk(chunk2mem(slab.base))

    # ----------------------------------------------------------------- views
    def usage(self) -> tuple[int, int, int]:
        """``(slabs, bytes of their chunks, free blocks)``, lock held."""
        self.settle()
        slabs = self.slabs.values()
        return (
            len(self.slabs),
            sum(slab.length for slab in slabs),
            sum(slab.nfree for slab in slabs),
        )

    def check(self) -> None:
        """Every slab against the table, the arena's records and this pool's lists (lock
        held; loose blocks are settled first, each into a slab that must hold it)."""
        for cls, loose in enumerate(self.loose):
            if len(set(loose)) != len(loose):
                raise HeapCorruption(f"arena {self.owner.index}: a loose block is listed twice")
            try:
                strays = self.give_back(cls, loose[:]) if loose else []
            except KeyError:  # (no slab's window holds it)
                strays = [0]
            if strays:
                raise HeapCorruption(f"arena {self.owner.index}: a loose block of no slab here")
            loose.clear()
        owner = self.owner
        table = self.table.slabs
        lent = owner.lent
        spares = [set(found) for found in self.spares]
        if sum(map(len, spares)) != sum(map(len, self.spares)):
            raise HeapCorruption(f"arena {owner.index}: a spare slab is listed twice")
        for base, slab in self.slabs.items():
            where = f"slab {base:#x} (class {slab.size}) of arena {owner.index}"
            if slab.pool is not self or any(
                slab not in table.get(key, ()) for key in SlabTable.windows(slab)
            ):
                raise HeapCorruption(f"{where} is missing from the slab table")
            if lent.get(chunk2mem(base)) is not slab.region:
                raise HeapCorruption(f"{where} is not a chunk its arena lent in that region")
            if owner.in_use.get(chunk2mem(base)) != slab.length or not (
                slab.end <= base + slab.length < slab.end + MINSIZE
            ):
                raise HeapCorruption(f"{where} is not an in-use chunk of its slab's length")
            untouched = (slab.end - slab.bump) // slab.size
            if slab.nfree != len(slab.free) + untouched or len(set(slab.free)) != len(slab.free):
                raise HeapCorruption(f"{where}: free count disagrees with its free list")
            if any(not slab.is_block(b) or b >= slab.bump for b in slab.free):
                raise HeapCorruption(f"{where}: free list holds a non-block")
            if (0 < slab.nfree < slab.capacity) != (base in self.partial[slab.cls]):
                raise HeapCorruption(f"{where}: partial-list membership is wrong")
            if (slab.nfree == slab.capacity) != (slab in spares[slab.cls]):
                raise HeapCorruption(f"{where}: spare-list membership is wrong")
        if len(lent) != len(self.slabs):
            raise HeapCorruption(f"arena {owner.index} lent chunks to slabs it no longer has")
        for cls, partial in enumerate(self.partial):
            for slab in (*partial.values(), *self.spares[cls]):
                if self.slabs.get(slab.base) is not slab or slab.cls != cls:
                    raise HeapCorruption(
                        f"arena {owner.index}: stale slab {slab.base:#x} in a list"
                    )


def _take(slab: Slab, n: int, out: list[int]) -> int:
    """Move up to ``n`` blocks of ``slab`` to ``out``: freed ones first, then fresh ones."""
    free = slab.free
    k = len(free)
    if k >= n:
        out += free[-n:]
        del free[-n:]
        slab.nfree -= n
        return n
    if k:
        out += free
        free.clear()
    want = n - k
    fresh = (slab.end - slab.bump) // slab.size
    if fresh > want:
        fresh = want
    if fresh:
        stop = slab.bump + fresh * slab.size
        out += range(slab.bump, stop, slab.size)
        slab.bump = stop
    slab.nfree -= k + fresh
    return k + fresh


_free_count = operator.attrgetter("nfree")
# Classes by the length of their slabs, shortest first (see SlabPool._spare_for).
_BY_SLAB_BYTES = sorted(range(NCLASSES), key=CLASS_SLAB_BYTES.__getitem__)


def _base(slab: Slab) -> int:
    return slab.base


# ================================================================ the table
def waste_report() -> str:
    """The class table with its internal waste, as docs/slabs.md shows it.

    Waste of a request is ``(class size - request) / class size``; the mean is
    over every request size from 1 to the class size (uniform sizes), the max
    over the worst request of the class (one byte above the class below).
    A slab is its 16-byte chunk header and its blocks, so it has no tail.
    """
    lines = ["| class | size | blocks | slab bytes | window | worst waste | mean waste (uniform) |"]
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    prev = 0
    for cls, size in enumerate(CLASS_SIZES):
        worst = (size - (prev + 1)) / size
        mean = sum((size - r) / size for r in range(prev + 1, size + 1)) / (size - prev)
        lines.append(
            f"| {cls} | {size} | {CLASS_BLOCKS[cls]} | {CLASS_SLAB_BYTES[cls]} |"
            f" {CLASS_WINDOWS[cls]} | {worst:.1%} | {mean:.1%} |"
        )
        prev = size
    # GoAhead balloc's power-of-two classes, as far as the slabs go (16 .. SLAB_MAX)
    balloc = tuple(16 << k for k in range((SLAB_MAX // 16).bit_length()))
    lines.append("")
    for lo in (1, 16):
        lines.append(
            f"requests uniform in {lo}..{SLAB_MAX}: {uniform_waste(CLASS_SIZES, lo, SLAB_MAX):.1%}"
            f" of block bytes wasted (balloc's {len(balloc)} classes up to {SLAB_MAX}:"
            f" {uniform_waste(balloc, lo, SLAB_MAX):.1%})"
        )
    return "\n".join(lines)


def uniform_waste(sizes: tuple[int, ...], lo: int, hi: int) -> float:
    """The share of block bytes wasted when every request size in ``lo..hi`` comes once,
    each served by the smallest of ``sizes`` (ascending) that holds it."""
    waste = total = 0
    cls = 0
    for request in range(lo, hi + 1):
        while sizes[cls] < request:
            cls += 1
        waste += sizes[cls] - request
        total += sizes[cls]
    return waste / total
