"""Inspection: the heap as a debugger plugin shows it (pwndbg's ``heap``, ``bins``,
``arenas``, ``vis_heap_chunks``), with only Python needed.

* :func:`heap` lists every chunk of an arena's heaps: address, size, flags
  (P = PREV_INUSE, M = IS_MMAPPED, A = NON_MAIN_ARENA) and state (in use,
  free and in which bin, a slab of which class, the top, a fencepost);
* :func:`bins` shows each non-empty bin, the slabs' free blocks and the
  calling thread's cache;
* :func:`arenas` lists the arenas with their threads, heaps and bytes;
* :func:`vis_heap_chunks` hexdumps the heap's bytes 16 to a row, each chunk
  in its own colour, header words labelled with their meaning.

Each function returns a string: plain text by default, ANSI colour when
``color=True`` (``None``: colour when standard output is a terminal).  Each
arena is read under its own lock, one arena at a time, so the views are
consistent per arena and can be taken while other threads run.

For an ``Allocator(policy="glibc")`` (:mod:`arenas.ptmalloc`), :func:`heap`,
:func:`bins` and :func:`vis_heap_chunks` speak pwndbg's language instead, with
glibc's bin names and indexes: ``bins`` lists ``tcachebins``, ``fastbins``,
``unsortedbin``, ``smallbins`` and ``largebins`` as pwndbg's ``bins`` command
does, ``heap`` prints each chunk as pwndbg's ``heap`` does (``Allocated chunk
| PREV_INUSE``, ``Free chunk (tcachebins) | PREV_INUSE``, ``Top chunk``), and
``vis_heap_chunks`` labels each chunk with its bin as pwndbg does
(``tcachebins[0x20][0/7]``).  Where the two differ, and why:

* the links (``fd``, ``bk``, a tcache entry's ``next``) are the bins' own,
  kept out of the heap, shown as glibc would hold them (a tcache ``next``
  decoded, not safe-linked); the heap's bytes at those places are whatever the
  program left there, which ``vis_heap_chunks`` shows;
* a bin's list ends at its header in the arena: ``main_arena+96`` for the
  unsorted bin of the main arena (glibc's ``main_arena`` lives in libc, which
  has no address here), the header's address in a non-main arena's heap
  (where glibc's ``malloc_state`` is, after ``heap_info``); pwndbg prints
  ``0x7ffff7f9ace0 (main_arena+96)``;
* each bin is shown from its head, up to pwndbg's ``heap-dereference-limit``
  of 8 links, then ``...``; the end of a list reads ``0x0`` (pwndbg before
  2024.08; later versions print ``0``); a label is followed by one space, as
  pwndbg prints it in colour;
* a large bin is named by its size range, as pwndbg names it, and by glibc's
  bin index: ``0x400-0x430 (bin 64)``;
* every live thread's tcache chunks are marked ``tcachebins`` in ``heap`` and
  ``vis_heap_chunks`` (pwndbg marks the current thread's only), and the
  thread's ``tcache_perthread_struct`` chunk is named.

From the command line: ``python -m arenas.inspect {heap,bins,arenas,vis}``
shows a small demonstration heap.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .allocator import Allocator
from .arena import Arena
from .bins import (
    LARGEBIN_TABLE,
    MIN_LARGE_SIZE,
    NFASTBINS,
    NSMALLBINS,
    UNSORTED,
    bin_index,
)
from .chunk import (
    CHUNK_HDR_SZ,
    FLAG_BITS,
    IS_MMAPPED,
    NON_MAIN_ARENA,
    PREV_INUSE,
    SIZE_BITS,
    checked_address,
    checked_count,
)
from .dispatch import default_allocator
from .heap import HEAP_INFO_SIZE, Heap
from .ptmalloc import GLIBC_HEAP_INFO_SIZE, GlibcArena, GlibcPolicy, Tcache
from .slab import CLASS_SIZES, CLASS_SLAB_BYTES

__all__ = ["ChunkInfo", "arenas", "bin_name", "bins", "chunks", "heap", "vis_heap_chunks"]

_RESET = "\x1b[0m"
_NO_LINKS = "fd | bk in glibc; here the bins keep the links, so: old bytes"
# The second row of a glibc-policy chunk in a tcache or a fastbin, or of a tcache's own.
_GLIBC_LINKS = {
    "tcachebins": "next | key in glibc; here the tcache keeps the links, so: old bytes",
    "fastbins": "fd in glibc; here the bins keep the links, so: old bytes",
    "tcache_perthread_struct": "counts, then entries, in glibc; here the Tcache keeps them",
}
_PALETTE = ["\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[35m", "\x1b[36m"]
_STATE_COLOUR = {"top": "\x1b[97;1m", "fence": "\x1b[90m", "free": "\x1b[94m"}


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk as seen in its heap."""

    addr: int
    size: int
    flags: int
    state: str  # "in use", "free", "slab", "top", "fence"
    detail: str = ""
    bin: int = 0  # a free chunk's bin, glibc's numbering (1 unsorted, 2..63 small, 64.. large)

    @property
    def flag_text(self) -> str:
        return "".join(
            letter if self.flags & bit else "-"
            for letter, bit in (("P", PREV_INUSE), ("M", IS_MMAPPED), ("A", NON_MAIN_ARENA))
        )


def _use_color(color: bool | None) -> bool:
    return sys.stdout.isatty() if color is None else color


def _allocator(alloc: Allocator | None) -> Allocator:
    """``alloc``, or the default allocator for None; anything else is a ``TypeError``."""
    if alloc is None:
        return default_allocator()
    if not isinstance(alloc, Allocator):
        raise TypeError(f"expected an Allocator or None, not {type(alloc).__name__}")
    return alloc


def _arena(alloc: Allocator | None, index: int) -> tuple[Allocator, Arena]:
    alloc = _allocator(alloc)
    return alloc, alloc.arena(index)


def _bin_of(arena: Arena, chunk: int, size: int) -> int:
    return UNSORTED if chunk in arena.bins.unsorted else bin_index(size)


def bin_name(bin_number: int) -> str:
    """What a bin is called: "unsorted bin", "small bin 12", "large bin 70" (glibc's numbers)."""
    if bin_number == UNSORTED:
        return "unsorted bin"
    return f"{'small' if bin_number < NSMALLBINS else 'large'} bin {bin_number}"


def heap_chunks(arena: Arena, heap: Heap[Arena]) -> list[ChunkInfo]:
    """Every chunk of one heap, its top or fencepost last (arena lock held)."""
    out: list[ChunkInfo] = []
    for chunk, head, state in arena.walk(heap):
        size = head & SIZE_BITS
        detail = ""
        bin_number = 0
        if state == "free":
            bin_number = _bin_of(arena, chunk, size)
            detail = bin_name(bin_number)
        elif state == "slab":
            slab = arena.slab_pool.slabs[chunk]
            detail = f"{slab.capacity} x {slab.size} B, {slab.nfree} free"
        elif state == "corrupt":
            detail = "size field damaged"
        elif state in ("top", "fence"):
            size = heap.end - chunk
        out.append(ChunkInfo(chunk, size, head & FLAG_BITS, state, detail, bin_number))
    return out


def chunks(alloc: Allocator | None = None, arena: int = 0) -> list[list[ChunkInfo]]:
    """The chunks of each heap of one arena, oldest heap first."""
    alloc, a = _arena(alloc, arena)
    with a.lock:
        return [heap_chunks(a, h) for h in a.heaps]


# ------------------------------------------------------------------- the glibc policy
# pwndbg's chain arrows, its heap-dereference-limit, and where glibc's bins begin in
# struct malloc_state (mutex, flags, have_fastchunks, fastbinsY[10], top,
# last_remainder: 112 bytes), so that bin_at(av, 1), the unsorted bin, is av+96.
_ARROW = " \u2014\u25b8 "  # " —▸ "
_BACK = " \u25c2\u2014 "  # " ◂— "
CHAIN_LIMIT = 8
_MALLOC_STATE_BINS = 112
_TCACHE_STRUCT = "tcache_perthread_struct"
# The first chunk size of each large bin (every bound is a multiple of 64).
_LARGE_START: dict[int, int] = {}
for _step, _idx in enumerate(LARGEBIN_TABLE):
    if _step << 6 >= MIN_LARGE_SIZE:
        _LARGE_START.setdefault(_idx, _step << 6)


def _large_range(idx: int) -> str:
    """A large bin's sizes as pwndbg names the bin: ``0x400-0x430``, the last ``0x80000-∞``."""
    start = _LARGE_START[idx]
    end = f"{_LARGE_START[idx + 1] - 16:#x}" if idx + 1 in _LARGE_START else "\u221e"
    return f"{start:#x}-{end}"


def _chain(links: list[str], last: str, limit: int = CHAIN_LIMIT) -> str:
    """A bin as pwndbg's ``chain.format`` shows it: ``links`` is what its ``chain.get``
    collects (the head, each pointer followed, and the value that ended the walk),
    ``last`` how that value is shown; past ``limit`` links the end is ``...``."""
    shown = links[: limit + 1]
    end = last if len(shown) < limit + 1 else "..."
    return _ARROW.join(shown[:-1]) + _BACK + end


@dataclass(frozen=True)
class _Place:
    """Where a chunk of the glibc policy is, in pwndbg's words."""

    kind: str  # "tcachebins", "fastbins", "unsortedbin", "smallbins", "largebins", or the struct
    key: str = ""  # the bin as pwndbg names it: "0x20", "all", "0x400-0x430"
    index: int = 0  # from the bin's head
    count: int = 0  # the chunks in the bin
    fields: tuple[tuple[str, str], ...] = ()  # ("fd", "0x..."): the links glibc would hold
    owner: str = ""  # a tcache_perthread_struct's thread

    @property
    def label(self) -> str:
        """pwndbg's ``vis_heap_chunks`` label: ``tcachebins[0x20][0/7]``, ``fastbins[0x20][0]``."""
        if self.kind == _TCACHE_STRUCT:
            return f"{_TCACHE_STRUCT} ({self.owner})"
        count = f"/{self.count}" if self.kind == "tcachebins" else ""
        return f"{self.kind}[{self.key}][{self.index}{count}]"


def _word(value: int) -> str:
    return f"0x{value:02x}"  # (as pwndbg's malloc_chunk prints a field)


def _thread_name(ident: int) -> str:
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    return f"thread {ident}"


def _bin_header(arena: Arena, number: int) -> str:
    """Where glibc's bin ``number`` (1 unsorted, 2.. small, 64.. large) has its header:
    ``main_arena+96`` (libc's, not in this process), or an address in the arena's
    first heap, where a non-main arena's malloc_state is."""
    offset = _MALLOC_STATE_BINS + (number - 1) * 2 * 8 - CHUNK_HDR_SZ
    if arena.is_main:
        return f"main_arena+{offset}"
    return f"{arena.heaps[0].base + GLIBC_HEAP_INFO_SIZE + offset:#x}"


def _glibc_policy(alloc: Allocator) -> GlibcPolicy | None:
    return alloc.glibc if alloc.policy == "glibc" else None


def _tcache_lines(tc: Tcache) -> list[str]:
    lines = []
    for tidx, cached in enumerate(list(tc.bins)):
        entries = list(cached)
        if entries:
            count = len(entries)
            links = [f"{e:#x}" for e in reversed(entries)] + ["0x0"]
            limit = count + 1 if count <= 7 else CHAIN_LIMIT
            size = CHUNK_HDR_SZ * (tidx + 2)
            lines.append(f"{size:#x} [{count:3d}]: " + _chain(links, "0x0", limit))
    return lines or ["empty"]


def _sorted_bins(a: GlibcArena) -> list[tuple[int, list[int]]]:
    """``(bin number, its chunks in glibc's fd order)`` for each non-empty bin of ``a``
    (its lock held): the unsorted bin, the small bins, the large bins."""
    bins = a.bins
    out: list[tuple[int, list[int]]] = []
    if bins.unsorted:
        out.append((UNSORTED, list(reversed(bins.unsorted))))
    for idx, small in enumerate(bins.small):
        if small:
            out.append((idx, list(reversed(small))))
    for off, sizes in enumerate(bins.sizes):
        if sizes:
            idx = off + NSMALLBINS
            out.append((idx, [chunk for _, chunk in bins.large_in_order(idx)]))
    return out


def _bin_key(number: int) -> tuple[str, str]:
    """``(pwndbg's bin type, its name for the bin)``."""
    if number == UNSORTED:
        return "unsortedbin", "all"
    if number < NSMALLBINS:
        return "smallbins", f"{number << 4:#x}"
    return "largebins", _large_range(number)


def _places(a: GlibcArena, tcaches: list[Tcache]) -> dict[int, _Place]:
    """Every chunk of ``a`` that is in a bin, a tcache, or holds a tcache, by its chunk
    address (``a``'s lock held; ``tcaches`` taken before it)."""
    places: dict[int, _Place] = {}
    for tc in tcaches:
        if tc.struct:
            name = _thread_name(tc.thread)
            places[tc.struct - CHUNK_HDR_SZ] = _Place(_TCACHE_STRUCT, owner=name)
        for tidx, cached in enumerate(list(tc.bins)):
            order = list(reversed(cached))
            key = f"{CHUNK_HDR_SZ * (tidx + 2):#x}"
            for i, mem in enumerate(order):
                fd = order[i + 1] if i + 1 < len(order) else 0
                places[mem - CHUNK_HDR_SZ] = _Place(
                    "tcachebins", key, i, len(order), (("fd", _word(fd)),)
                )
    bins = a.bins
    for fidx in range(NFASTBINS):
        order = list(reversed(bins.fast[fidx]))
        key = f"{CHUNK_HDR_SZ * (fidx + 2):#x}"
        for i, chunk in enumerate(order):
            fd = order[i + 1] if i + 1 < len(order) else 0
            places[chunk] = _Place("fastbins", key, i, len(order), (("fd", _word(fd)),))
    for number, order in _sorted_bins(a):
        kind, key = _bin_key(number)
        header = _bin_header(a, number)
        links = [_word(c) for c in order]
        heads: dict[int, tuple[str, str]] = {}
        if kind == "largebins":  # the skip list: each size's first chunk, largest first
            off = number - NSMALLBINS
            first = [bins.groups[off][size][0] for size in reversed(bins.sizes[off])]
            n = len(first)
            for j, chunk in enumerate(first):
                heads[chunk] = (_word(first[(j + 1) % n]), _word(first[(j - 1) % n]))
        for i, chunk in enumerate(order):
            fields = [
                ("fd", links[i + 1] if i + 1 < len(order) else header),
                ("bk", links[i - 1] if i else header),
            ]
            if chunk in heads:
                fields += [("fd_nextsize", heads[chunk][0]), ("bk_nextsize", heads[chunk][1])]
            places[chunk] = _Place(kind, key, i, len(order), tuple(fields))
    return places


def _glibc_heap(alloc: Allocator, a: Arena, policy: GlibcPolicy, paint: bool) -> str:
    """pwndbg's ``heap``: each chunk of the arena's heaps, its state and flags, its size."""
    assert isinstance(a, GlibcArena)
    tcaches = policy.tcaches()  # (before the arena's lock: it may reap ended threads)
    blocks: list[str] = []
    with a.lock:
        places = _places(a, tcaches)
        for h in a.heaps:
            for n, c in enumerate(heap_chunks(a, h)):
                head = h.head(c.addr)
                place = places.get(c.addr)
                extra: list[str] = []
                if c.state == "top":
                    title = "Top chunk"
                elif c.state == "corrupt":
                    title = "Corrupt chunk (size field damaged)"
                elif place is not None and place.kind != _TCACHE_STRUCT:
                    title = f"Free chunk ({place.kind})"
                    extra = [f"{name}: {value}" for name, value in place.fields]
                else:
                    title = "Allocated chunk"
                    if place is not None:
                        extra = [f"{_TCACHE_STRUCT} ({place.owner})"]
                    elif c.state == "fence":
                        extra = ["fencepost (the end of a heap the arena moved past)"]
                flags = [
                    name
                    for name, bit in (
                        ("PREV_INUSE", PREV_INUSE),
                        ("IS_MMAPED", IS_MMAPPED),  # (pwndbg's spelling)
                        ("NON_MAIN_ARENA", NON_MAIN_ARENA),
                    )
                    if head & bit
                ]
                text = "\n".join(
                    [
                        " | ".join([title, *flags]),
                        f"Addr: {c.addr:#x}",
                        f"Size: 0x{head & SIZE_BITS:02x} (with flag bits: 0x{head:02x})",
                        *extra,
                    ]
                )
                if paint:
                    colour = _STATE_COLOUR.get(c.state, _PALETTE[n % len(_PALETTE)])
                    text = colour + text + _RESET
                blocks.append(text)
    return "\n\n".join(blocks)


def _glibc_bins(
    alloc: Allocator, a: Arena, policy: GlibcPolicy, who: int, named: bool, paint: bool
) -> str:
    """pwndbg's ``bins``: the thread's tcachebins, then the arena's fastbins,
    unsortedbin, smallbins and largebins, each bin from its head."""
    assert isinstance(a, GlibcArena)
    tcaches = policy.tcaches()
    mine = [tc for tc in tcaches if tc.thread == who]
    if named and not mine:
        attached = ", ".join(str(tc.thread) for tc in tcaches) or "none"
        raise ValueError(f"thread {who} has no tcache in this allocator (attached: {attached})")
    banners = ["tcachebins", "fastbins", "unsortedbin", "smallbins", "largebins"]
    lines: list[str] = ["tcachebins"]
    if mine:
        lines += _tcache_lines(mine[0])
    else:
        lines.append(
            f"No tcache bins found for thread {who} (the thread hasn't performed any allocations)."
        )
    with a.lock:
        bins = a.bins
        lines.append("fastbins")
        fast = []
        for fidx in range(NFASTBINS):
            order = list(reversed(bins.fast[fidx]))
            if order:
                links = [f"{c:#x}" for c in order] + ["0x0"]
                fast.append(f"{CHUNK_HDR_SZ * (fidx + 2):#x}: " + _chain(links, "0x0"))
        lines += fast or ["empty"]
        sections: dict[str, list[str]] = {"unsortedbin": [], "smallbins": [], "largebins": []}
        for number, order in _sorted_bins(a):
            kind, key = _bin_key(number)
            if kind == "largebins":
                key += f" (bin {number})"
            links = [f"{c:#x}" for c in order] + [_bin_header(a, number), "0"]
            sections[kind].append(f"{key}: " + _chain(links, f"{order[0]:#x}"))
        for kind, found in sections.items():
            lines.append(kind)
            lines += found or ["empty"]
    if paint:
        lines = [_PALETTE[3] + line + _RESET if line in banners else line for line in lines]
    return "\n".join(lines)


def heap(alloc: Allocator | None = None, arena: int = 0, color: bool | None = None) -> str:
    """Every chunk of every heap of ``arena``: address, size, flags, state.

    For the glibc policy, each chunk as pwndbg's ``heap`` prints it (see the
    module's docstring).
    """
    alloc, a = _arena(alloc, arena)
    paint = _use_color(color)
    policy = _glibc_policy(alloc)
    if policy is not None:
        return _glibc_heap(alloc, a, policy, paint)
    lines: list[str] = []
    with a.lock:
        kind = "main arena" if a.is_main else "non-main arena"
        lines.append(f"Arena {a.index} ({kind}): {len(a.heaps)} heap(s), {a.system_mem} bytes")
        for h in a.heaps:
            info = "" if h.start == h.base else f", heap_info {HEAP_INFO_SIZE} bytes"
            lines.append(
                f"heap {h.base:#x}: {h.size:,} bytes mapped of {h.max_size:,} reserved{info}"
            )
            for n, c in enumerate(heap_chunks(a, h)):
                text = f"  {c.addr:#x}  size {c.size:#8x}  {c.flag_text}  {c.state}"
                if c.detail:
                    text += f" ({c.detail})"
                if paint:
                    colour = _STATE_COLOUR.get(c.state, _PALETTE[n % len(_PALETTE)])
                    text = colour + text + _RESET
                lines.append(text)
    return "\n".join(lines)


def bins(
    alloc: Allocator | None = None,
    arena: int = 0,
    color: bool | None = None,
    thread: int | None = None,
) -> str:
    """Each non-empty bin of ``arena``, its slabs' free blocks, and a thread's cache.

    The cache is the calling thread's, or that of ``thread`` (its
    ``threading.get_ident()``, as ``Thread.ident`` gives it), listed by size
    class with each cached block's address, as pwndbg's ``tcachebins`` does.

    For the glibc policy, pwndbg's ``bins``: that thread's ``tcachebins``, then
    the arena's ``fastbins``, ``unsortedbin``, ``smallbins`` and ``largebins``
    (see the module's docstring).
    """
    alloc, a = _arena(alloc, arena)
    caches = alloc.caches.bins_by_thread()
    who = threading.get_ident() if thread is None else checked_count(thread, "thread")
    policy = _glibc_policy(alloc)
    if policy is not None:
        return _glibc_bins(alloc, a, policy, who, thread is not None, _use_color(color))
    if thread is not None and who not in caches:
        attached = ", ".join(str(t) for t in sorted(caches)) or "none"
        raise ValueError(f"thread {who} has no cache in this allocator (attached: {attached})")
    lines: list[str] = []
    with a.lock:
        a.slab_pool.settle()  # (loose blocks into their slabs, so the slabs' counts are whole)
        if not a.bins.unsorted:
            lines.append("unsorted: empty")
        for idx, entries in a.bins.nonempty():
            if idx == UNSORTED:
                lines.append("unsorted: " + ", ".join(f"{c:#x} ({s:#x})" for s, c in entries))
            elif idx < NSMALLBINS:
                listed = ", ".join(f"{c:#x}" for _, c in entries)
                lines.append(f"small bin {idx} ({idx << 4} B): {listed}")
            else:
                lines.append(
                    f"large bin {idx}: " + ", ".join(f"{c:#x} ({s:#x})" for s, c in entries)
                )
        for cls, partial in enumerate(a.slab_pool.partial):
            if partial:
                free = sum(s.nfree for s in partial.values())
                lines.append(
                    f"slabs of {CLASS_SIZES[cls]} B ({CLASS_SLAB_BYTES[cls]} B each):"
                    f" {len(partial)} with free blocks, {free} free blocks"
                )
    cached = caches.get(who)
    if cached is not None:
        label = "this thread" if thread is None else f"thread {who}"
        lines.append(f"tcache ({label}):" + ("" if any(cached) else " empty"))
        for cls, blocks in enumerate(cached):
            if blocks:
                listed = ", ".join(f"{b:#x}" for b in blocks)
                lines.append(f"tcache  {CLASS_SIZES[cls]} B x {len(blocks)}: {listed}")
    if _use_color(color):
        lines = [
            _PALETTE[3] + line + _RESET if line.startswith("tcache") else line for line in lines
        ]
    return "\n".join(lines)


def arenas(alloc: Allocator | None = None, color: bool | None = None) -> str:
    """Each arena: threads attached, heaps, system and in-use bytes; then the mappings."""
    st = _allocator(alloc).stats()
    lines = [
        f"{'arena':>5}  {'threads':>7}  {'heaps':>5}  {'system':>12}  {'in use':>12}  {'top':>10}"
    ]
    for a in st.arenas:
        lines.append(
            f"{a.index:>5}  {a.attached_threads:>7}  {a.heaps:>5}  {a.system_bytes:>12,}"
            f"  {a.in_use_bytes:>12,}  {a.top_bytes:>10,}"
        )
    lines.append(f"mapped chunks: {st.hblks} ({st.hblkhd:,} bytes)")
    lines.append(f"slabs: {st.slabs}, thread caches: {st.tcache_blocks} blocks")
    if _use_color(color):
        lines[0] = "\x1b[1m" + lines[0] + _RESET
    return "\n".join(lines)


def vis_heap_chunks(
    alloc: Allocator | None = None,
    addr: int | None = None,
    count: int = 8,
    arena: int = 0,
    color: bool | None = None,
    max_rows: int = 6,
) -> str:
    """Hexdump ``count`` chunks from the one holding ``addr`` (default: the heap's first).

    Each 16-byte row shows its address and two little-endian words, as
    pwndbg's ``vis_heap_chunks`` does; a chunk's header row is labelled
    ``prev_size | size``, and long chunks are cut to ``max_rows`` rows.  A
    free chunk's second row is where glibc keeps its ``fd | bk`` links; here
    the links live in :class:`~arenas.bins.Bins`, out of the heap, so the
    row holds whatever bytes were there (zeros, for memory never written).

    For the glibc policy, a chunk in a bin or a tcache is labelled as pwndbg
    labels it (``tcachebins[0x20][0/7]``, ``fastbins[0x20][0]``,
    ``unsortedbin[all][0]``: the bin, then the place from its head), and a
    thread's ``tcache_perthread_struct`` chunk is named.
    """
    alloc, a = _arena(alloc, arena)
    if addr is not None:
        addr = checked_address(addr)
    count = checked_count(count, "count")
    max_rows = checked_count(max_rows, "max_rows")
    paint = _use_color(color)
    policy = _glibc_policy(alloc)
    tcaches = policy.tcaches() if policy is not None else []
    lines: list[str] = []
    with a.lock:
        places = _places(a, tcaches) if isinstance(a, GlibcArena) else {}
        for h in a.heaps:
            infos = heap_chunks(a, h)
            if addr is not None and not (h.base <= addr < h.end):
                continue
            start = 0
            if addr is not None:
                start = next(
                    (i for i, c in enumerate(infos) if c.addr <= addr < c.addr + c.size), 0
                )
            for n, c in enumerate(infos[start : start + count]):
                colour = _PALETTE[(start + n) % len(_PALETTE)] if paint else ""
                reset = _RESET if paint else ""
                rows = max(c.size // 16, 1)
                shown = list(range(min(rows, max_rows)))
                for r in shown:
                    row = c.addr + 16 * r
                    if row + 16 > h.end:
                        break
                    lo, hi = h.prev_size(row), h.head(row)
                    note = ""
                    place = places.get(c.addr)
                    if r == 0:
                        state = place.label if place is not None else c.state
                        note = f"  <- prev_size | size {hi & SIZE_BITS:#x} {c.flag_text}: {state}"
                    elif r == 1 and place is not None:
                        note = f"  <- {_GLIBC_LINKS.get(place.kind, _NO_LINKS)}"
                    elif r == 1 and c.state == "free":
                        note = f"  <- {_NO_LINKS}"
                    lines.append(f"{colour}{row:#014x}  {lo:#018x}  {hi:#018x}{note}{reset}")
                if rows > len(shown):
                    lines.append(
                        f"{colour}{'':14}  ... {rows - len(shown)} more rows of this chunk{reset}"
                    )
            break
    return "\n".join(lines)


# ------------------------------------------------------------------- demo
def demo() -> Allocator:
    """A small heap worth looking at: a few blocks, a slab, free chunks in bins."""
    alloc = Allocator(top_pad=0)
    keep = [alloc.malloc(n) for n in (70_000, 80_000, 90_000, 100_000)]
    alloc.free(keep[1])
    small = [alloc.malloc(24) for _ in range(5)]
    alloc.free(small[0])
    return alloc


def main(argv: list[str]) -> int:
    views: dict[str, Callable[[Allocator], str]] = {
        "heap": lambda a: heap(a),
        "bins": lambda a: bins(a),
        "arenas": lambda a: arenas(a),
        "vis": lambda a: vis_heap_chunks(a),
    }
    if len(argv) != 1 or argv[0] not in views:
        print("usage: python -m arenas.inspect {heap,bins,arenas,vis}", file=sys.stderr)
        return 2
    print(views[argv[0]](demo()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
