"""Unpacks the dependencies that travel compressed into /tmp, once per sandbox.

Standard library only: this runs before any dependency is importable.
Layout and deps.json format: README.md, "Runtime layout".
"""

import ctypes
import json
import os
import posixpath
import secrets
import shutil
import stat
import threading
import time
import zipfile
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Dict, List, Optional, Set, Tuple

DEPS_DIR = "serverless-torch"
DEPS_FILE = "deps.json"
COMPLETE = ".complete"
PARTS_PREFIX = ".parts"
BLOCK = 1 << 20

# One write of archive bytes: (size, archive path, member, target relative to the
# unpack directory, offset for a part of a chunked file or None for a whole file, mode).
Write = Tuple[int, str, str, str, Optional[int], int]

# Filled by unpack() so the shim can log how the cold start was spent.
last_unpack: Dict[str, Any] = {
    "seconds": 0.0,
    "bytes": 0,
    "files": 0,
    "workers": 0,
    "skipped": False,
    "dir": None,
}

# Two threads of one process must not both unpack: the stale-directory sweep treats
# our own pid as dead, since a runtime restarted in the same sandbox may get the pid
# of the one that was killed mid-unpack.
_lock = threading.Lock()


class UnpackError(Exception):
    """The compressed dependencies cannot be unpacked; `code` names the failure."""

    code = "TORCH_UNPACK_FAILED"


class UnsafeArchiveError(UnpackError, ValueError):
    """An archive member would land outside the unpack directory."""

    code = "TORCH_UNSAFE_ARCHIVE"


class MissingArchiveError(UnpackError):
    code = "TORCH_ARCHIVE_MISSING"


class TmpTooSmallError(UnpackError):
    code = "TORCH_TMP_TOO_SMALL"


def usable_cpus() -> int:
    """CPUs this process may run on; os.cpu_count() over-reports on small Lambdas."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def read_deps(opt_dir: str) -> Optional[Dict[str, Any]]:
    """The parsed deps.json, or None when every dependency ships uncompressed."""
    path = os.path.join(opt_dir, DEPS_DIR, DEPS_FILE)
    try:
        with open(path, "rb") as f:
            deps = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(deps, dict) or deps.get("format") != 1:
        raise UnpackError(
            "%s: unsupported format %r (this shim reads format 1); "
            "repackage with the same serverless-torch version as the shim"
            % (path, deps.get("format") if isinstance(deps, dict) else deps)
        )
    key = deps.get("key")
    # The key becomes a directory name: it must not be able to point anywhere else.
    if not isinstance(key, str) or not key or not all(c.isalnum() or c in "-_" for c in key):
        raise UnpackError("%s: invalid key %r" % (path, key))
    return deps


def safe_relpath(name: str, what: str = "archive member") -> str:
    """`name` normalised, or UnsafeArchiveError when it could leave its root."""
    stripped = name.rstrip("/")
    parts = stripped.split("/")
    if (
        not stripped
        or stripped.startswith("/")
        or "\x00" in stripped
        or ".." in parts
        or posixpath.normpath(stripped) in (".", "")
    ):
        raise UnsafeArchiveError(
            "refusing %s %r: absolute, empty or containing '..'" % (what, name)
        )
    return posixpath.normpath(stripped)


def _archive_path(opt_dir: str, name: str) -> str:
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise UnpackError("invalid archive name %r in deps.json" % (name,))
    path = os.path.join(opt_dir, DEPS_DIR, name)
    if not os.path.isfile(path):
        raise MissingArchiveError(
            "dependency archive %s is missing: the layer that holds it is not attached "
            "to this function, or the layers were built by a different package run" % path
        )
    return path


class _Plan(object):
    """Everything to create, computed and validated before the first byte is written."""

    def __init__(self) -> None:
        self.dirs: Set[str] = set()
        self.writes: List[Write] = []
        self.chunked: Dict[str, Tuple[int, int]] = {}
        self.symlinks: List[Tuple[str, str]] = []
        self.total = 0


def _plan(opt_dir: str, deps: Dict[str, Any]) -> _Plan:
    plan = _Plan()
    targets: Set[str] = set()

    def claim(rel: str) -> None:
        if rel in targets:
            raise UnsafeArchiveError("refusing archive member %r: it appears twice" % rel)
        targets.add(rel)
        parent = posixpath.dirname(rel)
        if parent:
            plan.dirs.add(parent)

    archives = list(deps.get("archives") or [])
    chunked = deps.get("chunked") or {}
    for entry in chunked.values():
        for part in entry.get("parts") or []:
            if part.get("archive") not in archives:
                archives.append(part.get("archive"))
    paths = {name: _archive_path(opt_dir, name) for name in archives}

    part_infos: Dict[Tuple[str, str], zipfile.ZipInfo] = {}
    for name in archives:
        with zipfile.ZipFile(paths[name]) as zf:
            for info in zf.infolist():
                rel = safe_relpath(info.filename)
                if rel.split("/")[0] == PARTS_PREFIX:
                    part_infos[(name, info.filename)] = info
                    continue
                unix_mode = info.external_attr >> 16
                if info.is_dir() or stat.S_ISDIR(unix_mode):
                    plan.dirs.add(rel)
                elif stat.S_ISLNK(unix_mode):
                    target = zf.read(info).decode("utf-8")
                    where = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
                    if target.startswith("/") or where == ".." or where.startswith("../"):
                        raise UnsafeArchiveError(
                            "refusing symlink member %r -> %r: it points outside the "
                            "unpack directory" % (info.filename, target)
                        )
                    claim(rel)
                    plan.symlinks.append((rel, target))
                else:
                    claim(rel)
                    plan.writes.append(
                        (info.file_size, paths[name], info.filename, rel, None, unix_mode & 0o777 or 0o644)
                    )
                    plan.total += info.file_size

    for name, entry in sorted(chunked.items()):
        rel = safe_relpath(name, "chunked file")
        claim(rel)
        size = int(entry["size"])
        mode = int(entry.get("mode") or 0o644) & 0o777 or 0o644
        plan.chunked[rel] = (size, mode)
        covered = 0
        for part in sorted(entry.get("parts") or [], key=lambda p: int(p["offset"])):
            info = part_infos.get((part["archive"], part["member"]))
            if info is None:
                raise UnpackError(
                    "part %r of %s is missing from archive %s" % (part["member"], rel, part["archive"])
                )
            offset = int(part["offset"])
            # Parts must tile the file exactly, or the reassembled library is corrupt.
            if offset != covered:
                raise UnpackError(
                    "parts of %s do not cover it contiguously: expected offset %d, got %d"
                    % (rel, covered, offset)
                )
            covered += info.file_size
            plan.writes.append((info.file_size, paths[part["archive"]], info.filename, rel, offset, mode))
        if covered != size:
            raise UnpackError("parts of %s add up to %d bytes, deps.json says %d" % (rel, covered, size))
        plan.total += size

    # Largest first, so the big library parts are not left for the end on one thread.
    plan.writes.sort(key=lambda w: -w[0])
    return plan


def _write_all(fd: int, data: bytes, offset: Optional[int]) -> None:
    view = memoryview(data)
    while view:
        if offset is None:
            n = os.write(fd, view)
        else:
            n = os.pwrite(fd, view, offset)
            offset += n
        view = view[n:]


def _extract(plan: _Plan, root: str) -> int:
    for rel in sorted(plan.dirs):
        os.makedirs(os.path.join(root, rel), exist_ok=True)
    for rel, (size, mode) in plan.chunked.items():
        fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    # ZipFile objects are not safe to share between threads: each worker opens its own.
    local = threading.local()
    handles: List[zipfile.ZipFile] = []
    handles_lock = threading.Lock()

    def archive(path: str) -> zipfile.ZipFile:
        mine = getattr(local, "zips", None)
        if mine is None:
            mine = local.zips = {}
        zf = mine.get(path)
        if zf is None:
            zf = mine[path] = zipfile.ZipFile(path)
            with handles_lock:
                handles.append(zf)
        return zf

    def write(item: Write) -> None:
        _size, path, member, rel, offset, mode = item
        target = os.path.join(root, rel)
        if offset is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        else:
            flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        with archive(path).open(member) as src:
            fd = os.open(target, flags, 0o600)
            try:
                # Streamed: a part can be hundreds of MiB and /tmp-sized Lambdas are small.
                while True:
                    block = src.read(BLOCK)
                    if not block:
                        break
                    _write_all(fd, block, offset)
                    if offset is not None:
                        offset += len(block)
                if offset is None:
                    os.fchmod(fd, mode)
            finally:
                os.close(fd)

    workers = min(usable_cpus(), max(1, len(plan.writes)))
    last_unpack["workers"] = workers
    try:
        # zlib releases the GIL while inflating, so threads use every vCPU.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(write, item) for item in plan.writes]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            for future in done:
                future.result()
    finally:
        for zf in handles:
            zf.close()

    # Symlinks come last so that no file write can be redirected through one.
    for rel, target in plan.symlinks:
        os.symlink(target, os.path.join(root, rel))
    # Checked once all exist: a link can escape only through a link created after it.
    real_root = os.path.realpath(root)
    for rel, target in plan.symlinks:
        resolved = os.path.realpath(os.path.join(root, rel))
        if resolved != real_root and not resolved.startswith(real_root + os.sep):
            raise UnsafeArchiveError(
                "refusing symlink member %r -> %r: through other links it resolves outside "
                "the unpack directory" % (rel, target)
            )
    return plan.total


def link_library_siblings(unpacked_dir: str, opt_dir: str, deps: Dict[str, Any]) -> None:
    """Make each moved library's $ORIGIN run path find the siblings left in /opt."""
    opt_root = os.path.join(
        os.path.abspath(opt_dir), safe_relpath(deps.get("optRoot") or "python", "optRoot")
    )
    dirs = {posixpath.dirname(safe_relpath(lib, "library")) for lib in deps.get("libraries") or []}
    for rel in sorted(dirs):
        source = os.path.join(opt_root, rel) if rel else opt_root
        try:
            names = os.listdir(source)
        except FileNotFoundError:
            continue
        target = os.path.join(unpacked_dir, rel) if rel else unpacked_dir
        os.makedirs(target, exist_ok=True)
        for name in sorted(names):
            link = os.path.join(target, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join(source, name), link)


def load_libraries(unpacked_dir: str, manifest: Dict[str, Any]) -> List[ctypes.CDLL]:
    """Load the moved libraries globally, so the package's own extension modules,
    which ask for them by soname, find them already loaded."""
    return [
        ctypes.CDLL(os.path.join(unpacked_dir, safe_relpath(lib, "library")), mode=ctypes.RTLD_GLOBAL)
        for lib in manifest.get("libraries") or []
    ]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale(base: str, key: str) -> None:
    """Best effort: partial directories of killed runs would otherwise fill /tmp."""
    prefix = "." + key + "."
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        try:
            pid = int(name[len(prefix):].split(".")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _partial_name(base: str, key: str) -> str:
    return os.path.join(base, ".%s.%d.%s" % (key, os.getpid(), secrets.token_hex(6)))


def _publish(partial: str, final: str, base: str, key: str) -> None:
    for _attempt in range(2):
        try:
            os.rename(partial, final)
            return
        except OSError:
            if os.path.isfile(os.path.join(final, COMPLETE)):
                # Another process finished first: its copy is as good as ours.
                shutil.rmtree(partial, ignore_errors=True)
                return
            if not os.path.isdir(final):
                raise
            # An incomplete directory in place was not made by this code; move it aside.
            aside = _partial_name(base, key)
            try:
                os.rename(final, aside)
            except OSError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
    os.rename(partial, final)


def unpack(opt_dir: str, tmp_dir: str, deps: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The directory holding a complete copy of the compressed dependencies, or None
    when the layers carry no deps.json."""
    started = time.perf_counter()
    if deps is None:
        deps = read_deps(opt_dir)
    if deps is None:
        last_unpack.update(seconds=0.0, bytes=0, files=0, workers=0, skipped=True, dir=None)
        return None
    key = deps["key"]
    base = os.path.join(tmp_dir, DEPS_DIR)
    final = os.path.join(base, key)
    with _lock:
        if os.path.isfile(os.path.join(final, COMPLETE)):
            last_unpack.update(
                seconds=time.perf_counter() - started, bytes=0, files=0, workers=0, skipped=True, dir=final
            )
            return final
        os.makedirs(base, exist_ok=True)
        _remove_stale(base, key)
        plan = _plan(opt_dir, deps)
        needed = int(deps.get("unpackedBytes") or plan.total)
        usage = shutil.disk_usage(base)
        if usage.free < needed:
            raise TmpTooSmallError(
                "unpacking dependencies needs %.1f MiB in %s but only %.1f MiB is free: "
                "raise the function's ephemeralStorageSize to at least %d MB"
                % (needed / 2.0 ** 20, tmp_dir, usage.free / 2.0 ** 20,
                   (usage.total - usage.free + needed) // 2 ** 20 + 64)
            )
        partial = _partial_name(base, key)
        os.mkdir(partial, 0o755)
        try:
            written = _extract(plan, partial)
            link_library_siblings(partial, opt_dir, deps)
            with open(os.path.join(partial, COMPLETE), "w") as f:
                f.write(json.dumps({"bytes": written}))
            _publish(partial, final, base, key)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        last_unpack.update(
            seconds=time.perf_counter() - started,
            bytes=written,
            files=len(plan.chunked) + sum(1 for w in plan.writes if w[4] is None),
            skipped=False,
            dir=final,
        )
    return final
