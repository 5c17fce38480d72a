"""The native baseline: replaying a trace in C, so an allocator's footprint is its own.

Replaying through ``ctypes`` (``python -m stress replay --allocator glibc``)
puts the replay's own Python objects in glibc's heap, where they count as
glibc's footprint: a trace that glibc serves at 1.05 times its live bytes
measures 2.8 there.  This module's replayer is a small C program (below),
compiled with the machine's C compiler at first use (:mod:`stress.cc` keeps
the build, as it does the recorder's), that allocates nothing but the
trace's blocks: its tables come from ``mmap`` (populated before the replay,
so that it touches no new page of its own), it reads and writes with
``read(2)`` and ``write(2)``, and its threads are parked before the first
event.  The allocations it cannot avoid, ``pthread_create``'s calloc of each
new thread's dtv (through ld.so), are served by its own
``malloc``/``calloc``/``realloc``/``free`` from a pool of their own until the
first event; from then on those forward to the next definitions
(``dlsym(RTLD_NEXT)``): an ``LD_PRELOAD``-ed allocator's, else glibc's.
Served by glibc, the dtvs sat in its main arena before the trace's first
block, which moved where that heap grew and shrank, and its footprint at
the peak by a page to 132 KiB (0.04% to 3% on the shipped threaded
traces).  Python hands it the trace's text on its standard input.

What it does with the trace, in the order the format's owner,
:mod:`arenas.trace`, defines:

* a first pass resolves every free and realloc to its allocation, exactly as
  :func:`arenas.trace.parse` does, and rejects what it rejects (an
  unparsable line, a free of an address not live, ...) with a one-line
  message, ``<trace>:<line>: <what>``, and exit code 2; it also finds the
  event at which live bytes (requested sizes) first reach their peak;
* it replays with one pthread per traced thread, the smallest tid (0) on the
  process's main thread, so glibc serves it from its main arena; paced, each
  event waits (on a per-thread semaphore) for the one before it, so the
  allocator sees the interleaving the program had;
* every thread but the main one ends right after its last event, and has
  ended (``pthread_join`` returned, after glibc's ``__libc_thread_freeres``)
  before the next event runs: glibc's end of a thread frees its tcache into
  its arena and puts the arena on the free list for the next new thread, so
  when it happens decides the heap, and a thread left to end on its own
  raced with the events after it.  This is where :mod:`stress.fidelity`
  ends a traced thread (``Allocator.thread_exit()`` after its last call),
  the earliest its real one can have ended; the main thread lives to the end;
* after each allocation it writes every byte of the block, outside the timed
  call, and before freeing or resizing it checks the stamp at both ends: a
  broken allocator is an error (exit code 3), not a figure;
* it measures the footprint right after the peak event: glibc's
  ``mallinfo2`` ``arena + hblkhd`` (``mallinfo`` before glibc 2.33) when
  the allocator is glibc, else (an ``LD_PRELOAD``-ed allocator, which
  ``mallinfo2`` does not see) the growth of the process's resident anonymous
  memory (``/proc/self/smaps_rollup``) since just before the first event;
* ns per call: ``clock_gettime`` around each allocator call, less what an
  empty timed region measures (the least of 64 means of 256 back-to-back
  reads), over the calls made.

:func:`native_replay` runs it; :func:`preloadable` finds the allocators it
can preload (jemalloc, tcmalloc, mimalloc).

:func:`native_offsets` (``python -m stress native TRACE --offsets OUT``) runs
a build of it (``-DOFFSETS``) that also records, for every event that
returns a block, where glibc put it (a :class:`Placement`: which heap, the
offset from the heap's start, the chunk's size, the program break), read
from the chunk's header; offsets in the brk heap are from ``sbrk(0)`` before
the first event, which the pool above keeps clear of the replayer's own
calls.  One thing differs in that build: no thread exits before the last
event, as when glibc 2.36's answers in tests/fixtures/glibc (kept for a set
of small traces) were taken; :func:`stress.fidelity.replay_placements`
without ``end_threads`` replays the same way.

Locking: in the replayer, the per-thread semaphores pass one turn from event
to event, so only the thread whose turn it is touches the shared tables and
counters, and a block's entry is written before the post that lets its
freeing thread run.  A thread that ends passes the turn to the main thread
instead, with its index and the next event in two shared variables written
before that post; the main thread joins it, then posts the next event's
turn.  In Python, nothing is shared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from arenas.trace import TraceError, open_trace

from .cc import CompilerUnavailable, build

__all__ = [
    "PRELOADS",
    "REPLAYER_C",
    "NativeOffsets",
    "NativeResult",
    "NativeUnavailable",
    "Placement",
    "native_offsets",
    "native_replay",
    "preloadable",
    "replayer",
]

REPLAYER_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define NONE UINT32_MAX
#define MAX_THREADS 4096
#define STACK_BYTES (256 * 1024)

enum { OP_M, OP_C, OP_R, OP_F, OP_A };

struct event {
    uint64_t size;   /* bytes requested (count * each for calloc); 0 for a free */
    uint64_t extra;  /* calloc's count, memalign's alignment */
    uint64_t line;
    int64_t alloc;   /* the allocation this event makes, or -1 */
    int64_t frees;   /* the allocation it frees or resizes, or -1 */
    uint32_t thread; /* dense thread index */
    uint32_t next;   /* the next event of the same thread, or NONE */
    uint8_t op;
};

struct block { unsigned char *p; uint64_t size; };
struct slot { uint64_t addr; int64_t id; uint64_t size; }; /* addr 0: empty */

static const char *label = "trace";
static char *text;
static size_t text_len;
static struct event *events;
static uint64_t n_events, n_lines_read;
static struct block *blocks;
static uint64_t n_allocs;
static struct slot *table;
static uint64_t table_mask;
static uint64_t *tids;
static uint32_t n_threads;
static uint32_t *first_of, *last_of;
static sem_t *turns;
static sem_t ready;
static pthread_t *threads;
static uint32_t main_thread; /* the index of the smallest tid, which runs on main() */
static uint64_t peak_live, peak_event = UINT64_MAX;
static uint64_t sample_every, sample_from;
static int use_heap_info;

/* measured during the replay, each written only by the thread whose turn it is */
static uint64_t timed_ns, calls;
static uint64_t footprint_at_peak, anon_at_peak, sampled_peak;
static uint64_t heap_baseline, anon_baseline;

/* ---------------------------------------------------------------- output */
static char msg[8192];
static size_t msg_len;

static void put_n(const char *s, size_t n) {
    while (n-- && msg_len < sizeof msg - 2) msg[msg_len++] = *s++;
}
static void put(const char *s) { put_n(s, strlen(s)); }
static void put_u(uint64_t v) {
    char t[24]; int n = 0;
    do { t[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) put_n(&t[--n], 1);
}
static void put_i(int64_t v) {
    if (v < 0) { put("-"); put_u((uint64_t)0 - (uint64_t)v); } else put_u((uint64_t)v);
}
static void put_hex(uint64_t v) {
    char t[24]; int n = 0;
    put("0x");
    do { t[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    while (n) put_n(&t[--n], 1);
}
static void put_tenths(uint64_t tenths) { put_u(tenths / 10); put("."); put_u(tenths % 10); }

static void flush(int fd) {
    msg[msg_len++] = '\n';
    const char *p = msg;
    while (msg_len) {
        ssize_t w = write(fd, p, msg_len);
        if (w <= 0) break;
        p += w; msg_len -= (size_t)w;
    }
    msg_len = 0;
}

/* a bad trace: "<label>:<line>: <what>", exit 2 (as TraceError is reported) */
static void begin_error(uint64_t line) {
    msg_len = 0;
    put(label);
    if (line) { put(":"); put_u(line); }
    put(": ");
}
static void die(int code) { flush(2); _exit(code); }

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1f);
}

/* the stripped line in quotes, as Python's repr shows it */
static void put_quoted(const char *s, size_t n) {
    while (n && is_space(*s)) { s++; n--; }
    while (n && is_space(s[n - 1])) n--;
    put("'");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c == '\'') { put("\\"); put_n(&s[i], 1); }
        else if (c >= 0x20 && c < 0x7f) put_n(&s[i], 1);
        else {
            char x[5] = {'\\', 'x', "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15], 0};
            put(x);
        }
    }
    put("'");
}

/* ---------------------------------------------------------------- memory */
static void *table_memory(uint64_t bytes) {
    if (!bytes) bytes = 1;
    /* populated now, so that the replay never touches a new page of its own */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) { begin_error(0); put("out of memory for the replayer's tables"); die(1); }
    return p;
}

/* ---------------------------------------------------------------- its own calls
   Nothing but the trace may allocate before the first event: pthread_create
   callocs each new thread's dtv (through ld.so's malloc pointers, which resolve
   to this executable's definitions), which glibc would serve from its main
   arena, the trace's blocks then lying after it: in the offsets build, at other
   offsets than the trace's alone; in both, a heap grown a page sooner, a
   footprint that is partly the replayer's.  Until the replay starts, these four
   serve such calls from a pool of their own; from then on they forward to the
   next definitions (dlsym's RTLD_NEXT, found before the threads start): an
   LD_PRELOAD-ed allocator's, else glibc's.  The replay calls those directly
   (real_malloc, ...), so that what it times is the allocator's code alone. */
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);

static void find_real(void) {
    *(void **)&real_malloc = dlsym(RTLD_NEXT, "malloc");
    *(void **)&real_calloc = dlsym(RTLD_NEXT, "calloc");
    *(void **)&real_realloc = dlsym(RTLD_NEXT, "realloc");
    *(void **)&real_free = dlsym(RTLD_NEXT, "free");
    if (!real_malloc || !real_calloc || !real_realloc || !real_free) {
        begin_error(0); put("cannot find the allocator's malloc functions"); die(1);
    }
}

#define OWN_POOL ((size_t)16 << 20) /* a dtv is about 300 bytes; 4096 threads fit */
static unsigned char *own_pool;
static size_t own_used;
static uint64_t own_calls;
static int replaying; /* set by the main thread before the first event's turn is posted */

static int is_own(const void *p) {
    const unsigned char *q = p;
    return own_pool && q >= own_pool && q < own_pool + OWN_POOL;
}

static void *own_alloc(size_t n) { /* a 16-byte header keeps the size, for realloc */
    if (!own_pool) {
        void *m = mmap(NULL, OWN_POOL, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return NULL;
        own_pool = m;
    }
    if (n > OWN_POOL) { errno = ENOMEM; return NULL; }
    size_t need = ((n + 15) & ~(size_t)15) + 16;
    size_t at = __atomic_fetch_add(&own_used, need, __ATOMIC_RELAXED);
    if (at + need > OWN_POOL) { errno = ENOMEM; return NULL; }
    __atomic_fetch_add(&own_calls, 1, __ATOMIC_RELAXED);
    *(size_t *)(own_pool + at) = n;
    return own_pool + at + 16; /* zeroed, as fresh mmap pages are: calloc needs no memset */
}

void *malloc(size_t n) { return replaying ? real_malloc(n) : own_alloc(n); }

void *calloc(size_t n, size_t each) {
    if (replaying) return real_calloc(n, each);
    if (each && n > SIZE_MAX / each) { errno = ENOMEM; return NULL; }
    return own_alloc(n * each);
}

void free(void *p) {
    if (!p || is_own(p)) return;
    if (!real_free) find_real(); /* (a block from before main(), if any) */
    real_free(p);
}

void *realloc(void *p, size_t n) {
    if (!is_own(p)) {
        if (!replaying && !p) return own_alloc(n);
        if (!real_realloc) find_real();
        return real_realloc(p, n);
    }
    size_t had = *(size_t *)((unsigned char *)p - 16);
    void *q = malloc(n);
    if (q) memcpy(q, p, had < n ? had : n);
    return q;
}

#ifdef OFFSETS
/* ---------------------------------------------------------------- offsets
   The build behind native_offsets: it also records where glibc put each block.
   Offsets are taken from the brk heap's start, sbrk(0) before the first event
   (which is why the calls before it are served from the pool above). */
/* glibc's HEAP_MAX_SIZE: a non-main arena's heaps are aligned to it */
#define HEAP_SPAN ((uintptr_t)(sizeof(long) == 8 ? 64 : 1) << 20)
#define MAX_HEAPS 65536
static uintptr_t brk_base;
static uintptr_t *heap_bases; /* non-main heaps, in order of first appearance */
static uint32_t n_heaps;
static char *placed;          /* the lines written at the end, one per block returned */
static size_t placed_len, placed_cap;

static void setup_offsets(uint64_t events) {
    heap_bases = table_memory(MAX_HEAPS * sizeof *heap_bases);
    placed_cap = (events ? events : 1) * 160; /* a line is at most about 130 bytes */
    placed = mmap(NULL, placed_cap, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (placed == MAP_FAILED) { begin_error(0); put("out of memory for the offsets"); die(1); }
}

/* "EVENT LINE TID OP HEAP OFFSET CHUNK BRK": HEAP is 0 for the brk heap, 1.. for
   the non-main heaps, "mmap" for a chunk of its own (OFFSET then within its page);
   CHUNK is the chunk's size field less its flag bits; BRK the break, from the base */
static void note(uint64_t e) {
    const struct event *ev = &events[e];
    if (ev->alloc < 0 || !blocks[ev->alloc].p) return;
    uintptr_t a = (uintptr_t)blocks[ev->alloc].p;
    uint64_t size_field = ((const size_t *)a)[-1];
    msg_len = 0;
    put_u(e); put(" "); put_u(ev->line); put(" "); put_u(tids[ev->thread]); put(" ");
    put_n(&"mcrfa"[ev->op], 1); put(" ");
    if (size_field & 2) { /* IS_MMAPPED */
        put("mmap "); put_hex(a & ((uintptr_t)sysconf(_SC_PAGESIZE) - 1));
    } else if (size_field & 4) { /* NON_MAIN_ARENA */
        uintptr_t base = a & ~(HEAP_SPAN - 1);
        uint32_t h = 0;
        while (h < n_heaps && heap_bases[h] != base) h++;
        if (h == n_heaps) {
            if (n_heaps == MAX_HEAPS) { begin_error(0); put("too many heaps"); die(1); }
            heap_bases[n_heaps++] = base;
        }
        put_u(h + 1); put(" "); put_hex(a - base);
    } else {
        put("0 "); put_hex(a - brk_base);
    }
    put(" "); put_hex(size_field & ~(uint64_t)7);
    put(" "); put_hex((uintptr_t)sbrk(0) - brk_base);
    msg[msg_len++] = '\n';
    if (placed_len + msg_len > placed_cap) { begin_error(0); put("offsets overflow"); die(1); }
    memcpy(placed + placed_len, msg, msg_len);
    placed_len += msg_len;
    msg_len = 0;
}

/* No thread exits before the last event: an exiting thread frees its tcache into
   its arena and puts the arena on glibc's free list for the next new thread, and
   when that happens would race with the events that follow (a trace does not say
   when its threads ended). */
static sem_t all_done, let_go;

static void after_event(uint64_t e) {
    note(e);
    if (e + 1 == n_events) sem_post(&all_done);
}

static void hold_until_the_end(void) {
    while (sem_wait(&let_go) && errno == EINTR) {}
}
#define AFTER_EVENT(e) after_event(e)
#define ENDS_AFTER(t, e) 0
#else
#define AFTER_EVENT(e) ((void)0)
#define ENDS_AFTER(t, e) ((t) != main_thread && events[e].next == NONE)
#endif

static void read_input(void) {
    size_t cap = 1 << 20;
    text = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (text == MAP_FAILED) { begin_error(0); put("out of memory for the trace"); die(1); }
    for (;;) {
        if (text_len == cap) {
            char *bigger = mremap(text, cap, cap * 2, MREMAP_MAYMOVE);
            if (bigger == MAP_FAILED) {
                begin_error(0); put("out of memory for the trace"); die(1);
            }
            text = bigger; cap *= 2;
        }
        ssize_t r = read(0, text + text_len, cap - text_len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { begin_error(0); put("cannot read trace: read(2) failed"); die(2); }
        if (r == 0) break;
        text_len += (size_t)r;
    }
}

/* ---------------------------------------------------------------- parsing */
enum { NUM_OK, NUM_BAD, NUM_NEG, NUM_BIG };

/* Python's int(s, 0), or int(s) when !any_base: a sign, a 0x/0o/0b prefix, digits with
   single underscores between them; decimal has no leading zeros unless it is all zeros */
static int parse_number(const char *s, size_t n, int any_base, uint64_t *out) {
    size_t i = 0;
    int negative = 0, big = 0, prefixed = 0, digits = 0, after_underscore = 0, leading_zero = 0;
    unsigned base = 10;
    uint64_t v = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) { negative = s[i] == '-'; i++; }
    if (any_base && i + 1 < n && s[i] == '0') {
        char p = s[i + 1];
        if (p == 'x' || p == 'X') base = 16;
        else if (p == 'o' || p == 'O') base = 8;
        else if (p == 'b' || p == 'B') base = 2;
        if (base != 10) { prefixed = 1; i += 2; }
    }
    if (i < n && s[i] == '0') leading_zero = 1;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '_') {
            if (after_underscore || (!digits && !prefixed)) return NUM_BAD;
            after_underscore = 1;
            continue;
        }
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                   : c >= 'a' && c <= 'z' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'Z' ? (unsigned)(c - 'A' + 10) : 99;
        if (d >= base) return NUM_BAD;
        after_underscore = 0;
        digits++;
        if (!big && v > (UINT64_MAX - d) / base) big = 1;
        if (!big) v = v * base + d;
    }
    if (!digits || after_underscore) return NUM_BAD;
    if (any_base && base == 10 && leading_zero && (v || big)) return NUM_BAD;
    if (negative && (v || big)) return NUM_NEG;
    if (big) return NUM_BIG;
    *out = v;
    return NUM_OK;
}

static uint64_t mix(uint64_t a) {
    a ^= a >> 33; a *= 0xff51afd7ed558ccdULL; a ^= a >> 33;
    return a;
}

static uint64_t find_slot(uint64_t addr) {
    uint64_t i = mix(addr) & table_mask;
    while (table[i].addr && table[i].addr != addr) i = (i + 1) & table_mask;
    return i;
}

static void remove_slot(uint64_t i) { /* linear probing's backward shift: no tombstones */
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & table_mask;
        if (!table[j].addr) break;
        uint64_t k = mix(table[j].addr) & table_mask;
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
        table[i] = table[j];
        i = j;
    }
    table[i].addr = 0;
}

static uint64_t live_bytes;

static int64_t new_alloc(uint64_t addr, uint64_t size, uint64_t line) {
    if (!addr) return -1; /* the allocation failed */
    uint64_t i = find_slot(addr);
    if (table[i].addr) {
        begin_error(line); put("address "); put_hex(addr); put(" allocated twice without a free");
        die(2);
    }
    table[i].addr = addr; table[i].id = (int64_t)n_allocs; table[i].size = size;
    if (live_bytes + size < live_bytes) {
        begin_error(line); put("live bytes beyond 64 bits"); die(2);
    }
    live_bytes += size;
    return (int64_t)n_allocs++;
}

static int64_t release(uint64_t addr, const char *what, uint64_t line) {
    uint64_t i = find_slot(addr);
    if (!table[i].addr) {
        begin_error(line); put(what); put(" of "); put_hex(addr);
        put(", which is not live in the trace");
        die(2);
    }
    int64_t id = table[i].id;
    live_bytes -= table[i].size;
    remove_slot(i);
    return id;
}

static uint32_t thread_index(uint64_t tid) {
    for (uint32_t t = 0; t < n_threads; t++) if (tids[t] == tid) return t;
    if (n_threads == MAX_THREADS) { begin_error(0); put("more than 4096 threads"); die(2); }
    tids[n_threads] = tid;
    first_of[n_threads] = NONE;
    return n_threads++;
}

static void bad_line(uint64_t line, const char *why, const char *s, size_t n) {
    begin_error(line); put(why); put(": "); put_quoted(s, n); die(2);
}

static void parse_line(const char *s, size_t n, uint64_t line) {
    const char *field[8]; size_t len[8]; int count = 0;
    uint64_t args[3] = {0, 0, 0}, tid = 0;
    int n_args = 0, negative = 0, big = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && is_space(s[i])) i++;
        if (i == n) break;
        size_t start = i;
        while (i < n && !is_space(s[i])) i++;
        if (count < 8) { field[count] = s + start; len[count] = i - start; }
        if (count == 0 && s[start] == '#') return; /* a comment */
        if (count >= 2) { /* every number is converted before any is checked, as in Python */
            uint64_t v = 0;
            int r = parse_number(s + start, i - start, 1, &v);
            if (r == NUM_BAD) bad_line(line, "not a trace line", s, n);
            negative |= r == NUM_NEG;
            big |= r == NUM_BIG;
            if (n_args < 3) args[n_args] = v;
            n_args++;
        }
        count++;
    }
    if (!count) return; /* a blank line */
    int tid_status = parse_number(field[0], len[0], 0, &tid);
    if (tid_status == NUM_BAD || count < 2) bad_line(line, "not a trace line", s, n);
    static const char ops[] = "mcrfa";
    static const int arity[] = {2, 3, 3, 1, 3};
    int op = -1;
    if (len[1] == 1) for (int k = 0; k < 5; k++) if (field[1][0] == ops[k]) op = k;
    if (op < 0 || n_args != arity[op] || tid_status == NUM_NEG || negative)
        bad_line(line, "malformed event", s, n);
    if (big || tid_status == NUM_BIG) bad_line(line, "a number beyond 64 bits", s, n);

    n_lines_read++;
    struct event ev = {0, 0, line, -1, -1, 0, NONE, (uint8_t)op};
    if (op == OP_M) {
        ev.size = args[0];
        ev.alloc = new_alloc(args[1], args[0], line);
    } else if (op == OP_C) {
        unsigned __int128 total = (unsigned __int128)args[0] * args[1];
        if (total >> 64) bad_line(line, "a calloc of more than 2**64 bytes", s, n);
        ev.size = (uint64_t)total;
        ev.extra = args[0];
        ev.alloc = new_alloc(args[2], ev.size, line);
    } else if (op == OP_A) {
        ev.extra = args[0];
        ev.size = args[1];
        ev.alloc = new_alloc(args[2], args[1], line);
    } else if (op == OP_F) {
        ev.frees = release(args[0], "free", line);
    } else {
        uint64_t old = args[0], size = args[1], new = args[2];
        if (old && !new && size) return; /* a failed realloc: nothing changed */
        ev.size = size;
        if (old) ev.frees = release(old, "realloc", line);
        ev.alloc = new_alloc(new, size, line);
    }
    ev.thread = thread_index(tid);
    if (first_of[ev.thread] == NONE) first_of[ev.thread] = (uint32_t)n_events;
    else events[last_of[ev.thread]].next = (uint32_t)n_events;
    last_of[ev.thread] = (uint32_t)n_events;
    if (live_bytes > peak_live) { peak_live = live_bytes; peak_event = n_events; }
    events[n_events++] = ev;
}

static void parse(void) {
    uint64_t lines = 1;
    for (size_t i = 0; i < text_len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x80) {
            msg_len = 0; /* as Python words it, the name inside */
            put("cannot read trace '"); put(label); put("': byte ");
            put_hex(c); put(" at offset "); put_u(i); put(" is not ASCII");
            die(2);
        }
        lines += c == '\n' || c == '\r';
    }
    if (lines >= NONE) { begin_error(0); put("too many lines"); die(2); }
    events = table_memory(lines * sizeof *events);
    blocks = table_memory(lines * sizeof *blocks);
    uint64_t cap = 16;
    while (cap < 2 * lines) cap *= 2;
    table = table_memory(cap * sizeof *table);
    table_mask = cap - 1;
    tids = table_memory(MAX_THREADS * sizeof *tids);
    first_of = table_memory(MAX_THREADS * sizeof *first_of);
    last_of = table_memory(MAX_THREADS * sizeof *last_of);
    uint64_t line = 1;
    size_t start = 0;
    for (size_t i = 0; i <= text_len; i++) {
        if (i < text_len && text[i] != '\n' && text[i] != '\r') continue;
        parse_line(text + start, i - start, line);
        if (i + 1 < text_len && text[i] == '\r' && text[i + 1] == '\n') i++;
        start = i + 1;
        line++;
    }
    munmap(table, cap * sizeof *table); /* resolved: not needed during the replay */
    munmap(text, text_len);
}

/* ---------------------------------------------------------------- measuring */
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* what one empty timed region measures, in tenths of a ns: the least of 64 batch means */
static uint64_t timer_overhead_tenths(void) {
    uint64_t best = UINT64_MAX;
    for (int batch = 0; batch < 64; batch++) {
        uint64_t sum = 0;
        for (int i = 0; i < 256; i++) { uint64_t a = now_ns(); sum += now_ns() - a; }
        if (sum * 10 / 256 < best) best = sum * 10 / 256;
    }
    return best;
}

static const char *heap_method(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    return "mallinfo2";
#else
    return "mallinfo";
#endif
}

static uint64_t heap_bytes(void) { /* glibc's bytes from the system: arena + hblkhd */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 info = mallinfo2();
    return info.arena + info.hblkhd;
#else
    struct mallinfo info = mallinfo();
    return (uint64_t)(unsigned)info.arena + (unsigned)info.hblkhd;
#endif
}

static uint64_t field_kb(const char *buf, const char *name) {
    const char *p = strstr(buf, name);
    if (!p) return UINT64_MAX;
    p += strlen(name);
    while (*p == ' ' || *p == '\t') p++;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
    return v * 1024;
}

static uint64_t read_proc(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, size - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    return got;
}

static uint64_t anonymous_bytes(void) { /* resident anonymous memory of the process */
    char buf[4096];
    if (read_proc("/proc/self/smaps_rollup", buf, sizeof buf)) {
        uint64_t v = field_kb(buf, "\nAnonymous:");
        if (v != UINT64_MAX) return v;
    }
    if (!read_proc("/proc/self/statm", buf, sizeof buf)) return 0;
    uint64_t f[3] = {0, 0, 0};
    const char *p = buf;
    for (int k = 0; k < 3; k++) {
        while (*p == ' ') p++;
        while (*p >= '0' && *p <= '9') f[k] = f[k] * 10 + (uint64_t)(*p++ - '0');
    }
    return (f[1] - f[2]) * (uint64_t)sysconf(_SC_PAGESIZE); /* resident - shared */
}

/* ---------------------------------------------------------------- replaying */
static unsigned char stamp_of(int64_t id) { return (unsigned char)((uint64_t)id * 131 + 17) | 1; }

static void broken(const struct event *ev, const char *what) {
    begin_error(ev->line); put("the allocator broke a block: "); put(what); die(3);
}

/* the first and last 16 bytes of what a block holds must be what was written there */
static void check(const unsigned char *p, uint64_t n, unsigned char want, const struct event *ev) {
    uint64_t edge = n < 16 ? n : 16;
    for (uint64_t i = 0; i < edge; i++)
        if (p[i] != want || p[n - 1 - i] != want) broken(ev, "its stamp changed");
}

static void fill(int64_t id, unsigned char *p, uint64_t size) {
    blocks[id].p = p;
    blocks[id].size = size;
    if (p) memset(p, stamp_of(id), size); /* every byte, as a program uses its memory */
}

static void out_of_memory(const struct event *ev) {
    begin_error(ev->line); put("out of memory: the allocator returned NULL for ");
    put_u(ev->size); put(" bytes");
    die(1);
}

#define TIMED(call) do { uint64_t t0_ = now_ns(); call; timed_ns += now_ns() - t0_; calls++; } \
    while (0)

static void perform(const struct event *ev) {
    unsigned char *p = NULL;
    if (ev->frees >= 0) {
        struct block *old = &blocks[ev->frees];
        if (old->p) check(old->p, old->size, stamp_of(ev->frees), ev);
        if (ev->alloc >= 0) { /* a realloc that moves or resizes */
            TIMED(p = real_realloc(old->p, ev->size));
            if (!p && ev->size) out_of_memory(ev);
            uint64_t kept = old->size < ev->size ? old->size : ev->size;
            if (p) check(p, kept, stamp_of(ev->frees), ev);
            old->p = NULL;
            fill(ev->alloc, p, ev->size);
            return;
        }
        TIMED(real_free(old->p)); /* a free, or realloc(p, 0) */
        old->p = NULL;
        return;
    }
    if (ev->alloc < 0) return; /* an allocation that failed in the trace */
    if (ev->op == OP_C) {
        TIMED(p = real_calloc(ev->extra, ev->extra ? ev->size / ev->extra : 0));
        if (p && ev->size) check(p, ev->size, 0, ev);
    } else if (ev->op == OP_R) {
        TIMED(p = real_realloc(NULL, ev->size));
    } else if (ev->op == OP_A && ev->extra > 16) {
        uint64_t align = 16;
        while (align < ev->extra) align *= 2; /* as memalign rounds it */
        TIMED(p = memalign(align, ev->size));
        if (p && ((uintptr_t)p & (align - 1))) broken(ev, "memalign's block is not aligned");
    } else {
        TIMED(p = real_malloc(ev->size));
    }
    if (!p && ev->size) out_of_memory(ev);
    fill(ev->alloc, p, ev->size);
}

static void measure(uint64_t e) {
    if (e == peak_event) {
        anon_at_peak = anonymous_bytes();
        footprint_at_peak = use_heap_info ? heap_bytes() : anon_at_peak - anon_baseline;
    }
    if (sample_every && e >= sample_from && (e - sample_from) % sample_every == 0) {
        uint64_t fp = use_heap_info ? heap_bytes() : anonymous_bytes() - anon_baseline;
        if (fp > sampled_peak) sampled_peak = fp;
    }
}

static void wait_turn(uint32_t t) {
    while (sem_wait(&turns[t]) && errno == EINTR) {}
}

/* Thread ends (not in the offsets build, whose threads all live to the end).  A
   thread other than the main one ends right after its last event, before the
   next event in the global order: glibc's end of a thread (its tcache freed into
   its arena, the arena put on the free list for the next new thread) changes the
   heap, so it must happen at a known point of the replay, not whenever the thread
   gets there.  The thread does not post the next event's turn: it leaves its
   index and that event in ending and ending_next and posts the main thread's
   turn; the main thread joins it (pthread_join returns after glibc's
   __libc_thread_freeres) and then posts the next event's turn, or takes it if
   the event is its own.  The main thread never ends before the replay does, so
   it serves these requests while it waits for each of its events' turns and,
   its events done, until every other thread has ended. */
static uint32_t ending = NONE;
static uint64_t ending_next;
static uint32_t running; /* threads other than the main one, not yet joined */

static void end_thread(uint32_t t, uint64_t e) { /* in thread t, after its last event e */
    ending = t;
    ending_next = e + 1;
    sem_post(&turns[main_thread]); /* the main thread's turn: t's two writes go with it */
}

/* in the main thread, at a post to it that is a thread's end: join that thread;
   returns the event after its last one */
static uint64_t join_ended(void) {
    uint32_t t = ending;
    ending = NONE;
    int err = pthread_join(threads[t], NULL);
    if (err) { begin_error(0); put("cannot join thread "); put_u(t); die(1); }
    running--;
    return ending_next;
}

/* the main thread's wait for its next event's turn, ending threads meanwhile */
static void wait_main_turn(void) {
    for (;;) {
        wait_turn(main_thread);
        if (ending == NONE) return; /* the turn of its own event */
        uint64_t next = join_ended(); /* (an event of its own is still to come: next is one) */
        if (events[next].thread == main_thread) return;
        sem_post(&turns[events[next].thread]);
    }
}

#ifndef OFFSETS
/* the main thread, its events done: ends the other threads as they finish theirs */
static void end_the_others(void) {
    while (running) {
        wait_turn(main_thread);
        uint64_t next = join_ended();
        if (next < n_events) sem_post(&turns[events[next].thread]);
    }
}
#endif

/* a thread's events, each when its turn comes: the trace's global order */
static void run_thread(uint32_t t) {
    uint64_t previous = UINT64_MAX;
    for (uint32_t e = first_of[t]; e != NONE; e = events[e].next) {
        if (previous == UINT64_MAX || previous + 1 != e) {
            if (t == main_thread) wait_main_turn();
            else wait_turn(t);
        }
        perform(&events[e]);
        measure(e);
        AFTER_EVENT(e);
        if (ENDS_AFTER(t, e)) { end_thread(t, e); return; }
        if (e + 1 < n_events && events[e + 1].thread != t) sem_post(&turns[events[e + 1].thread]);
        previous = e;
    }
}

static void touch_stack(void) { /* its pages resident before the baseline, not during */
    volatile char pad[64 * 1024];
    for (size_t i = 0; i < sizeof pad; i += 512) pad[i] = 1;
}

static void *thread_main(void *arg) {
    touch_stack();
    sem_post(&ready);
    run_thread((uint32_t)(uintptr_t)arg);
#ifdef OFFSETS
    hold_until_the_end();
#endif
    return NULL;
}

static uint64_t parse_option(const char *s) {
    uint64_t v = 0;
    if (parse_number(s, strlen(s), 0, &v) != NUM_OK) {
        begin_error(0); put("usage: replayer LABEL heap|anon [SAMPLE_EVERY SAMPLE_FROM] < TRACE");
        die(2);
    }
    return v;
}

int main(int argc, char **argv) {
    find_real();
    if (argc != 3 && argc != 5) parse_option("");
    label = argv[1];
    use_heap_info = strcmp(argv[2], "heap") == 0;
    if (argc == 5) { sample_every = parse_option(argv[3]); sample_from = parse_option(argv[4]); }
    read_input();
    parse();
    uint64_t overhead = timer_overhead_tenths();
    turns = table_memory(MAX_THREADS * sizeof *turns);
    threads = table_memory(MAX_THREADS * sizeof *threads);
    /* the smallest tid (0, in a recorded trace) runs here */
    for (uint32_t t = 1; t < n_threads; t++) if (tids[t] < tids[main_thread]) main_thread = t;
    sem_init(&ready, 0, 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STACK_BYTES);
    for (uint32_t t = 0; t < n_threads; t++) {
        sem_init(&turns[t], 0, 0);
        if (t == main_thread) continue;
        if (pthread_create(&threads[t], &attr, thread_main, (void *)(uintptr_t)t)) {
            begin_error(0); put("cannot start thread "); put_u(t); die(1);
        }
        running++;
    }
    for (uint32_t t = 1; t < n_threads; t++) while (sem_wait(&ready) && errno == EINTR) {}
    touch_stack();
    if (use_heap_info) heap_baseline = heap_bytes();
    anon_baseline = anonymous_bytes();
#ifdef OFFSETS
    sem_init(&all_done, 0, 0);
    sem_init(&let_go, 0, 0);
    setup_offsets(n_events);
    brk_base = (uintptr_t)sbrk(0);
#endif
    replaying = 1; /* the semaphore post below publishes it to the other threads */
    if (n_events) {
        sem_post(&turns[events[0].thread]);
        run_thread(main_thread);
    }
#ifdef OFFSETS
    if (n_events) while (sem_wait(&all_done) && errno == EINTR) {}
    for (uint32_t t = 1; t < n_threads; t++) sem_post(&let_go);
    for (uint32_t t = 0; t < n_threads; t++) if (t != main_thread) pthread_join(threads[t], NULL);
#else
    end_the_others(); /* (each joined as it ends) */
#endif

    /* VmHWM, not getrusage: ru_maxrss keeps the Python parent's size from before the exec */
    char status[4096];
    uint64_t hwm = read_proc("/proc/self/status", status, sizeof status)
                 ? field_kb(status, "\nVmHWM:") : UINT64_MAX;
    if (hwm == UINT64_MAX) {
        struct rusage usage;
        getrusage(RUSAGE_SELF, &usage);
        hwm = (uint64_t)usage.ru_maxrss * 1024;
    }
    uint64_t spent = timed_ns * 10, removed = calls * overhead;
    uint64_t tenths = calls ? (spent > removed ? spent - removed : 0) / calls : 0;
    msg_len = 0;
    put("{\"events\": "); put_u(n_lines_read);
    put(", \"threads\": "); put_u(n_threads);
    put(", \"calls\": "); put_u(calls);
    put(", \"peak_live\": "); put_u(peak_live);
    put(", \"footprint_at_peak\": "); put_u(footprint_at_peak);
    put(", \"footprint_method\": \""); put(use_heap_info ? heap_method() : "anonymous-rss");
    put("\", \"heap_baseline\": "); put_u(heap_baseline);
    put(", \"anonymous_growth_at_peak\": ");
    put_i(peak_event == UINT64_MAX ? 0 : (int64_t)(anon_at_peak - anon_baseline));
    put(", \"sampled_peak_footprint\": "); put_u(sampled_peak);
    put(", \"peak_rss\": "); put_u(hwm);
    put(", \"ns_per_call\": "); put_tenths(tenths);
    put(", \"timer_overhead_ns\": "); put_tenths(overhead);
#ifdef OFFSETS
    put(", \"replayer_allocations\": "); put_u(own_calls);
    for (const char *p = placed; placed_len;) { /* the offsets, before the summary */
        ssize_t w = write(1, p, placed_len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        p += w; placed_len -= (size_t)w;
    }
#endif
    put("}");
    flush(1);
    return 0;
}
"""

#: The allocators :func:`preloadable` looks for: name -> the library's soname.
PRELOADS: dict[str, str] = {
    "jemalloc": "libjemalloc.so.2",
    "tcmalloc": "libtcmalloc_minimal.so.4",
    "mimalloc": "libmimalloc.so.2",
}


class NativeUnavailable(RuntimeError):
    """The replayer cannot be built here (no C compiler, or it failed)."""


@dataclass(frozen=True)
class NativeResult:
    """One native replay.  Sizes in bytes; ``footprint_at_peak`` as ``footprint_method`` says."""

    allocator: str
    events: int
    threads: int
    calls: int
    peak_live: int  # requested bytes of the live blocks, at their peak
    footprint_at_peak: int  # what the allocator held right after the event of that peak
    footprint_method: str  # "mallinfo2" (or "mallinfo"): glibc's; "anonymous-rss": preloaded
    anonymous_growth_at_peak: int  # resident anonymous memory then, less before the first event
    sampled_peak_footprint: int  # the most of the sampled footprints (0 unless sampled)
    peak_rss: int  # the replayer's peak resident set (VmHWM), its own tables included
    ns_per_call: float

    @property
    def fragmentation(self) -> float:
        """Footprint over live bytes at the live peak (0.0 for a trace that allocates nothing)."""
        return self.footprint_at_peak / self.peak_live if self.peak_live else 0.0


def replayer(offsets: bool = False) -> Path:
    """The compiled replayer (built at the first call, then cached).

    With ``offsets``, the build that also records where each block went
    (:func:`native_offsets`) and keeps every thread alive to the end; a build
    of its own, so that the plain one does neither.
    """
    name, flags = ("native-offsets", ["-DOFFSETS"]) if offsets else ("native-replayer", [])
    try:  # (-ldl: dlsym before glibc 2.34)
        return build(REPLAYER_C, name, ["-O2", "-pthread", *flags], ["-ldl"])
    except CompilerUnavailable as exc:
        raise NativeUnavailable(str(exc)) from None


@cache
def preloadable() -> dict[str, Path]:
    """The allocators of :data:`PRELOADS` installed here: name -> the library's path.

    Found in the dynamic linker's cache (``ldconfig -p``), so wherever the
    distribution puts them.
    """
    ldconfig = shutil.which("ldconfig") or shutil.which("ldconfig", path="/sbin:/usr/sbin")
    if ldconfig is None:
        return {}
    listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
    found: dict[str, Path] = {}
    wide = sys.maxsize > 2**32  # a 64-bit process preloads the 64-bit build
    for name, soname in PRELOADS.items():
        pattern = rf"^\s*{re.escape(soname)} \(([^)]*)\) => (\S+)$"
        for flags, where in re.findall(pattern, listing, re.M):
            if ("64" in flags) == wide:
                found[name] = Path(where)
                break
    return found


def _trace_bytes(path: str | Path) -> bytes:
    try:
        with open_trace(path, "r") as fh:
            return fh.read().encode("ascii")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise TraceError(f"cannot read trace {str(path)!r}: {exc}") from None


def native_replay(
    path: str | Path,
    allocator: str = "glibc",
    env: Mapping[str, str] | None = None,
    sample: tuple[int, int] | None = None,
) -> NativeResult:
    """Replay the trace at ``path`` natively, paced, through ``allocator``.

    ``allocator`` is ``"glibc"`` or a name of :func:`preloadable`.  ``env``
    adds to the replayer's environment (``GLIBC_TUNABLES``, say).  With
    ``sample=(every, start)`` the footprint is also read after event
    ``start`` and every ``every``-th event after it (0-based, in file order
    among the calls that did something), and the most of those readings is
    ``sampled_peak_footprint``.

    A trace :func:`arenas.trace.parse` would reject raises
    :class:`~arenas.trace.TraceError` with the replayer's message;
    :class:`NativeUnavailable` if it cannot be built; ``RuntimeError`` if
    the allocator failed (out of memory, or a block whose stamp changed).
    """
    environment = _environment(env, inherit_malloc_env=True)
    if allocator != "glibc":
        libraries = preloadable()
        if allocator not in libraries:
            known = ", ".join(["glibc", *libraries])
            raise ValueError(f"no allocator {allocator!r} to preload here; known: {known}")
        environment["LD_PRELOAD"] = str(libraries[allocator])
    method = "heap" if allocator == "glibc" else "anon"
    sampling = [str(n) for n in sample] if sample else []
    proc = subprocess.run(
        [str(replayer()), str(path), method, *sampling],
        input=_trace_bytes(path),
        capture_output=True,
        env=environment,
    )
    message = proc.stderr.decode(errors="replace").strip()
    if proc.returncode == 2:
        raise TraceError(message)
    if proc.returncode:
        raise RuntimeError(f"the native replay through {allocator} failed: {message}")
    data = json.loads(proc.stdout)
    del data["heap_baseline"], data["timer_overhead_ns"]
    return NativeResult(allocator=allocator, **data)


def _environment(env: Mapping[str, str] | None, inherit_malloc_env: bool) -> dict[str, str]:
    """The replayer's environment: this process's, less ``LD_PRELOAD`` (and, unless
    ``inherit_malloc_env``, less glibc's malloc settings), plus ``env``."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name != "LD_PRELOAD" and (inherit_malloc_env or not _is_malloc_setting(name))
    }
    environment.update(env or {})
    return environment


def _is_malloc_setting(name: str) -> bool:
    # GLIBC_TUNABLES, and the older variables glibc still reads as aliases of
    # its malloc tunables (MALLOC_ARENA_MAX, MALLOC_TOP_PAD_, ...); LIBC_FATAL_STDERR_
    # is not one of them, and MALLOC_CHECK_ needs libc_malloc_debug.so preloaded anyway.
    return name == "GLIBC_TUNABLES" or name.startswith("MALLOC_")


#: :attr:`Placement.heap` of a block glibc mmapped on its own.
MMAPPED = "mmap"


@dataclass(frozen=True)
class Placement:
    """Where glibc put the block one event of a trace returned.

    ``heap`` is 0 for the main arena's brk heap, whose ``offset`` is from
    the program break before the first event (``sbrk(0)``); 1, 2, ... for the
    heaps of the other arenas, numbered in the order blocks first appear in
    them, each ``offset`` from the heap's start (the block's address rounded
    down to glibc's 64 MiB heap size); or :data:`MMAPPED` for a chunk glibc
    mmapped on its own, whose ``offset`` is within its page.  Offsets are
    those of the block (what malloc returned), not of its chunk header.
    """

    event: int  # the event's index among the trace's events (arenas.trace.Event.seq)
    line: int  # its line in the trace file (1-based)
    tid: int  # the traced thread that made the call
    op: str  # m, c, r or a
    heap: int | str  # 0 the brk heap, 1.. a non-main arena's heap, or MMAPPED
    offset: int
    chunk: int  # the chunk's size, as its header says, less the flag bits
    brk: int  # the program break after the event, from the same base as heap 0

    def text(self) -> str:
        """The line the replayer wrote for it (see :data:`OFFSETS_HEADER`)."""
        return (
            f"{self.event} {self.line} {self.tid} {self.op} {self.heap}"
            f" {self.offset:#x} {self.chunk:#x} {self.brk:#x}"
        )

    @classmethod
    def parse(cls, text: str) -> Placement:
        event, line, tid, op, heap, offset, chunk, brk = text.split()
        return cls(
            int(event),
            int(line),
            int(tid),
            op,
            heap if heap == MMAPPED else int(heap),
            int(offset, 16),
            int(chunk, 16),
            int(brk, 16),
        )


#: The first line of an offsets file: the fields of each :meth:`Placement.text` line.
OFFSETS_HEADER = "# event line tid op heap offset chunk brk"


@dataclass(frozen=True)
class NativeOffsets:
    """A native replay through glibc, with where each block went."""

    result: NativeResult
    placements: list[Placement]
    replayer_allocations: int  # calls the replayer made itself, kept out of glibc's heap

    def text(self) -> str:
        """The offsets file: :data:`OFFSETS_HEADER`, then one line per placement."""
        return "".join(
            f"{line}\n" for line in [OFFSETS_HEADER, *map(Placement.text, self.placements)]
        )


def native_offsets(
    path: str | Path, env: Mapping[str, str] | None = None, inherit_malloc_env: bool = True
) -> NativeOffsets:
    """Replay the trace at ``path`` natively through glibc, recording where
    glibc put every block an event returned (a :class:`Placement` each).

    The replay is :func:`native_replay`'s, paced, which keeps the replayer's
    own allocations (a thread's dtv, which ``pthread_create`` callocs) out
    of glibc's heap, so that the brk heap holds the trace's blocks and
    nothing else: a first block of 24 bytes lands at offset 0x2a0, after the
    thread's 0x290-byte tcache chunk.  Its build keeps every thread alive to
    the end.  ``env`` adds to the
    environment (``GLIBC_TUNABLES=glibc.malloc.arena_max=2``, say); without
    ``inherit_malloc_env`` this process's own malloc settings
    (``GLIBC_TUNABLES``, ``MALLOC_*``) are not passed on, so that only
    ``env`` decides.  Raises as :func:`native_replay` does.
    """
    proc = subprocess.run(
        [str(replayer(offsets=True)), str(path), "heap"],
        input=_trace_bytes(path),
        capture_output=True,
        env=_environment(env, inherit_malloc_env),
    )
    message = proc.stderr.decode(errors="replace").strip()
    if proc.returncode == 2:
        raise TraceError(message)
    if proc.returncode:
        raise RuntimeError(f"the native replay through glibc failed: {message}")
    *lines, summary = proc.stdout.decode().splitlines()
    data = json.loads(summary)
    own = data.pop("replayer_allocations")
    del data["heap_baseline"], data["timer_overhead_ns"]
    return NativeOffsets(
        NativeResult(allocator="glibc", **data), [*map(Placement.parse, lines)], own
    )
