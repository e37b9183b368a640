"""Codecs for the compressed dependencies, measured on one file cut into frames as the plugin cuts it.

  python3 bench/codecs.py [--file PATH] [--site DIR] [--levels zstd:-1,zstd:3,zlib:6] [--frame-mib 8] [--runs 5]

Defaults: the stripped libtorch_cpu.so and the host zstandard of the plugin's cache
(~/.cache/serverless-torch, filled by `npm run bench:cold-start` or any `sls package`).
For each codec and level: the compressed size over the original, the encode time on one core
(CPU time, the whole file), and the decode speed on one core (CPU time, median of --runs passes,
codecs interleaved so the noise of a shared machine falls on all alike), decoding into memory
only, as the shim does before it writes.
"""

import argparse
import glob
import os
import statistics
import sys
import time
import zlib

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "serverless-torch")


def newest(pattern):
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not found:
        raise SystemExit("nothing matches %s: package a service first, or pass the path" % pattern)
    return found[-1]


def codec_functions(codec, level, zstandard):
    if codec == "zlib":
        def compress(data):
            context = zlib.compressobj(level)
            return context.compress(data) + context.flush()
        return compress, lambda frame, size: zlib.decompress(frame, 15, size)
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    decompressor = zstandard.ZstdDecompressor()
    return compressor.compress, lambda frame, size: decompressor.decompress(frame)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--file")
    parser.add_argument("--site")
    parser.add_argument("--levels", default="zlib:6,zstd:-1,zstd:1,zstd:3,zstd:9,zstd:19")
    parser.add_argument("--frame-mib", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    path = args.file or newest(os.path.join(CACHE, "trees", "*", "site", "torch", "lib", "libtorch_cpu.so"))
    sys.path.insert(0, args.site or os.path.dirname(os.path.dirname(newest(os.path.join(CACHE, "host", "*", "site", "zstandard", "__init__.py")))))
    import zstandard

    with open(path, "rb") as f:
        data = f.read()
    step = args.frame_mib << 20
    frames = [data[at:at + step] for at in range(0, len(data), step)]
    print("%s: %d bytes in %d frames of %d MiB; zstandard %s (libzstd %s)" % (
        path, len(data), len(frames), args.frame_mib, zstandard.__version__, ".".join(map(str, zstandard.ZSTD_VERSION))))
    runs = {}
    for spec in args.levels.split(","):
        codec, level = spec.split(":")
        compress, decompress = codec_functions(codec, int(level), zstandard)
        started = time.process_time()
        packed = [compress(frame) for frame in frames]
        runs[spec] = {"encode": time.process_time() - started, "bytes": sum(map(len, packed)), "packed": packed, "decode": [], "decompress": decompress}
        print("  encoded %-8s in %.1f s" % (spec, runs[spec]["encode"]), file=sys.stderr, flush=True)
    for _ in range(args.runs):
        for spec, run in runs.items():
            started = time.process_time()
            for frame, original in zip(run["packed"], frames):
                run["decompress"](frame, len(original))
            run["decode"].append(time.process_time() - started)
    print("| codec | compressed / original | decode MB/s per core | encode time, one core |")
    print("|---|---|---|---|")
    for spec, run in runs.items():
        codec, level = spec.split(":")
        print("| %s level %s | %.3f | %.0f | %.1f s |" % (
            codec, level, run["bytes"] / len(data), len(data) / statistics.median(run["decode"]) / 1e6, run["encode"]))


if __name__ == "__main__":
    main()
