"""Crash-safe saving: every file and folder the project saves is written beside its destination first and renamed
into place, so that a save that fails (an exception, a full disk) or is killed (SIGKILL, a lost node) leaves the
previous version complete and loadable.

- `atomic_file(path)` gives a temporary sibling path to write; when the block succeeds it is flushed to disk and
  renamed onto `path` (one atomic step), when it fails it is deleted. `atomic_write_text` writes a string that way.
- `atomic_folder(path)` gives a temporary sibling folder to save into. When the block succeeds, the entries of the
  existing folder that the save did not write (a tokenizer saved there earlier, Trainer's optimizer state, the
  user's own files) are carried over as hard links (copies where the file system has none), and the new folder
  takes the old one's place: on Linux in one `renameat2(RENAME_EXCHANGE)` call, so that at every instant the path
  holds either the old or the new complete folder; elsewhere in two renames, the old folder kept beside the path
  until the new one is in place. When the block fails, the temporary folder is deleted and the old one is untouched.
- A save killed half-way leaves its temporary sibling (`.<name>.c2c-tmp-...`): the next save to the same path removes
  the leftovers of processes of this machine that no longer run, and moves back an old folder that a killed save had
  moved aside without putting the new one in its place.

Concurrent writers into a folder being replaced are not supported (an entry created in the old folder during the
save is carried over when the new folder is put in place, but not one created at the very instant of the swap).
This module uses the standard library only: it is copied into checkpoints with the model code (remote code).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

TEMPORARY_TAG = ".c2c-tmp-"  # `.<name>.c2c-tmp-<random>-<pid>-<host><suffix>`: a save in progress (or killed)
ASIDE_TAG = ".c2c-old-"  # `.<name>.c2c-old-<random>-<pid>-<host>`: an old folder moved aside (no atomic exchange)
HOST = re.sub(r"[^\w.-]", "_", socket.gethostname()) or "host"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _sibling(target: Path, tag: str) -> Path:
    """A fresh hidden sibling name of `target` that names this process and machine (and keeps the file type suffix,
    which some writers read, e.g. `savefig`)."""
    return target.with_name(f".{target.name}{tag}{secrets.token_hex(4)}-{os.getpid()}-{HOST}{target.suffix}")


def _process_runs(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (True when that cannot be known: never delete a live save)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def _leftover_tag(name: str, target: Path) -> str | None:
    """`TEMPORARY_TAG` or `ASIDE_TAG` when `name` is a sibling that a killed save to `target` on this machine left
    behind, else None."""
    for tag in (TEMPORARY_TAG, ASIDE_TAG):
        prefix = f".{target.name}{tag}"
        if not (name.startswith(prefix) and name.endswith(target.suffix)):
            continue
        parts = name[len(prefix) : len(name) - len(target.suffix)].split("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2] == HOST and not _process_runs(int(parts[1])):
            return tag
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


def remove_leftovers(path: str | os.PathLike) -> None:
    """Delete the temporary siblings that killed saves to `path` left behind (processes of this machine that no longer
    run); an old folder that such a save moved aside is moved back when nothing took its place."""
    target = Path(os.path.realpath(path))
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return
    for name in names:
        tag = _leftover_tag(name, target)
        if tag == ASIDE_TAG and not os.path.lexists(target):
            os.rename(target.parent / name, target)
        elif tag is not None:
            _remove(target.parent / name)


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to disk (POSIX), so that a rename after it never exposes unwritten data."""
    if os.name != "posix":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of `path` for the block to write; renamed onto `path` when the block succeeds, deleted when
    it fails (the previous `path` stays as it was). The parent folder is created if missing."""
    target = Path(os.path.realpath(path))  # a symlink stays a link: its target file is replaced
    if target.is_dir():
        raise IsADirectoryError(f"Cannot save the file {os.fspath(path)!r}: it is a folder. Give a file path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    temporary = _sibling(target, TEMPORARY_TAG)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, target)
    except BaseException:
        _remove(temporary)
        raise
    _fsync(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8, newlines as given) to `path` atomically (`atomic_file`)."""
    with atomic_file(path) as temporary:
        temporary.write_bytes(text.encode("utf-8"))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's `renameat2` (Linux, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (`renameat2(RENAME_EXCHANGE)`); False where the system or the file
    system cannot (nothing changed then)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), os.fspath(second))


def _link_or_copy(source: str, destination: str) -> None:
    """A hard link to `source` (no data copied; the old folder's removal then leaves the file in the new one), or a
    copy on file systems without hard links."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def carry_over(source: Path, destination: Path, owned: re.Pattern[str] | None = None) -> None:
    """Add to `destination` each entry of `source` that it lacks (hard links; symlinks stay symlinks), except names
    that `owned` matches (files the save writes, kept only as the new save wrote them)."""
    present = set(os.listdir(destination))
    for name in sorted(os.listdir(source)):
        if name in present or (owned is not None and owned.fullmatch(name)):
            continue
        entry, copy = source / name, destination / name
        if entry.is_symlink():
            os.symlink(os.readlink(entry), copy)
        elif entry.is_dir():
            shutil.copytree(entry, copy, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(os.fspath(entry), os.fspath(copy))


def _fsync_tree(folder: Path) -> None:
    """Flush every file a save wrote into `folder`, and the folders' entries."""
    for root, _, files in os.walk(folder):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                _fsync(Path(root, name))
        _fsync(Path(root))


def _put_in_place(staged: Path, target: Path, owned: re.Pattern[str] | None) -> None:
    """Make the complete folder `staged` the folder at `target`, the old one (if any) replaced and removed."""
    if not os.path.lexists(target):
        try:
            os.rename(staged, target)
            return
        except OSError as error:  # another process created the folder meanwhile (Trainer's other ranks write there)
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        carry_over(target, staged, owned)
    if exchange_paths(staged, target):
        old = staged
    else:  # two renames: `target` is missing for an instant; the old folder waits beside it (`remove_leftovers`)
        old = _sibling(target, ASIDE_TAG)
        os.rename(target, old)
        try:
            os.rename(staged, target)
        except BaseException:
            os.rename(old, target)
            raise
    try:
        carry_over(old, target, owned)  # entries another process created in the old folder during the save
    finally:
        _remove(old)


@contextmanager
def atomic_folder(
    path: str | os.PathLike,
    owned: re.Pattern[str] | None = None,
    before_swap: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """A temporary sibling folder of `path` for the block to save into; when the block succeeds it replaces the
    folder at `path` in one atomic step, keeping the old folder's entries the save did not write; when the block
    fails it is deleted and `path` stays as it was.

    Args:
        path: the folder to save (created if missing; a symlink to a folder stays a link: its target is replaced).
        owned: names of entries the save writes (matched in full); such entries of the old folder are dropped even
            when this save did not write them (e.g. weight shards of an earlier, differently sharded save).
        before_swap: called with the temporary folder once the old folder's entries are carried over into it, just
            before it takes the old one's place (e.g. a model card that reads files kept from the old folder).
    """
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"Cannot save into {os.fspath(path)!r}: it is a file. Give a folder path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    staged = _sibling(target, TEMPORARY_TAG)
    staged.mkdir()
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        cwd = None
    try:
        yield staged
        _fsync_tree(staged)
        if target.is_dir():
            carry_over(target, staged, owned)
        if before_swap is not None:
            before_swap(staged)
        if target.is_dir():
            os.chmod(staged, stat.S_IMODE(target.stat().st_mode))  # the old folder's permissions
        _fsync(staged)
        _put_in_place(staged, target, owned)
    except BaseException:
        _remove(staged)
        raise
    _fsync(target.parent)
    if cwd is not None and (cwd == os.fspath(target) or cwd.startswith(os.fspath(target) + os.sep)):
        os.chdir(cwd if os.path.isdir(cwd) else target)  # this process worked inside the replaced folder


__all__ = ["atomic_file", "atomic_folder", "atomic_write_text", "carry_over", "exchange_paths", "remove_leftovers"]
