"""Compresses the dependencies that travel compressed, at package time, on the build machine.

  python -I -S compress.py JOB RESULT

JOB: {"sysPath": [...], "codec": "zstd" | "zlib", "level": N, "frameBytes": N, "threads": N,
      "units": [{"out": path, "files": [[path, size], ...]}, ...]}
RESULT gets {"units": [{"bytes": N, "frames": [[compressed, size], ...]}, ...], "encoder": "..."}.

Each unit's files, in the order given, form one stream cut into frames of frameBytes (the last
one shorter); each frame is compressed on its own (a zstd frame with its content size and
checksum, or a zlib stream with its adler32), so the shim can decode frames on every vCPU and
check each one. A unit's frames are written one after the other to its `out` file, and its
line of the result lists [compressed bytes, size] for each. Frames never span units, so the
compressed size of any set of units is the sum of theirs: the layer plan adds measured sizes.

Progress lines ("progress DONE TOTAL") go to stderr. Runs with the plugin's host copy of
zstandard on sys.path; zlib needs only the standard library. The same job gives the same bytes
whatever `threads` is: every frame is compressed alone, with fixed parameters.
"""

import json
import sys
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Tuple

# A frame reads (source path, offset, length) pieces of the unit's files.
Piece = Tuple[str, int, int]


def encoder_name() -> str:
    import zstandard  # type: ignore[import-not-found]

    return "zstandard %s (libzstd %s)" % (zstandard.__version__, ".".join(map(str, zstandard.ZSTD_VERSION)))


def compressor(codec: str, level: int) -> Callable[[], Callable[[bytes], bytes]]:
    """A factory of per-thread compressors: compression contexts are not thread-safe."""
    if codec == "zlib":
        def zlib_compressor() -> Callable[[bytes], bytes]:
            def compress(data: bytes) -> bytes:
                context = zlib.compressobj(level)
                return context.compress(data) + context.flush()
            return compress
        return zlib_compressor
    import zstandard  # type: ignore[import-not-found]

    def zstd_compressor() -> Callable[[bytes], bytes]:
        context = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True, write_dict_id=False)
        return context.compress
    return zstd_compressor


def frames_of(files: List[List[Any]], frame_bytes: int) -> List[List[Piece]]:
    """The unit's stream cut into frames, each as the file pieces it reads."""
    frames: List[List[Piece]] = []
    current: List[Piece] = []
    room = frame_bytes
    for path, size in files:
        offset = 0
        while offset < size:
            take = min(room, size - offset)
            current.append((path, offset, take))
            offset += take
            room -= take
            if room == 0:
                frames.append(current)
                current, room = [], frame_bytes
    if current:
        frames.append(current)
    return frames


def read_pieces(pieces: List[Piece]) -> bytes:
    chunks = []
    for path, offset, length in pieces:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise SystemExit("%s changed while it was being compressed" % path)
        chunks.append(data)
    return b"".join(chunks)


def run(job: Dict[str, Any]) -> List[Dict[str, Any]]:
    make = compressor(job["codec"], int(job["level"]))
    local = threading.local()
    units = job["units"]
    work: List[Tuple[int, List[Piece]]] = [
        (index, pieces) for index, unit in enumerate(units) for pieces in frames_of(unit["files"], int(job["frameBytes"]))
    ]
    total = sum(length for _unit, pieces in work for _path, _offset, length in pieces)

    def compress(pieces: List[Piece]) -> Tuple[bytes, int]:
        context = getattr(local, "compress", None)
        if context is None:
            context = local.compress = make()
        data = read_pieces(pieces)
        return context(data), len(data)

    results: List[Dict[str, Any]] = [{"bytes": 0, "frames": []} for _ in units]
    outputs = [open(unit["out"], "wb") for unit in units]
    threads = max(1, int(job.get("threads") or 1))
    done = reported = 0
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            # A bounded window keeps memory to a few frames however slow the first one is.
            window: Deque[Tuple[int, "Future[Tuple[bytes, int]]"]] = deque()
            pending = iter(work)

            def submit_next() -> None:
                item = next(pending, None)
                if item is not None:
                    window.append((item[0], pool.submit(compress, item[1])))

            for _ in range(threads * 2):
                submit_next()
            while window:
                index, future = window.popleft()
                frame, size = future.result()
                outputs[index].write(frame)
                results[index]["bytes"] += len(frame)
                results[index]["frames"].append([len(frame), size])
                done += size
                if done - reported >= total / 20 or done == total:
                    print("progress %d %d" % (done, total), file=sys.stderr, flush=True)
                    reported = done
                submit_next()
    finally:
        for output in outputs:
            output.close()
    return results


def main(argv: List[str]) -> None:
    with open(argv[1]) as f:
        job = json.load(f)
    # The plugin's host copy of zstandard, ahead of anything else.
    sys.path[:0] = job.get("sysPath") or []
    units = run(job)
    encoder = encoder_name() if job["codec"] == "zstd" else "zlib %s" % zlib.ZLIB_RUNTIME_VERSION
    with open(argv[2], "w") as f:
        json.dump({"units": units, "encoder": encoder}, f)


if __name__ == "__main__":
    main(sys.argv)
