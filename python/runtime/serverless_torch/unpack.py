"""Unpacks the dependencies that travel compressed into /tmp, once per sandbox.

Standard library only, plus the zstd decoder when deps.json says "zstd": the `zstandard`
package ships uncompressed in /opt/python for that reason (python3.14 has `compression.zstd`).
Layout and deps.json format: README.md, "Runtime layout".
"""

import bisect
import ctypes
import json
import os
import posixpath
import secrets
import shutil
import sys
import threading
import time
import zlib
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

DEPS_DIR = "serverless-torch"
DEPS_FILE = "deps.json"
FORMAT = 2
COMPLETE = ".complete"
MB_PER_VCPU = 1769
CODECS = ("zstd", "zlib")

# Filled by unpack() so the shim can log how the cold start was spent.
last_unpack: Dict[str, Any] = {
    "seconds": 0.0,
    "bytes": 0,
    "files": 0,
    "workers": 0,
    "codec": None,
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
    """A file would land outside the unpack directory."""

    code = "TORCH_UNSAFE_ARCHIVE"


class MissingArchiveError(UnpackError):
    code = "TORCH_ARCHIVE_MISSING"


class CorruptArchiveError(UnpackError):
    """A frame does not decode to what deps.json says it holds."""

    code = "TORCH_ARCHIVE_CORRUPT"


class TmpTooSmallError(UnpackError):
    code = "TORCH_TMP_TOO_SMALL"


def usable_cpus() -> int:
    """CPUs this process may run on; os.cpu_count() over-reports on small Lambdas."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def vcpus(memory_mb: Optional[str], cpus: int) -> int:
    """Lambda grants one vCPU per 1,769 MB; more threads than that only contend."""
    try:
        by_memory = max(1, int(round(int(memory_mb or "") / float(MB_PER_VCPU))))
    except ValueError:
        return cpus
    return min(by_memory, cpus)


def read_deps(opt_dir: str) -> Optional[Dict[str, Any]]:
    """The parsed deps.json, or None when every dependency ships uncompressed."""
    path = os.path.join(opt_dir, DEPS_DIR, DEPS_FILE)
    try:
        with open(path, "rb") as f:
            deps = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(deps, dict) or deps.get("format") != FORMAT:
        raise UnpackError(
            "%s: unsupported format %r (this shim reads format %d); "
            "repackage with the same serverless-torch version as the shim"
            % (path, deps.get("format") if isinstance(deps, dict) else deps, FORMAT)
        )
    key = deps.get("key")
    # The key becomes a directory name: it must not be able to point anywhere else.
    if not isinstance(key, str) or not key or not all(c.isalnum() or c in "-_" for c in key):
        raise UnpackError("%s: invalid key %r" % (path, key))
    if deps.get("codec") not in CODECS:
        raise UnpackError("%s: unknown codec %r (this shim reads %s)" % (path, deps.get("codec"), ", ".join(CODECS)))
    return deps


def safe_relpath(name: Any, what: str = "file") -> str:
    """`name` normalised, or UnsafeArchiveError when it could leave its root."""
    stripped = name.rstrip("/") if isinstance(name, str) else ""
    parts = stripped.split("/")
    if (
        not stripped
        or stripped.startswith("/")
        or "\x00" in stripped
        or ".." in parts
        or posixpath.normpath(stripped) in (".", "")
    ):
        raise UnsafeArchiveError("refusing %s %r: absolute, empty or containing '..'" % (what, name))
    return posixpath.normpath(stripped)


def _archive_path(opt_dir: str, name: Any) -> str:
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise UnpackError("invalid archive name %r in deps.json" % (name,))
    path = os.path.join(opt_dir, DEPS_DIR, name)
    if not os.path.isfile(path):
        raise MissingArchiveError(
            "dependency archive %s is missing: the layer that holds it is not attached "
            "to this function, or the layers were built by a different package run" % path
        )
    return path


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UnpackError("deps.json: %s must be a whole number of bytes, got %r" % (what, value))
    return value


# ---- decoders: one per codec, each checks that a frame holds exactly what deps.json says ----

def _stdlib_zstd() -> Any:
    """compression.zstd where the runtime has it (python3.14+), else None."""
    if sys.version_info < (3, 14):
        return None
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        return None
    return zstd


def zstd_decoder() -> Callable[[], Callable[[bytes, int], bytes]]:
    """A factory of per-thread zstd decoders (decompression contexts are not thread-safe)."""
    stdlib = _stdlib_zstd()
    if stdlib is not None:
        def stdlib_decoder() -> Callable[[bytes, int], bytes]:
            def decode(frame: bytes, size: int) -> bytes:
                declared = stdlib.get_frame_info(frame).decompressed_size
                if declared != size:
                    raise ValueError("the frame header says %r bytes" % (declared,))
                decompressor = stdlib.ZstdDecompressor()
                out = decompressor.decompress(frame, max_length=size)
                if not decompressor.eof:
                    raise ValueError("the frame is incomplete")
                return out
            return decode
        return stdlib_decoder
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError as e:
        raise UnpackError(
            "the dependencies are compressed with zstd, and this Python has neither compression.zstd "
            "nor the zstandard package the layer should carry in /opt/python (%s): the layers were "
            "built for another runtime, or a layer of yours replaces /opt/python/zstandard" % e
        )

    def zstandard_decoder() -> Callable[[bytes, int], bytes]:
        context = zstandard.ZstdDecompressor()

        def decode(frame: bytes, size: int) -> bytes:
            # Checked before decoding: the header's size is what the decoder allocates.
            declared = zstandard.frame_content_size(frame)
            if declared != size:
                raise ValueError("the frame header says %r bytes" % (declared,))
            return context.decompress(frame)
        return decode
    return zstandard_decoder


def zlib_decoder() -> Callable[[bytes, int], bytes]:
    def decode(frame: bytes, size: int) -> bytes:
        # One output buffer of the known size: a decompressobj with max_length decoded 3 times
        # slower (measured with python3.11). zlib checks the stream's adler32.
        return zlib.decompress(frame, 15, size)
    return decode


def decoder_factory(codec: str) -> Callable[[], Callable[[bytes, int], bytes]]:
    return zstd_decoder() if codec == "zstd" else lambda: zlib_decoder()


# ---- the plan: every file and frame, validated before the first byte is written ----

class _Plan(object):
    def __init__(self) -> None:
        self.archive = ""
        # (relative path, size, mode, offset of its first byte in the stream), in stream order.
        self.files: List[Tuple[str, int, int, int]] = []
        self.starts: List[int] = []
        # (offset in the archive, compressed bytes, stream offset, size).
        self.frames: List[Tuple[int, int, int, int]] = []
        self.dirs: Set[str] = set()
        self.spanning: Set[int] = set()
        self.total = 0


def _plan_files(plan: _Plan, files: Any) -> None:
    seen: Set[str] = set()
    if not isinstance(files, list):
        raise UnpackError("deps.json: files must be a list")
    for entry in files:
        if not isinstance(entry, list) or len(entry) != 3:
            raise UnpackError("deps.json: a file entry must be [path, size, mode], got %r" % (entry,))
        rel = safe_relpath(entry[0])
        if rel in seen or rel in plan.dirs:
            raise UnsafeArchiveError("refusing file %r: it appears twice, or also as a directory" % entry[0])
        seen.add(rel)
        size = _count(entry[1], "the size of %s" % rel)
        mode = _count(entry[2], "the mode of %s" % rel) & 0o777 or 0o644
        parent = posixpath.dirname(rel)
        while parent:
            if parent in seen:
                raise UnsafeArchiveError("refusing file %r: %r is a file too" % (entry[0], parent))
            plan.dirs.add(parent)
            parent = posixpath.dirname(parent)
        plan.files.append((rel, size, mode, plan.total))
        plan.starts.append(plan.total)
        plan.total += size


def _plan(opt_dir: str, deps: Dict[str, Any]) -> _Plan:
    plan = _Plan()
    plan.archive = _archive_path(opt_dir, deps.get("archive"))
    _plan_files(plan, deps.get("files"))
    archive_at = stream_at = 0
    frames = deps.get("frames")
    if not isinstance(frames, list):
        raise UnpackError("deps.json: frames must be a list")
    for entry in frames:
        if not isinstance(entry, list) or len(entry) != 2:
            raise UnpackError("deps.json: a frame entry must be [compressed bytes, size], got %r" % (entry,))
        compressed, size = _count(entry[0], "a frame's compressed size"), _count(entry[1], "a frame's size")
        if not size:
            raise UnpackError("deps.json: a frame must hold at least one byte")
        plan.frames.append((archive_at, compressed, stream_at, size))
        archive_at += compressed
        stream_at += size
    archive_bytes = os.path.getsize(plan.archive)
    if archive_at != archive_bytes:
        raise CorruptArchiveError(
            "dependency archive %s has %d bytes, deps.json lists frames of %d: the layer is damaged or "
            "comes from another package run" % (plan.archive, archive_bytes, archive_at)
        )
    if stream_at != plan.total:
        raise UnpackError("deps.json: the frames hold %d bytes, the files %d" % (stream_at, plan.total))
    # A file that more than one frame writes to is created before the workers start.
    for start, _compressed, frame_start, size in plan.frames:
        first = bisect.bisect_right(plan.starts, frame_start) - 1
        last = bisect.bisect_right(plan.starts, frame_start + size - 1) - 1
        for index in (first, last):
            rel, file_size, _mode, file_start = plan.files[index]
            if file_start < frame_start or file_start + file_size > frame_start + size:
                plan.spanning.add(index)
    # Largest first, so that a big frame is not left for the end on one thread.
    plan.frames.sort(key=lambda frame: (-frame[3], frame[0]))
    return plan


# ---- extraction ----

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        offset += n
        data = data[n:]


def _precreate(plan: _Plan, root: str) -> None:
    for rel in sorted(plan.dirs):
        os.mkdir(os.path.join(root, rel), 0o755)
    for index, (rel, size, mode, _start) in enumerate(plan.files):
        if size and index not in plan.spanning:
            continue
        fd = os.open(os.path.join(root, rel), _CREATE, 0o600)
        try:
            os.ftruncate(fd, size)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def _scatter(plan: _Plan, root: str, data: bytes, frame_start: int) -> None:
    """Writes one decoded frame into the files it covers."""
    view = memoryview(data)
    index = bisect.bisect_right(plan.starts, frame_start) - 1
    position, end = frame_start, frame_start + len(data)
    while position < end:
        rel, size, mode, start = plan.files[index]
        index += 1
        if not size:
            continue
        piece = view[position - frame_start:min(end, start + size) - frame_start]
        spanning = index - 1 in plan.spanning
        fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC if spanning else _CREATE, 0o600)
        try:
            _write_all(fd, piece, position - start)
            if not spanning:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        position += len(piece)


def _extract(plan: _Plan, root: str, codec: str, workers: int) -> int:
    _precreate(plan, root)
    make_decoder = decoder_factory(codec)
    local = threading.local()
    archive_fd = os.open(plan.archive, os.O_RDONLY | os.O_CLOEXEC)

    def unpack_frame(frame: Tuple[int, int, int, int]) -> None:
        at, compressed, stream_start, size = frame
        decode = getattr(local, "decode", None)
        if decode is None:
            decode = local.decode = make_decoder()
        data = os.pread(archive_fd, compressed, at)
        try:
            if len(data) != compressed:
                raise ValueError("the archive ends after %d of its bytes" % len(data))
            out = decode(data, size)
            if len(out) != size:
                raise ValueError("it holds %d bytes" % len(out))
        except Exception as e:
            raise CorruptArchiveError(
                "dependency archive %s: the %s frame at byte %d does not decode to the %d bytes deps.json "
                "lists (%s); the layer is damaged: package and deploy again" % (plan.archive, codec, at, size, e)
            )
        _scatter(plan, root, out, stream_start)

    try:
        # zstd and zlib release the GIL while decoding, so threads use every vCPU.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(unpack_frame, frame) for frame in plan.frames]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            for future in done:
                future.result()
    finally:
        os.close(archive_fd)
    return plan.total


def link_library_siblings(unpacked_dir: str, opt_dir: str, deps: Dict[str, Any]) -> None:
    """Make each moved library's $ORIGIN run path find the siblings left in /opt."""
    opt_root = os.path.join(os.path.abspath(opt_dir), safe_relpath(deps.get("optRoot") or "python", "optRoot"))
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


# ---- publishing: a complete directory appears by rename, or nothing does ----

def pid_alive(pid: int) -> bool:
    """Whether another process of this id runs (this process's own id counts as gone: its work is over)."""
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
        if not pid_alive(pid):
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


def _check_room(base: str, tmp_dir: str, needed: int) -> None:
    usage = shutil.disk_usage(base)
    if usage.free < needed:
        raise TmpTooSmallError(
            "unpacking dependencies needs %.1f MiB in %s but only %.1f MiB is free: "
            "raise the function's ephemeralStorageSize to at least %d MB"
            % (needed / 2.0 ** 20, tmp_dir, usage.free / 2.0 ** 20, (usage.total - usage.free + needed) // 2 ** 20 + 64)
        )


def unpack(opt_dir: str, tmp_dir: str, deps: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The directory holding a complete copy of the compressed dependencies, or None
    when the layers carry no deps.json."""
    started = time.perf_counter()
    if deps is None:
        deps = read_deps(opt_dir)
    if deps is None:
        last_unpack.update(seconds=0.0, bytes=0, files=0, workers=0, codec=None, skipped=True, dir=None)
        return None
    key = deps["key"]
    base = os.path.join(tmp_dir, DEPS_DIR)
    final = os.path.join(base, key)
    with _lock:
        if os.path.isfile(os.path.join(final, COMPLETE)):
            last_unpack.update(seconds=time.perf_counter() - started, bytes=0, files=0, workers=0,
                               codec=deps["codec"], skipped=True, dir=final)
            return final
        os.makedirs(base, exist_ok=True)
        _remove_stale(base, key)
        plan = _plan(opt_dir, deps)
        _check_room(base, tmp_dir, max(plan.total, _count(deps.get("unpackedBytes") or 0, "unpackedBytes")))
        workers = min(vcpus(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), usable_cpus()), max(1, len(plan.frames)))
        partial = _partial_name(base, key)
        os.mkdir(partial, 0o755)
        try:
            written = _extract(plan, partial, deps["codec"], workers)
            link_library_siblings(partial, opt_dir, deps)
            with open(os.path.join(partial, COMPLETE), "w") as f:
                f.write(json.dumps({"bytes": written}))
            _publish(partial, final, base, key)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        last_unpack.update(seconds=time.perf_counter() - started, bytes=written, files=len(plan.files),
                           workers=workers, codec=deps["codec"], skipped=False, dir=final)
    return final
