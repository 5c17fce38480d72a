"""Recording a real program's malloc calls, with thread ids, in the trace format.

The format is :mod:`arenas.trace`'s.  The recorder, being C, writes its
lines itself (the same fields, in the same order); its raw log is then read
back and rewritten through :mod:`arenas.trace`, so a line it got wrong is a
:class:`~arenas.trace.TraceError` at record time, not at replay.

What does *not* work, and why we do not use it: glibc's
``libc_malloc_debug.so`` logs nothing unless the program calls ``mtrace()``,
and even then its log has no thread ids, folds calloc and memalign into
malloc, and writes a free after the memory is released (so another thread
can log the reused address first).  ``ltrace`` is hundreds of times slower
and misses libc's internal calls.

What does: a small ``LD_PRELOAD`` library (below), compiled with the
machine's C compiler when ``record`` first runs (:mod:`stress.cc` keeps
the build).  It wraps the malloc family (malloc, free, calloc, realloc,
memalign, aligned_alloc, posix_memalign, valloc, pvalloc) through glibc's
exported ``__libc_malloc`` and friends, and holds one lock across each real
call *and* its log line, so the log is a valid order across threads.  It
never allocates while logging (numbers are formatted by hand into a stack
buffer, written with ``write(2)``).  It writes one file per process; a
forked child opens its own.  Afterwards the thread ids (kernel
tids) are renumbered 0..N-1, 0 being the process's main thread.

Each log opens with a header line (see :mod:`arenas.trace`),
``# sbrk-base 0x...``: ``sbrk(0)`` taken once, under the lock, just before
the process's first real malloc-family call.  glibc's main heap starts
there (its first malloc grows the break from it, and the thread cache's
``tcache_perthread_struct`` is the heap's first chunk, so the first small
block lands at base + 0x2a0); :mod:`stress.fidelity` measures placements
from it.  A forked child's log carries the parent's base, since the child
has the parent's heap.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from arenas.trace import Call, read_calls, trace_header, write_calls

from .cc import CompilerUnavailable, build

__all__ = ["RECORDER_C", "Recording", "record"]

RECORDER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int fd = -1;
static pid_t fd_pid;
static __thread int inside;
/* sbrk(0) before the process's first malloc, where glibc's main heap will start; a
   forked child inherits it with the heap, an exec'd program takes its own */
static uintptr_t sbrk_base;

static char *put_dec(char *p, uint64_t v) {
    char tmp[24]; int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

static char *put_hex(char *p, uint64_t v) {
    char tmp[24]; int n = 0;
    *p++ = '0'; *p++ = 'x';
    do { tmp[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

static void write_all(const char *q, ssize_t left) {
    while (left > 0) {
        ssize_t w = write(fd, q, (size_t)left);
        if (w <= 0) break;
        q += w; left -= w;
    }
}

static void open_log(void) {
    pid_t pid = getpid();
    if (fd >= 0 && fd_pid == pid) return;
    const char *dir = getenv("ARENAS_TRACE_DIR");
    if (!dir) { fd = -2; fd_pid = pid; return; }
    char path[4096]; char *p = path;
    while (*dir && p < path + 4000) *p++ = *dir++;
    const char *name = "/trace.";
    while (*name) *p++ = *name++;
    p = put_dec(p, (uint64_t)pid); *p = 0;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    fd_pid = pid;
    if (fd < 0) return;
    char line[64]; char *q = line;
    const char *key = "# sbrk-base ";
    while (*key) *q++ = *key++;
    q = put_hex(q, (uint64_t)sbrk_base);
    *q++ = '\n';
    write_all(line, q - line);
}

/* one line: tid, op, then up to three numbers (the first n_hex of which from the end are hex) */
static void log_event(char op, int n, uint64_t a, uint64_t b, uint64_t c, int hex_mask) {
    int saved = errno;
    open_log();
    if (fd < 0) { errno = saved; return; }
    char line[160]; char *p = line;
    p = put_dec(p, (uint64_t)syscall(SYS_gettid));
    *p++ = ' '; *p++ = op;
    uint64_t v[3] = {a, b, c};
    for (int i = 0; i < n; i++) {
        *p++ = ' ';
        p = (hex_mask >> i & 1) ? put_hex(p, v[i]) : put_dec(p, v[i]);
    }
    *p++ = '\n';
    write_all(line, p - line);
    errno = saved;
}

static void before_fork(void) { pthread_mutex_lock(&lock); }
static void after_fork(void) { pthread_mutex_unlock(&lock); }
__attribute__((constructor)) static void init(void) {
    pthread_atfork(before_fork, after_fork, after_fork);
}

/* The first call of all takes the base: under the lock, so before any real malloc (a
   nested call, the plain path, comes after its thread's first ENTER) */
#define ENTER if (inside) goto plain; inside = 1; pthread_mutex_lock(&lock); \
    if (!sbrk_base) sbrk_base = (uintptr_t)sbrk(0)
#define LEAVE pthread_mutex_unlock(&lock); inside = 0

void *malloc(size_t n) {
    void *r;
    ENTER; r = __libc_malloc(n); log_event('m', 2, n, (uintptr_t)r, 0, 2); LEAVE; return r;
plain: return __libc_malloc(n);
}
void free(void *p) {
    if (!p) return;
    ENTER; __libc_free(p); log_event('f', 1, (uintptr_t)p, 0, 0, 1); LEAVE; return;
plain: __libc_free(p);
}
void *calloc(size_t n, size_t s) {
    void *r;
    ENTER; r = __libc_calloc(n, s); log_event('c', 3, n, s, (uintptr_t)r, 4); LEAVE; return r;
plain: return __libc_calloc(n, s);
}
void *realloc(void *p, size_t n) {
    void *r;
    ENTER; r = __libc_realloc(p, n); log_event('r', 3, (uintptr_t)p, n, (uintptr_t)r, 5); LEAVE;
    return r;
plain: return __libc_realloc(p, n);
}
void *memalign(size_t a, size_t n) {
    void *r;
    ENTER; r = __libc_memalign(a, n); log_event('a', 3, a, n, (uintptr_t)r, 4); LEAVE; return r;
plain: return __libc_memalign(a, n);
}
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
void *valloc(size_t n) { return memalign((size_t)sysconf(_SC_PAGESIZE), n); }
void *pvalloc(size_t n) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (n > SIZE_MAX - page) { errno = ENOMEM; return NULL; }
    return memalign(page, n ? (n + page - 1) & ~(page - 1) : page);
}
int posix_memalign(void **out, size_t a, size_t n) {
    if (a < sizeof(void *) || (a & (a - 1))) return EINVAL;
    void *r = memalign(a, n);
    if (!r && n) return ENOMEM;
    *out = r;
    return 0;
}
"""


@dataclass
class Recording:
    """What ``record`` wrote."""

    path: Path  # the main process's trace
    others: list[Path]  # traces of any other processes the command started
    events: int
    threads: int
    exit_code: int


class RecordError(RuntimeError):
    """Recording could not be set up (no C compiler, compile error, bad command)."""


def _compile() -> Path:
    try:
        return build(RECORDER_C, "librecorder.so", ["-O2", "-shared", "-fPIC"], ["-lpthread"])
    except CompilerUnavailable as exc:
        raise RecordError(f"recording needs a C compiler: {exc}") from None


def _renumber(raw: Path, main_tid: int, out: Path) -> tuple[int, int]:
    """Rewrite kernel tids as 0..N-1 (the main thread first), keeping the header (the
    ``sbrk-base`` line); return (events, threads)."""
    ids: dict[int, int] = {main_tid: 0}

    def renumbered() -> Iterator[Call]:
        for call in read_calls(raw):
            yield call._replace(tid=ids.setdefault(call.tid, len(ids)))

    events = write_calls(out, renumbered(), trace_header(raw))
    return events, len(ids) if events else 0


def record(out: str | Path, command: list[str]) -> Recording:
    """Run ``command`` with the recorder preloaded; write its trace to ``out``."""
    if not command:
        raise RecordError("nothing to record: give a command after --")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="arenas-record-") as tmp:
        workdir = Path(tmp)
        lib = _compile()
        logs = workdir / "logs"
        logs.mkdir()
        env = {**os.environ, "LD_PRELOAD": str(lib), "ARENAS_TRACE_DIR": str(logs)}
        try:
            proc = subprocess.Popen(command, env=env)
        except OSError as exc:
            raise RecordError(f"cannot run {command[0]!r}: {exc}") from None
        code = proc.wait()
        main = logs / f"trace.{proc.pid}"
        if not main.exists():
            raise RecordError(f"{command[0]!r} made no allocation we could see")
        events, threads = _renumber(main, proc.pid, out)
        others: list[Path] = []
        for extra in sorted(logs.glob("trace.*")):
            if extra == main:
                continue
            pid = int(extra.suffix.lstrip(".") or extra.name.rsplit(".", 1)[-1])
            target = out.with_name(f"{out.name}.{pid}")
            _renumber(extra, pid, target)
            others.append(target)
    return Recording(out, others, events, threads, code)
