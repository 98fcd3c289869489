"""The simulated board's flash filesystem as a MicroPython VFS mounted at
``/flash`` (runs inside MicroPython).

The WebAssembly port's ``VfsPosix`` raises OSError with Emscripten's errno
numbers (ENOENT is 44 there) while the ``errno`` module and every real board
use the usual ones (ENOENT 2), which tools such as mpremote rely on. This
VFS passes every call to a ``VfsPosix`` rooted at ``/_flash`` and gives
errors the board's numbers.
"""

import io
import sys

import vfs

# Emscripten errno -> MicroPython's (Linux numbering)
_ERRNO = {63: 1, 44: 2, 29: 5, 8: 9, 6: 11, 48: 12, 2: 13, 20: 17, 54: 20, 31: 21,
          28: 22, 51: 28, 37: 36, 55: 39, 69: 30}


def _fixed(e):
    n = e.args[0] if e.args and isinstance(e.args[0], int) else None
    return OSError(_ERRNO.get(n, n)) if n is not None else e


class _File(io.IOBase):
    def __init__(self, f):
        self.f = f

    def _call(self, name, *args):
        try:
            return getattr(self.f, name)(*args)
        except OSError as e:
            raise _fixed(e) from None

    def read(self, *a):
        return self._call("read", *a)

    def readinto(self, *a):
        return self._call("readinto", *a)

    def readline(self, *a):
        return self._call("readline", *a)

    def readlines(self):
        return self._call("readlines")

    def write(self, b):
        return self._call("write", b)

    def seek(self, *a):
        return self._call("seek", *a)

    def tell(self):
        return self._call("tell")

    def flush(self):
        return self._call("flush")

    def close(self):
        return self._call("close")

    def ioctl(self, req, arg):
        if req == 4:
            self.f.close()
        return 0

    def __iter__(self):
        return iter(self.f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


class FlashFS:
    def __init__(self, root):
        self.v = vfs.VfsPosix(root)

    def _call(self, name, *args):
        try:
            return getattr(self.v, name)(*args)
        except OSError as e:
            raise _fixed(e) from None

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        return _File(self._call("open", path, mode))

    def ilistdir(self, path):
        return self._call("ilistdir", path)

    def stat(self, path):
        return self._call("stat", path)

    def statvfs(self, path):
        return self._call("statvfs", path)

    def chdir(self, path):
        return self._call("chdir", path)

    def getcwd(self):
        return self._call("getcwd")

    def mkdir(self, path):
        return self._call("mkdir", path)

    def remove(self, path):
        return self._call("remove", path)

    def rename(self, old, new):
        return self._call("rename", old, new)

    def rmdir(self, path):
        return self._call("rmdir", path)


def mount():
    import os
    vfs.mount(FlashFS("/_flash"), "/flash")
    os.chdir("/flash")
    sys.path[:] = ["", "/flash", "/flash/lib", "/rom"]
