"""Tunables: every knob of the allocator, its default, its valid range.

glibc keeps these in ``struct malloc_par mp_`` and lets programs change them
with ``mallopt`` or the ``GLIBC_TUNABLES`` environment variable.  Here they
are keyword arguments to :class:`arenas.Allocator`, validated all at once
before anything is applied, so a bad value never leaves a half-configured
allocator.

Locking: a :class:`Params` is written only while the allocator is created
(or by ``mallopt``, under the allocator's registry lock); the hot paths read
its fields without a lock, since each read is a single atomic attribute load.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MALLOPT_PARAMS",
    "POLICIES",
    "TUNABLES",
    "Params",
    "Tunable",
    "mallopt_name",
    "parse_tunables",
    "validate",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the dynamic threshold stops here.
DEFAULT_MMAP_THRESHOLD_MAX = 32 * MiB


#: The policies an allocator can follow: ``default`` (slabs and the thread cache
#: in front of the chunk path) and ``glibc`` (ptmalloc2 as glibc 2.36 decides,
#: see :mod:`arenas.ptmalloc`).  Each maps the tunables whose default it changes.
POLICIES: dict[str, dict[str, int]] = {
    "default": {},
    "glibc": {"tcache_count": 7, "tcache_max_bytes": 1032, "top_pad": 128 * KiB},
}
# glibc's MAX_TCACHE_SIZE: tcache_max_bytes beyond it is refused.
GLIBC_TCACHE_MAX = 1032
# glibc's MAX_FAST_SIZE: the largest M_MXFAST.
MAX_FAST_SIZE = 160


def _power_of_two(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


@dataclass(frozen=True)
class Tunable:
    name: str
    default: Callable[[], int]
    lo: int
    hi: int
    doc: str
    check: Callable[[int], bool] | None = None
    check_doc: str = ""

    def describe_range(self) -> str:
        extra = f", {self.check_doc}" if self.check_doc else ""
        return f"{self.lo}..{self.hi}{extra}"


TUNABLES: dict[str, Tunable] = {
    t.name: t
    for t in (
        Tunable(
            "arena_max",
            lambda: 8 * (os.cpu_count() or 1),
            1,
            1024,
            "most arenas ever created; threads share arenas beyond it (M_ARENA_MAX)",
        ),
        Tunable(
            "arena_test",
            lambda: 8,
            1,
            1024,
            "arenas created before arena_max's core-count default is consulted; ignored"
            " when arena_max is set (M_ARENA_TEST)",
        ),
        Tunable(
            "mmap_max",
            lambda: 65536,
            0,
            1 << 24,
            "most chunks with a mapping of their own at once; 0 turns mmap off (M_MMAP_MAX)",
        ),
        Tunable(
            "perturb",
            lambda: 0,
            0,
            255,
            "fill new blocks with perturb^0xff and freed ones with perturb (M_PERTURB; 0: off)",
        ),
        Tunable(
            "mmap_threshold",
            lambda: 128 * KiB,
            0,
            DEFAULT_MMAP_THRESHOLD_MAX,
            "requests of this many bytes or more get a mapping of their own (M_MMAP_THRESHOLD);"
            " setting it turns the dynamic adjustment off",
        ),
        Tunable(
            "trim_threshold",
            lambda: 128 * KiB,
            0,
            1 << 62,
            "a top chunk this large is given back to the OS (M_TRIM_THRESHOLD)",
        ),
        Tunable(
            "top_pad",
            lambda: 16 * KiB,
            0,
            1 << 30,
            "extra bytes taken whenever a heap grows (M_TOP_PAD; glibc's default is 128 KiB:"
            " here 16 KiB, leaner at a real program's peak, see docs/memory.md)",
        ),
        Tunable(
            "heap_max_size",
            lambda: 64 * MiB,
            1 * MiB,
            1 * GiB,
            "size and alignment of a non-main arena's heap (HEAP_MAX_SIZE)",
            _power_of_two,
            "a power of two",
        ),
        Tunable(
            "main_heap_size",
            lambda: 1 * GiB,
            1 * MiB,
            1 << 40,
            "address space reserved for the main arena's heap (its sbrk area)",
            lambda v: v % 4096 == 0,
            "a multiple of 4096",
        ),
        Tunable(
            "tcache_count",
            lambda: 32,
            0,
            65535,
            "blocks each thread keeps per size class, served without a lock (0: no cache)",
        ),
        Tunable(
            "tcache_max_bytes",
            lambda: 32 * KiB,
            0,
            1 << 30,
            "bytes of one size class a thread may cache; classes larger than this are"
            " not cached (glibc's tcache_max, per class)",
        ),
        Tunable(
            "mxfast",
            lambda: 128,
            0,
            MAX_FAST_SIZE,
            "glibc policy only: requests up to this many bytes are freed into fastbins"
            " (M_MXFAST; 0: no fastbins)",
        ),
        Tunable(
            "max_heap_bytes",
            lambda: 0,
            0,
            1 << 62,
            "cap on all bytes taken from the system, heaps and mappings together (0: none)",
        ),
    )
}


class Params:
    """The live values of the tunables for one allocator (glibc's ``mp_``)."""

    __slots__ = (
        "arena_max",
        "arena_max_set",
        "arena_test",
        "heap_max_size",
        "main_heap_size",
        "max_heap_bytes",
        "mmap_max",
        "mmap_threshold",
        "mxfast",
        "no_dyn_threshold",
        "perturb",
        "policy",
        "tcache_bins",
        "tcache_count",
        "tcache_max_bytes",
        "top_pad",
        "trim_threshold",
    )

    arena_max: int
    arena_test: int
    arena_max_set: bool
    mmap_max: int
    perturb: int
    mmap_threshold: int
    trim_threshold: int
    top_pad: int
    heap_max_size: int
    main_heap_size: int
    max_heap_bytes: int
    tcache_count: int
    tcache_max_bytes: int
    mxfast: int
    no_dyn_threshold: bool
    policy: str
    tcache_bins: int

    def __init__(self, values: Mapping[str, int], policy: str = "default") -> None:
        self.policy = policy
        defaults = POLICIES[policy]
        for name, tunable in TUNABLES.items():
            setattr(self, name, values.get(name, defaults.get(name, tunable.default())))
        self._set_tcache_bins()
        # glibc stops adjusting the mmap threshold once the user has set it.
        self.no_dyn_threshold = "mmap_threshold" in values or "trim_threshold" in values
        self.arena_max_set = "arena_max" in values

    def set(self, name: str, value: int) -> None:
        """``mallopt``: one validated value, with glibc's side effects."""
        setattr(self, name, value)
        self._set_tcache_bins()
        if name in ("mmap_threshold", "trim_threshold"):
            self.no_dyn_threshold = True
        elif name == "arena_max":
            self.arena_max_set = True

    def _set_tcache_bins(self) -> None:
        # glibc's mp_.tcache_bins: the tcache bins in use, up to tcache_max_bytes's own.
        # (chunk size of a tcache_max_bytes request, as a tcache index, plus one)
        nb = max(32, (self.tcache_max_bytes + 8 + 15) & ~15)
        self.tcache_bins = (nb - 32 + 15) // 16 + 1

    def mapping_freed(self, size: int) -> None:
        """glibc's dynamic threshold: a freed mapping of ``size`` bytes raises the bar
        for the next one, until the user sets a threshold.  (Two racing frees may
        both write it: either value is a valid one.)"""
        if not self.no_dyn_threshold and self.mmap_threshold < size <= DEFAULT_MMAP_THRESHOLD_MAX:
            self.mmap_threshold = size
            self.trim_threshold = 2 * size

    def arena_limit(self) -> int:
        """glibc's ``narenas_limit``: arena_max if set, else the core-count rule or arena_test."""
        if self.arena_max_set:
            return self.arena_max
        return max(self.arena_max, self.arena_test)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in TUNABLES}


def validate(values: Mapping[str, object], policy: str | None = None) -> dict[str, int]:
    """Check every name and value; return them as ints or raise ``ValueError``/``TypeError``.

    With a ``policy``, also what that policy cannot take: fastbins' ``mxfast``
    under the default policy (it has none), a ``tcache_max_bytes`` beyond
    glibc's largest tcache bin under the glibc policy.
    """
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known policies: {', '.join(POLICIES)}")
    out: dict[str, int] = {}
    for name, value in values.items():
        tunable = TUNABLES.get(name)
        if tunable is None:
            known = ", ".join(sorted(TUNABLES))
            raise ValueError(f"unknown tunable {name!r}; known tunables: {known}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"tunable {name} must be an int, not {type(value).__name__}")
        ok = tunable.lo <= value <= tunable.hi and (tunable.check is None or tunable.check(value))
        if not ok:
            raise ValueError(
                f"tunable {name}={value} is out of range:"
                f" valid values are {tunable.describe_range()}"
            )
        out[name] = value
    if policy == "default" and "mxfast" in out:
        raise ValueError(
            "tunable mxfast applies to policy='glibc' only: the default policy has no fastbins"
        )
    if policy == "glibc" and out.get("tcache_max_bytes", 0) > GLIBC_TCACHE_MAX:
        raise ValueError(
            f"tunable tcache_max_bytes={out['tcache_max_bytes']} is out of range for"
            f" policy='glibc': glibc's tcache serves requests up to {GLIBC_TCACHE_MAX} bytes"
        )
    return out


def parse_tunables(text: str) -> dict[str, Any]:
    """Parse glibc's tunables syntax, ``name=value:name=value``, and validate it whole.

    Values are decimal, or hexadecimal with ``0x``.  Raises ``ValueError`` naming
    the tunable on any bad entry; nothing is applied unless everything is valid.
    """
    values: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(":"))):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"tunable entry {item!r} must look like name=value")
        try:
            values[name] = int(raw.strip(), 0)
        except ValueError:
            raise ValueError(f"tunable {name}: {raw.strip()!r} is not an integer") from None
    return validate(values)


# glibc's mallopt parameter numbers (malloc.h), mapped to our tunables.
M_MXFAST = 1
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_PERTURB = -6
M_ARENA_TEST = -7
M_ARENA_MAX = -8

MALLOPT_PARAMS: dict[int, str] = {
    M_MXFAST: "mxfast",
    M_TRIM_THRESHOLD: "trim_threshold",
    M_TOP_PAD: "top_pad",
    M_MMAP_THRESHOLD: "mmap_threshold",
    M_MMAP_MAX: "mmap_max",
    M_PERTURB: "perturb",
    M_ARENA_TEST: "arena_test",
    M_ARENA_MAX: "arena_max",
}

# Tunables fixed once the allocator exists: they shape memory already mapped.
FIXED_AT_CREATION = frozenset({"heap_max_size", "main_heap_size"})


def mallopt_name(param: int | str, policy: str = "default") -> str:
    """The tunable a ``mallopt`` parameter names (an ``M_*`` number or a tunable name)."""
    if isinstance(param, str):
        if param not in TUNABLES:
            raise ValueError(f"unknown tunable {param!r}; known tunables: {', '.join(TUNABLES)}")
        name = param
    elif param == M_MXFAST and policy != "glibc":
        raise ValueError(
            "M_MXFAST does not apply: this allocator has no fastbins;"
            " the thread cache (tcache_count) plays their part"
        )
    elif isinstance(param, int) and not isinstance(param, bool) and param in MALLOPT_PARAMS:
        name = MALLOPT_PARAMS[param]
    else:
        known = ", ".join(f"{k} ({v})" for k, v in MALLOPT_PARAMS.items())
        raise ValueError(f"unknown mallopt parameter {param!r}; known: {known}")
    if name in FIXED_AT_CREATION:
        raise ValueError(f"tunable {name} can only be set when the allocator is created")
    return name
