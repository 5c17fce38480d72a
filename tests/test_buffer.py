"""Issue 5 (balloc's fixed buffer): Allocator(buffer=..., use_malloc=..., on_oom=...)."""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
import threading
from multiprocessing import shared_memory

import pytest

from arenas import Allocator, OutOfMemory


def buffer_range(buf: object) -> tuple[int, int]:
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]
    anchor = ctypes.c_char.from_buffer(view)
    lo = ctypes.addressof(anchor)
    del anchor
    n = view.nbytes
    view.release()
    return lo, lo + n


def fill_to_exhaustion(alloc: Allocator, size: int) -> list[int]:
    blocks: list[int] = []
    with pytest.raises(OutOfMemory):
        while True:
            blocks.append(alloc.malloc(size))
    return blocks


@pytest.mark.parametrize("size", [24, 1000, 70_000])
def test_a_one_mib_buffer_fills_up_then_recovers(size: int) -> None:
    buf = bytearray(1 << 20)
    lo, hi = buffer_range(buf)
    told: list[int] = []
    with Allocator(buffer=buf, on_oom=told.append) as alloc:
        blocks = fill_to_exhaustion(alloc, size)
        assert told == [size]
        assert len(blocks) * size > (1 << 20) * 0.5
        assert all(lo <= b and b + size <= hi for b in blocks)
        assert alloc.stats().hblks == 0  # nothing was mapped
        alloc.check()
        for addr in blocks[: len(blocks) // 2]:
            alloc.free(addr)
        again = alloc.malloc(size)
        assert lo <= again < hi
        alloc.check()


def test_a_full_buffer_names_its_one_arena_once() -> None:
    with Allocator(buffer=bytearray(1 << 20)) as alloc:
        blocks = fill_to_exhaustion(alloc, 70_000)
        with pytest.raises(
            OutOfMemory, match=r"^cannot allocate 70000 bytes: arena 0 cannot grow$"
        ):
            alloc.malloc(70_000)
        for addr in blocks:
            alloc.free(addr)


def test_every_thread_allocates_from_the_buffer() -> None:
    buf = bytearray(4 << 20)
    lo, hi = buffer_range(buf)
    with Allocator(buffer=buf) as alloc:
        got: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            mine = [alloc.malloc(n) for n in (10, 500, 3000, 90_000)]
            with lock:
                got.extend(mine)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 32 and all(lo <= a < hi for a in got)
        assert len(alloc.stats().arenas) == 1
        alloc.check()


def test_use_malloc_grows_past_the_buffer() -> None:
    buf = bytearray(256 << 10)
    lo, hi = buffer_range(buf)
    with Allocator(buffer=buf, use_malloc=True) as alloc:
        blocks = [alloc.malloc(1000) for _ in range(1000)]  # ~1 MiB, four times the buffer
        inside = [b for b in blocks if lo <= b < hi]
        assert inside and len(inside) < len(blocks)
        assert blocks[0] in inside  # the buffer is used first
        alloc.check()
        for addr in blocks:
            alloc.free(addr)
        alloc.check()


def test_mmap_buffer() -> None:
    with mmap.mmap(-1, 1 << 20) as mm, Allocator(buffer=mm) as alloc:
        lo, hi = buffer_range(mm)
        addr = alloc.malloc(100)
        assert lo <= addr < hi
        alloc.view(addr, 5)[:] = b"hello"
        assert mm[addr - lo : addr - lo + 5] == b"hello"


def test_shared_memory_buffer_is_read_by_a_second_process() -> None:
    shm = shared_memory.SharedMemory(create=True, size=1 << 20)
    try:
        assert shm.buf is not None
        lo, _ = buffer_range(shm.buf)
        with Allocator(buffer=shm.buf) as alloc:
            addr = alloc.strdup(b"written by the parent")
            offset = addr - lo
            # Read the segment as a file: attaching with SharedMemory would make
            # the child's resource tracker unlink it when the child exits.
            code = (
                f"import sys; f = open('/dev/shm/{shm.name.lstrip('/')}', 'rb');"
                f"f.seek({offset}); sys.stdout.write(f.read(21).decode())"
            )
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            assert out.stdout == "written by the parent"
        # closing the allocator did not close or free the shared memory
        assert bytes(shm.buf[offset : offset + 7]) == b"written"
    finally:
        shm.close()
        shm.unlink()


def test_closing_never_frees_a_buffer_it_did_not_create() -> None:
    buf = bytearray(b"\x07" * (1 << 16))
    alloc = Allocator(buffer=buf)
    addr = alloc.malloc(10)
    alloc.view(addr, 3)[:] = b"abc"
    alloc.close()
    buf.extend(b"more")  # resizable again: we hold no view any more
    assert len(buf) == (1 << 16) + 4
    assert b"abc" in buf


@pytest.mark.parametrize(
    ("buffer", "error", "needle"),
    [
        (b"x" * 8192, TypeError, "writable"),
        (bytearray(100), ValueError, "too small"),
        (bytearray(0), ValueError, "too small: 0 bytes"),  # was ctypes' own wording
        (memoryview(bytearray(16384))[::2], TypeError, "contiguous"),
        (42, TypeError, "buffer protocol"),
    ],
)
def test_bad_buffers(buffer: object, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        Allocator(buffer=buffer)


def test_on_oom_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_oom"):
        Allocator(on_oom=5)  # type: ignore[arg-type]


def test_on_oom_hears_of_impossible_sizes_too() -> None:
    told: list[int] = []
    with Allocator(on_oom=told.append) as alloc:
        with pytest.raises(OutOfMemory):
            alloc.malloc(1 << 64)
        with pytest.raises(OutOfMemory):
            alloc.calloc(1 << 40, 1 << 40)
        assert told == [1 << 64, 1 << 80]
