"""libc's system calls through ctypes, where Python has no batch form of them.

`recvmmsg` (many datagrams per call) and `writev` over a ready-made iovec array (no Python
buffer per record); ctypes releases the GIL for the call. Linux only: elsewhere
`libc_function` returns None and callers use Python's one-at-a-time equivalents.

>>> writev = libc_function("writev", [ctypes.c_int, ctypes.c_void_p, ctypes.c_int], ctypes.c_ssize_t)  # doctest: +SKIP
>>> if writev(fd, ctypes.addressof(iovecs), count) < 0: raise last_error()                          # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys


class IoVec(ctypes.Structure):
    """One buffer of a scatter/gather call (C's `struct iovec`)."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def libc_function(name: str, argtypes: list, restype):
    """libc's function `name`, typed, setting ctypes' errno; None where it is missing or not Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = restype
    return function


def last_error() -> OSError:
    """The error of the last failed libc call, as Python raises it (`BlockingIOError` for
    EAGAIN, `InterruptedError` for EINTR, ...: OSError picks the subclass from the errno)."""
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code))
