"""Count the files a command opens and reads under a folder, from the outside (Linux inotify).

    with FileAccessWatch(data_folder) as watch:
        subprocess.run(...)
    watch.opened, watch.read_events      # regular files opened / read under the folder

The kernel reports every open and read of a watched folder's files, by any
process, so this measures what a pipeline call really touched without
trusting its own accounting. Folders being listed (opendir) are not counted.
Linux only: ``FileAccessWatch.available()`` says whether it can run here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

IN_ACCESS = 0x00000001
IN_OPEN = 0x00000020
IN_ISDIR = 0x40000000
IN_Q_OVERFLOW = 0x00004000
_EVENT = struct.Struct("iIII")


class FileAccessWatch:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.opened = 0
        self.read_events = 0
        self.overflowed = False
        self.files_touched: set = set()
        self._fd = -1
        self._watches: dict = {}

    @staticmethod
    def available() -> bool:
        return (
            os.name == "posix"
            and os.uname().sysname == "Linux"
            and ctypes.util.find_library("c") is not None
        )

    def __enter__(self):
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for folder in [
            self.folder,
            *(p for p in self.folder.rglob("*") if p.is_dir() and not p.is_symlink()),
        ]:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), IN_ACCESS | IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {folder}")
            self._watches[wd] = folder
        return self

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            offset = 0
            while offset < len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                if mask & IN_ISDIR or not name:
                    continue
                self.files_touched.add(os.fsdecode(name))
                if mask & IN_OPEN:
                    self.opened += 1
                if mask & IN_ACCESS:
                    self.read_events += 1

    def __exit__(self, *exc):
        self._drain()
        os.close(self._fd)
        return False
