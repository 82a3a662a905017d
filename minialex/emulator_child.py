"""One emulated launch in a child process, so that a kernel of your own cannot take Python down.

A kernel file that is not one of the library's can crash (a pointer computed by hand, a fiber's
stack overflowing) or loop forever; in the interpreter's own process that kills it (a Jupyter
kernel dies without a word) or hangs it. minialex.emulator.run therefore runs such a launch here
(isolate=None: on for your files, off for the library's, whose launches keep the fast path):

  1. shared_copies: the arrays' memory is copied into one shared anonymous mapping (mmap,
     MAP_SHARED, so what the child writes is seen by the parent), arrays that overlap (the same
     array passed twice, views of one buffer) as one piece, so they alias as they did;
  2. run: os.fork(). The child sends printf to a temporary file as it goes (what came before a
     crash is kept), runs the launch on the copies, writes the launch's status to a pipe and
     leaves with os._exit: it runs none of the parent's Python code and takes none of its locks
     (the emulator's lock is held across the fork, so no other thread is inside a launch then);
  3. the parent waits for the status up to the time limit (timeout= seconds, else
     $MINIALEX_EMU_TIMEOUT, else 60), checking every 50 ms whether the child died;
  4. with a status, copy_back copies the copies into the arrays (a read-only array is left alone)
     and printf's text goes to sys.stdout (the mapping, up to 128 MiB, is kept for the next launch:
     one used before costs no page faults). A child ended by a signal is KernelCrashError (which
     signal, and what it usually means); one still running at the limit is killed, and
     LaunchTimeout names the kernel and the limit. Then the arrays keep their values from before.

Why not a SIGSEGV handler that longjmps out of the fault in this process: the fault may have
written anywhere first (the interpreter's memory included), and an endless loop is no signal. The
copies cost about 1 ms per 4 MB and the fork a millisecond or two (more for a large process);
launch(..., isolate=False) runs a kernel of your own in this process. Without os.fork (Windows),
launches run in this process. Imports nothing of minialex but kernel_source (for the errors).
"""
import ctypes
import faulthandler
import mmap
import os
import select
import signal
import struct
import sys
import tempfile
import time
import warnings

import numpy as np

from .kernel_source import KernelCrashError, LaunchTimeout

try:
    import resource
except ImportError:  # not POSIX
    resource = None

DEFAULT_TIMEOUT = 60.0
_spare = []               # one shared mapping kept from a launch for the next (see copy_back)
_KEEP_BYTES = 128 << 20
_SIGNALS = {"SIGSEGV": "a segmentation fault: a read or write of memory the launch does not own (an index far "
                       "outside an array, a pointer made by hand, or a thread's stack overflowed: endless "
                       "recursion, a large local array; a thread of a kernel with barriers has 256 KiB)",
            "SIGBUS": "a bus error: an access to memory that is not there or misaligned, or (macOS) to a page "
                      "it may not touch, such as the guard below a thread's stack (endless recursion, a large "
                      "local array)",
            "SIGFPE": "an arithmetic error: an integer division or remainder by zero",
            "SIGILL": "an illegal instruction",
            "SIGABRT": "an abort (out of memory, a failed assert)",
            "SIGKILL": "killed from outside (by the system, for lack of memory?)"}


def available():
    return hasattr(os, "fork")


def time_limit(name, timeout, isolate):
    """A launch's time limit in seconds: timeout, else $MINIALEX_EMU_TIMEOUT, else 60 (a child's)."""
    if timeout is not None and not isolate:
        raise ValueError(f"{name}: timeout needs isolate=True (a launch in this process cannot be stopped)")
    what = f"{name}: timeout"
    if timeout is None:
        what, env = "MINIALEX_EMU_TIMEOUT", os.environ.get("MINIALEX_EMU_TIMEOUT", "")
        try:
            timeout = float(env) if env else DEFAULT_TIMEOUT
        except ValueError:
            timeout = env
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"{what} expected seconds (a number > 0), got {timeout!r}")
    return float(timeout)


def shared_copies(args):
    """A shared mapping holding a copy of the arrays among `args`: (the mapping as a uint8 array,
    {argument index: address of its copy}, [(address, address of the copy, bytes, writeable)] per
    piece of memory)."""
    arrays = {i: a for i, a in enumerate(args) if isinstance(a, np.ndarray)}
    pieces = []
    for lo, hi, writeable in sorted((a.ctypes.data, a.ctypes.data + a.nbytes, a.flags.writeable)
                                    for a in arrays.values()):
        if pieces and lo < pieces[-1][1]:          # overlaps the piece before: one piece
            pieces[-1] = (pieces[-1][0], max(pieces[-1][1], hi), pieces[-1][2] or writeable)
        else:
            pieces.append((lo, hi, writeable))
    offsets, total = [], 0
    for lo, hi, _ in pieces:
        offsets.append(total)
        total += (hi - lo + 63) // 64 * 64
    view = _spare.pop() if _spare else None
    if view is None or view.size < total:
        view = np.frombuffer(mmap.mmap(-1, max(total, 1)), np.uint8)   # anonymous, MAP_SHARED
    copies = [(lo, view.ctypes.data + off, hi - lo, writeable) for (lo, hi, writeable), off in zip(pieces, offsets)]
    for lo, copy, nbytes, _ in copies:
        ctypes.memmove(copy, lo, nbytes)
    addresses = {}
    for i, a in arrays.items():
        lo, copy, _, _ = next(c for c in reversed(copies) if c[0] <= a.ctypes.data)
        addresses[i] = copy + a.ctypes.data - lo
    return view, addresses, copies


def copy_back(view, copies):
    """The copies into the arrays (those that may be written), and the mapping kept for the next
    launch when it is not too large (a mapping used before costs no page faults)."""
    for lo, copy, nbytes, writeable in copies:
        if writeable:
            ctypes.memmove(lo, copy, nbytes)
    release(view)


def release(view):
    if view.size <= _KEEP_BYTES and not _spare:
        _spare.append(view)


def run(library, launch, lock, where, limit, debug):
    """launch() (the launcher's call, on shared copies) in a child process: (status, message,
    printf dropped), or KernelCrashError / LaunchTimeout naming `where` (the kernel and its file)."""
    read_end, write_end = os.pipe()
    try:
        with tempfile.TemporaryFile() as out:
            with lock, warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)   # "multi-threaded, use of fork()": see above
                pid = os.fork()
            if pid == 0:
                _child(library, launch, read_end, write_end, out.fileno())
            os.close(write_end)
            write_end = None
            try:
                result, code = _wait(pid, read_end, limit)
            finally:
                out.seek(0)
                text = out.read().decode("utf-8", "replace")
                if text and sys.stdout is not None:
                    sys.stdout.write(text)
    finally:
        for fd in (read_end, write_end):
            if fd is not None:
                os.close(fd)
    if result is None:
        raise _failure(where, code, limit, debug)
    status, dropped = struct.unpack("ii", result[:8])
    return status, result[8:].decode("utf-8", "replace"), bool(dropped)


def _child(library, launch, read_end, write_end, out):
    """The child's whole life: printf to `out`, the launch, its status to the pipe, os._exit."""
    try:
        os.close(read_end)
        try:
            faulthandler.disable()                    # a crash is the parent's to report, not a traceback
            for number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT):
                signal.signal(number, signal.SIG_DFL)
            if resource is not None:
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # no core file for a crash
        except (OSError, ValueError):
            pass
        os.dup2(out, 1)
        library.emu_print_to(1)
        status = launch()
        message = library.emu_message() or b""
        os.write(write_end, struct.pack("ii", status, library.emu_output_dropped()) + message[:3000])
    finally:
        os._exit(0)


def _wait(pid, read_end, limit):
    """(the child's status bytes or None, its exit code: -N for signal N, None when it was still
    running at the limit). Polls every 50 ms, so a crash is seen even when another process forked
    meanwhile holds the pipe open; the child is killed and reaped whatever happens (Ctrl-C too)."""
    deadline, result, reaped = time.monotonic() + limit, b"", False
    try:
        while True:
            left = deadline - time.monotonic()
            if select.select([read_end], [], [], max(0.0, min(0.05, left)))[0]:
                chunk = os.read(read_end, 4096)
                result += chunk
                if len(result) >= 8 or not chunk:     # the status, or the child closed the pipe: it ends
                    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                    reaped = True
                    return (result if len(result) >= 8 else None), code
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                reaped = True
                return None, os.waitstatus_to_exitcode(status)
            if left <= 0:
                return None, None
    finally:
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _failure(where, code, limit, debug):
    """The error for a child that left no status: killed at the time limit, or by a signal."""
    unchanged = "the arrays keep their values from before the launch"
    if code is None:
        return LaunchTimeout(f"cuda-emu: {where}: still running after {limit:g} s, the time limit (timeout=, or "
                             f"MINIALEX_EMU_TIMEOUT; {DEFAULT_TIMEOUT:g} s by default), so its process was killed "
                             f"and {unchanged}. An endless loop? (a loop whose condition never changes, a thread "
                             f"spinning on another's write)")
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        hint = (" The bounds-checked build saw no access outside an array before it: look for a pointer made by "
                "hand (a cast, &y[i]), an index into a local or __shared__ array, or recursion." if debug else
                " Run it with debug=True to check every array access.")
        return KernelCrashError(f"cuda-emu: {where}: crashed with signal {-code} ({name}), "
                                f"{_SIGNALS.get(name, 'a fatal signal')}. Python goes on and {unchanged}.{hint}")
    return KernelCrashError(f"cuda-emu: {where}: the process running the launch ended with exit status {code} "
                            f"before the launch returned (did the kernel call exit()?); {unchanged}")
