"""Bins: where an arena keeps its free chunks, sorted for fast best fit.

glibc's layout, with glibc's indexes::

    bin 1         unsorted   every freed chunk lands here first; malloc sorts it
    bins 2..63    small      one exact size each, 16 bytes apart (32 .. 1008)
    bins 64..126  large      ranges of sizes, log-spaced, kept sorted by size
    binmap                   one bit per bin: is it non-empty?

The difference from glibc is where the links live.  glibc threads ``fd`` and
``bk`` pointers through the free chunks themselves, which is why a write to
freed memory can take over a C program.  Here the links are Python
containers: the chunk *headers* stay in-band (they are what coalescing walks),
but a stray write can at worst forge a header, which the arena detects by
comparing it with :attr:`Bins.free`.

Locking: a :class:`Bins` belongs to one arena and is guarded by that arena's lock.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from itertools import islice

from .chunk import MINSIZE

__all__ = [
    "NBINS",
    "NFASTBINS",
    "UNSORTED",
    "Bins",
    "GlibcBins",
    "bin_index",
    "fastbin_index",
    "largebin_index",
]

NBINS = 128
UNSORTED = 1
NSMALLBINS = 64
MIN_LARGE_SIZE = NSMALLBINS * 16  # 1024: the first size kept in a large bin
# glibc gives up sorting the unsorted bin after this many chunks per call.
MAX_ITERS = 10000
# glibc's fastbins: chunk sizes 32 .. 176, one bin per 16 bytes (only those up to
# the policy's mxfast are used; 128 by default).
NFASTBINS = 10


def fastbin_index(size: int) -> int:
    return (size >> 4) - 2


def _largebin_index(size: int) -> int:
    """glibc's ``largebin_index_64``: 32 bins 64 bytes apart, then 16 at 512, ..."""
    if (size >> 6) <= 48:
        return 48 + (size >> 6)
    if (size >> 9) <= 20:
        return 91 + (size >> 9)
    if (size >> 12) <= 10:
        return 110 + (size >> 12)
    if (size >> 15) <= 4:
        return 119 + (size >> 15)
    if (size >> 18) <= 2:
        return 124 + (size >> 18)
    return 126


# Every threshold of largebin_index_64 is a multiple of 64 and the last one is
# 3 << 18, so below that the index is a function of ``size >> 6``: a table
# lookup instead of up to five tests.  The hot paths below inline
# ``LARGEBIN_TABLE[size >> 6] if size < LARGEBIN_TABLE_END else NBINS - 2``.
LARGEBIN_TABLE_END = 3 << 18
LARGEBIN_TABLE = bytes(
    _largebin_index(step << 6) if step << 6 >= MIN_LARGE_SIZE else 0
    for step in range(LARGEBIN_TABLE_END >> 6)
)


def largebin_index(size: int) -> int:
    """The large bin of ``size`` (at least ``MIN_LARGE_SIZE``): glibc's ``largebin_index_64``."""
    return LARGEBIN_TABLE[size >> 6] if size < LARGEBIN_TABLE_END else NBINS - 2


def bin_index(size: int) -> int:
    return size >> 4 if size < MIN_LARGE_SIZE else largebin_index(size)


class Bins:
    """The free chunks of one arena (the top chunk excluded).

    * ``free``      chunk address -> size, for every binned chunk: the ground
                    truth that in-band headers are checked against;
    * ``unsorted``  chunk addresses in arrival order (a dict used as an ordered set);
    * ``small``     per small bin, chunk addresses in FIFO order;
    * ``large``     per large bin, a sorted list of ``(size, address)``, so the
                    best fit is the first entry not smaller than the request,
                    and among equal sizes the lowest address (address-ordered
                    best fit, which keeps fragmentation low);
    * ``binmap``    bit ``i`` set when sorted bin ``i`` is non-empty.
    """

    __slots__ = ("binmap", "free", "free_bytes", "large", "small", "unsorted")

    def __init__(self) -> None:
        self.free: dict[int, int] = {}
        self.free_bytes = 0
        self.unsorted: dict[int, None] = {}
        self.small: list[dict[int, None]] = [{} for _ in range(NSMALLBINS)]
        self.large: list[list[tuple[int, int]]] = [[] for _ in range(NBINS - NSMALLBINS)]
        self.binmap = 0

    # ------------------------------------------------------------------ insert
    def add_unsorted(self, chunk: int, size: int) -> None:
        self.free[chunk] = size
        self.free_bytes += size
        self.unsorted[chunk] = None

    def sort_unsorted(self, nb: int, last_remainder: int) -> tuple[int, int]:
        """glibc's pass over the unsorted bin in ``_int_malloc``, for a request of ``nb``.

        Takes the unsorted chunks oldest first and returns ``(chunk, size)``,
        out of the bins, as soon as one serves ``nb`` outright: an exact fit,
        or ``last_remainder`` when it is the only unsorted chunk, ``nb`` is
        small and it can be split (locality for runs of small requests).
        Every chunk before it goes to its sorted bin.
        ``(0, 0)`` when none served; at most ``MAX_ITERS`` are sorted per call.
        """
        unsorted = self.unsorted
        free = self.free
        binmap = self.binmap
        for chunk in list(islice(unsorted, MAX_ITERS)):
            size = free[chunk]
            del unsorted[chunk]
            if size == nb or (
                chunk == last_remainder
                and nb < MIN_LARGE_SIZE
                and not unsorted
                and size >= nb + MINSIZE
            ):
                del free[chunk]
                self.free_bytes -= size
                self.binmap = binmap
                return chunk, size
            if size < MIN_LARGE_SIZE:
                idx = size >> 4
                self.small[idx][chunk] = None
            else:
                idx = LARGEBIN_TABLE[size >> 6] if size < LARGEBIN_TABLE_END else NBINS - 2
                insort(self.large[idx - NSMALLBINS], (size, chunk))
            binmap |= 1 << idx
        self.binmap = binmap
        return 0, 0

    # ------------------------------------------------------------------ remove
    def unlink(self, chunk: int) -> int:
        """Take a known free chunk out of whichever bin holds it; return its size."""
        size = self.free.pop(chunk)
        self.free_bytes -= size
        if chunk in self.unsorted:
            del self.unsorted[chunk]
        elif size < MIN_LARGE_SIZE:
            self._unlink_sorted(chunk, size, size >> 4)
        else:
            idx = LARGEBIN_TABLE[size >> 6] if size < LARGEBIN_TABLE_END else NBINS - 2
            self._unlink_sorted(chunk, size, idx)
        return size

    def _unlink_sorted(self, chunk: int, size: int, idx: int) -> None:
        """Take ``chunk`` (already out of ``free``) out of sorted bin ``idx``."""
        if idx < NSMALLBINS:
            small = self.small[idx]
            del small[chunk]
            if not small:
                self.binmap &= ~(1 << idx)
        else:
            lst = self.large[idx - NSMALLBINS]
            del lst[bisect_left(lst, (size, chunk))]
            if not lst:
                self.binmap &= ~(1 << idx)

    def take_small(self, size: int) -> int:
        """Pop the oldest chunk of exactly ``size`` (a small size), or 0."""
        small = self.small[size >> 4]
        if not small:
            return 0
        chunk = next(iter(small))
        self.unlink(chunk)
        return chunk

    def take_best_fit(self, size: int) -> tuple[int, int]:
        """Pop the smallest sorted chunk of at least ``size`` bytes: ``(chunk, size)`` or (0, 0).

        Looks in ``size``'s own bin, then uses the binmap to jump to the next
        non-empty bin, as glibc's ``_int_malloc`` does.
        """
        binmap = self.binmap
        if size < MIN_LARGE_SIZE:
            idx = size >> 4
        else:
            idx = LARGEBIN_TABLE[size >> 6] if size < LARGEBIN_TABLE_END else NBINS - 2
            if binmap >> idx & 1:
                lst = self.large[idx - NSMALLBINS]
                pos = bisect_left(lst, (size, 0))
                if pos < len(lst):
                    found, chunk = lst[pos]
                    return chunk, self._take_sorted(chunk, found, idx)
        rest = binmap >> (idx + 1)
        if not rest:
            return 0, 0
        idx += (rest & -rest).bit_length()
        if idx < NSMALLBINS:
            chunk = next(iter(self.small[idx]))
            return chunk, self._take_sorted(chunk, idx << 4, idx)
        found, chunk = self.large[idx - NSMALLBINS][0]
        return chunk, self._take_sorted(chunk, found, idx)

    def _take_sorted(self, chunk: int, size: int, idx: int) -> int:
        """Take ``chunk`` of ``size`` out of ``free`` and sorted bin ``idx``; return ``size``."""
        del self.free[chunk]
        self.free_bytes -= size
        self._unlink_sorted(chunk, size, idx)
        return size

    # ------------------------------------------------------------------ views
    def nonempty(self) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """``(bin index, [(size, chunk), ...])`` for every non-empty bin: the unsorted
        bin first (index ``UNSORTED``, in arrival order), then the sorted bins."""
        free = self.free
        if self.unsorted:
            yield UNSORTED, [(free[chunk], chunk) for chunk in self.unsorted]
        for idx, small in enumerate(self.small):
            if small:
                yield idx, [(idx << 4, chunk) for chunk in small]
        for off, large in enumerate(self.large):
            if large:
                yield off + NSMALLBINS, list(large)

    def histogram(self) -> list[tuple[str, int, int, int, int]]:
        """``(kind, from, to, total, count)`` per non-empty bin, as glibc's ``malloc_info``
        lists them: the sorted bins by size, then the unsorted bin."""
        rows: list[tuple[str, int, int, int, int]] = []
        unsorted: list[tuple[str, int, int, int, int]] = []
        for idx, entries in self.nonempty():
            sizes = [size for size, _ in entries]
            if idx == UNSORTED:
                unsorted.append(("unsorted", min(sizes), max(sizes), sum(sizes), len(sizes)))
            else:
                low = sizes[0] - 15 if idx < NSMALLBINS else sizes[0]
                rows.append(("size", low, sizes[-1], sum(sizes), len(sizes)))
        return rows + unsorted

    # ------------------------------------------------------------------ check
    def validate(self) -> str | None:
        """Return a description of the first broken invariant, or None."""
        seen: dict[int, int] = {}
        for chunk in self.unsorted:
            seen[chunk] = UNSORTED
        for idx, small in enumerate(self.small):
            for chunk in small:
                if chunk in seen:
                    return f"chunk {chunk:#x} is in two bins"
                if self.free.get(chunk) != idx << 4:
                    return f"chunk {chunk:#x} in small bin {idx} has the wrong size"
                seen[chunk] = idx
            if bool(small) != bool(self.binmap >> idx & 1):
                return f"binmap bit {idx} disagrees with its bin"
        for off, lst in enumerate(self.large):
            idx = off + NSMALLBINS
            if lst != sorted(lst):
                return f"large bin {idx} is not sorted"
            for size, chunk in lst:
                if chunk in seen:
                    return f"chunk {chunk:#x} is in two bins"
                if self.free.get(chunk) != size or largebin_index(size) != idx:
                    return f"chunk {chunk:#x} in large bin {idx} has the wrong size"
                seen[chunk] = idx
            if bool(lst) != bool(self.binmap >> idx & 1):
                return f"binmap bit {idx} disagrees with its bin"
        if seen.keys() != self.free.keys():
            return "a free chunk is in no bin"
        if sum(self.free.values()) != self.free_bytes:
            return "free byte count disagrees with the bins"
        return None


class GlibcBins(Bins):
    """The bins as glibc 2.36 orders them, for the glibc policy (:mod:`arenas.ptmalloc`).

    Everything :class:`Bins` keeps, with two differences that decide *which*
    chunk a request gets, and so every offset:

    * ``fast``      per fastbin, chunk addresses, LIFO (the list's end is the bin's
                    head).  Fastbin chunks stay *in use* as far as coalescing is
                    concerned (their successor's ``PREV_INUSE`` stays set), so they
                    are not in ``free``; ``fast_sizes`` maps each one to its size.
    * large bins    glibc's skip list, as ``sizes[i]`` (the distinct sizes in large
                    bin ``i``, ascending) and ``groups[i]`` (size -> its chunks in
                    glibc's ``fd`` order).  A new size starts a group; a chunk of a
                    size already there goes *second* in its group ("always insert in
                    the second position", so the skip list's head never changes).
                    The bin's ``fd`` order runs from the largest group to the
                    smallest, so ``last(bin)`` is the smallest group's last chunk.

    ``Bins.large`` stays empty here.  The unsorted bin and the small bins are
    :class:`Bins`' own: a chunk is added at the head (appended to the dict) and
    taken from the tail (the dict's first), as glibc does.

    Locking: the arena's lock, as for :class:`Bins`.
    """

    __slots__ = ("fast", "fast_sizes", "groups", "sizes")

    def __init__(self) -> None:
        super().__init__()
        self.fast: list[list[int]] = [[] for _ in range(NFASTBINS)]
        self.fast_sizes: dict[int, int] = {}
        self.sizes: list[list[int]] = [[] for _ in range(NBINS - NSMALLBINS)]
        self.groups: list[dict[int, list[int]]] = [{} for _ in range(NBINS - NSMALLBINS)]

    # ------------------------------------------------------------------ fastbins
    def push_fast(self, chunk: int, size: int) -> None:
        self.fast[fastbin_index(size)].append(chunk)
        self.fast_sizes[chunk] = size

    def pop_fast(self, idx: int) -> int:
        """The head of fastbin ``idx`` (which must not be empty), taken out."""
        chunk = self.fast[idx].pop()
        del self.fast_sizes[chunk]
        return chunk

    # ------------------------------------------------------------------ sorted bins
    def place(self, chunk: int, size: int) -> None:
        """Put a free chunk into its small or large bin, where glibc's unsorted pass would."""
        self.free[chunk] = size
        self.free_bytes += size
        if size < MIN_LARGE_SIZE:
            idx = size >> 4
            self.small[idx][chunk] = None
        else:
            idx = largebin_index(size)
            off = idx - NSMALLBINS
            group = self.groups[off].get(size)
            if group is None:
                insort(self.sizes[off], size)
                self.groups[off][size] = [chunk]
            else:
                group.insert(1, chunk)
        self.binmap |= 1 << idx

    def _unlink_sorted(self, chunk: int, size: int, idx: int) -> None:
        if idx < NSMALLBINS:
            super()._unlink_sorted(chunk, size, idx)
            return
        off = idx - NSMALLBINS
        group = self.groups[off][size]
        group.remove(chunk)  # (the next chunk of its size becomes the group's head)
        if not group:
            del self.groups[off][size]
            sizes = self.sizes[off]
            del sizes[bisect_left(sizes, size)]
            if not sizes:
                self.binmap &= ~(1 << idx)

    def take_large(self, nb: int) -> tuple[int, int]:
        """glibc's search of a large request's own bin: the smallest size that fits, and of
        that size the second chunk when there are several.  ``(chunk, size)``, unlinked,
        or (0, 0)."""
        idx = largebin_index(nb)
        off = idx - NSMALLBINS
        sizes = self.sizes[off]
        pos = bisect_left(sizes, nb)
        if pos == len(sizes):
            return 0, 0
        size = sizes[pos]
        group = self.groups[off][size]
        chunk = group[1] if len(group) > 1 else group[0]
        self.unlink(chunk)
        return chunk, size

    def take_next_bin(self, idx: int) -> tuple[int, int]:
        """glibc's binmap scan: ``last(bin)`` of the first non-empty bin after ``idx``,
        unlinked: ``(chunk, size)``, or (0, 0) when every later bin is empty."""
        rest = self.binmap >> (idx + 1)
        if not rest:
            return 0, 0
        idx += (rest & -rest).bit_length()
        if idx < NSMALLBINS:
            chunk = next(iter(self.small[idx]))
        else:
            off = idx - NSMALLBINS
            chunk = self.groups[off][self.sizes[off][0]][-1]
        return chunk, self.unlink(chunk)

    # ------------------------------------------------------------------ views
    def large_in_order(self, idx: int) -> list[tuple[int, int]]:
        """Large bin ``idx`` in glibc's ``fd`` order: ``[(size, chunk), ...]``."""
        off = idx - NSMALLBINS
        return [
            (size, chunk) for size in reversed(self.sizes[off]) for chunk in self.groups[off][size]
        ]

    def nonempty(self) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        free = self.free
        if self.unsorted:
            yield UNSORTED, [(free[chunk], chunk) for chunk in self.unsorted]
        for idx, small in enumerate(self.small):
            if small:
                yield idx, [(idx << 4, chunk) for chunk in small]
        for off, sizes in enumerate(self.sizes):
            if sizes:
                yield off + NSMALLBINS, self.large_in_order(off + NSMALLBINS)

    # ------------------------------------------------------------------ check
    def validate(self) -> str | None:
        for idx, fast in enumerate(self.fast):
            for chunk in fast:
                if fastbin_index(self.fast_sizes.get(chunk, 0)) != idx:
                    return f"chunk {chunk:#x} in fastbin {idx} has the wrong size"
                if chunk in self.free:
                    return f"chunk {chunk:#x} is both in a fastbin and free"
        if sum(map(len, self.fast)) != len(self.fast_sizes):
            return "a fastbin chunk is listed twice, or in no fastbin"
        seen: set[int] = set(self.unsorted)
        for idx, small in enumerate(self.small):
            for chunk in small:
                if chunk in seen or self.free.get(chunk) != idx << 4:
                    return f"chunk {chunk:#x} in small bin {idx} is in two bins or the wrong size"
                seen.add(chunk)
            if bool(small) != bool(self.binmap >> idx & 1):
                return f"binmap bit {idx} disagrees with its bin"
        for off, sizes in enumerate(self.sizes):
            idx = off + NSMALLBINS
            if sizes != sorted(set(sizes)) or set(sizes) != set(self.groups[off]):
                return f"large bin {idx}'s sizes disagree with its groups"
            for size, chunk in self.large_in_order(idx):
                if chunk in seen or self.free.get(chunk) != size or largebin_index(size) != idx:
                    return f"chunk {chunk:#x} in large bin {idx} is in two bins or the wrong size"
                seen.add(chunk)
            if bool(sizes) != bool(self.binmap >> idx & 1):
                return f"binmap bit {idx} disagrees with its bin"
        if seen != self.free.keys():
            return "a free chunk is in no bin"
        if sum(self.free.values()) != self.free_bytes:
            return "free byte count disagrees with the bins"
        return None
