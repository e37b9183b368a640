import glob
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import unittest
from unittest import mock

from serverless_torch import unpack
from tests.support import ARCHIVE, CODECS, KEY, PACKAGE_DIR, compress, pack, write_deps, zstandard

# The frames the tests cut: small, so that a few KiB make several of them.
FRAME = 4096


class UnpackCase(object):
    """Tests shared by every codec; the classes at the bottom run them for zlib and zstd."""

    codec = "zlib"

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="serverless-torch-unpack-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.opt = os.path.join(self.base, "opt")
        self.tmp = os.path.join(self.base, "tmp")
        os.makedirs(self.tmp)
        self.final = os.path.join(self.tmp, "serverless-torch", KEY)
        self.archive_path = os.path.join(self.opt, "serverless-torch", ARCHIVE)

    def pack(self, contents, **fields):
        return pack(self.opt, contents, codec=self.codec, frame_bytes=fields.pop("frame_bytes", FRAME), **fields)

    def entries(self):
        return sorted(os.listdir(os.path.join(self.tmp, "serverless-torch")))

    def assert_nothing_published(self):
        self.assertEqual(self.entries(), [])
        self.assertEqual(sorted(os.listdir(self.base)), ["opt", "tmp"])

    def plain_tree(self):
        return self.pack([
            ("pkg/__init__.py", "VALUE = 42\n", 0o644),
            ("pkg/data/table.txt", b"x" * 5000, 0o644),
            ("pkg/empty.txt", b"", 0o644),
            ("pkg/bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
            ("pkg/no_mode.txt", b"plain", 0),
        ])

    def mode(self, rel):
        return stat.S_IMODE(os.stat(os.path.join(self.final, rel)).st_mode)

    def read(self, rel):
        with open(os.path.join(self.final, rel), "rb") as f:
            return f.read()


class PlainTrees(UnpackCase):
    def test_without_deps_json_there_is_nothing_to_unpack(self):
        self.assertIsNone(unpack.unpack(self.opt, self.tmp))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "serverless-torch")))

    def test_files_land_at_their_paths_with_their_modes(self):
        self.plain_tree()
        self.assertEqual(unpack.unpack(self.opt, self.tmp), self.final)
        self.assertEqual(self.read("pkg/__init__.py"), b"VALUE = 42\n")
        self.assertEqual(self.read("pkg/data/table.txt"), b"x" * 5000)
        self.assertEqual(self.read("pkg/empty.txt"), b"")
        self.assertEqual((self.mode("pkg/bin/tool"), self.mode("pkg/__init__.py"), self.mode("pkg/no_mode.txt")), (0o755, 0o644, 0o644))
        self.assertTrue(os.path.isfile(os.path.join(self.final, unpack.COMPLETE)))
        self.assertEqual(self.entries(), [KEY])
        self.assertFalse(unpack.last_unpack["skipped"])
        self.assertEqual((unpack.last_unpack["bytes"], unpack.last_unpack["files"], unpack.last_unpack["codec"]),
                         (11 + 5000 + 18 + 5, 5, self.codec))

    def test_a_file_over_many_frames_and_frames_over_many_files_reassemble_byte_exact(self):
        big = os.urandom(10 * FRAME + 123)
        files = [("a/small%d.py" % i, os.urandom(700), 0o644) for i in range(9)]
        files += [("b/lib/libbig.so", big, 0o755), ("c/after.txt", b"tail", 0o644)]
        deps = self.pack(files)
        self.assertEqual(len(deps["frames"]), 12)
        unpack.unpack(self.opt, self.tmp)
        for name, data, _mode in files:
            self.assertEqual(self.read(name), data, name)
        self.assertEqual(self.mode("b/lib/libbig.so"), 0o755)

    def test_a_second_call_reuses_the_complete_directory(self):
        self.plain_tree()
        unpack.unpack(self.opt, self.tmp)
        before = os.stat(os.path.join(self.final, "pkg", "__init__.py"))
        time.sleep(0.02)
        with mock.patch.object(unpack, "_extract", side_effect=AssertionError("unpacked twice")):
            self.assertEqual(unpack.unpack(self.opt, self.tmp), self.final)
        after = os.stat(os.path.join(self.final, "pkg", "__init__.py"))
        self.assertEqual((before.st_ino, before.st_mtime_ns), (after.st_ino, after.st_mtime_ns))
        self.assertTrue(unpack.last_unpack["skipped"])

    def test_an_incomplete_directory_in_place_is_replaced(self):
        self.plain_tree()
        os.makedirs(os.path.join(self.final, "pkg"))
        with open(os.path.join(self.final, "pkg", "__init__.py"), "w") as f:
            f.write("trunc")
        self.assertEqual(unpack.unpack(self.opt, self.tmp), self.final)
        self.assertEqual(self.read("pkg/__init__.py"), b"VALUE = 42\n")
        self.assertEqual(self.entries(), [KEY])

    def test_a_missing_archive_is_named_in_the_error(self):
        write_deps(self.opt, codec=self.codec)
        with self.assertRaises(unpack.MissingArchiveError) as caught:
            unpack.unpack(self.opt, self.tmp)
        self.assertIn(self.archive_path, str(caught.exception))
        self.assertEqual(self.entries(), [])

    def test_the_zip_archives_of_format_1_are_refused_with_the_fix(self):
        write_deps(self.opt, format=1)
        with self.assertRaisesRegex(unpack.UnpackError, "unsupported format 1 .*reads format 2.*repackage"):
            unpack.unpack(self.opt, self.tmp)

    def test_an_unknown_codec_is_refused(self):
        write_deps(self.opt, codec="lzma")
        with self.assertRaisesRegex(unpack.UnpackError, "unknown codec 'lzma'"):
            unpack.unpack(self.opt, self.tmp)

    def test_a_key_that_is_not_a_plain_name_is_refused(self):
        write_deps(self.opt, key="../../etc")
        with self.assertRaisesRegex(unpack.UnpackError, "invalid key"):
            unpack.unpack(self.opt, self.tmp)

    def test_a_failure_midway_leaves_no_directory_behind(self):
        self.plain_tree()
        with mock.patch.object(unpack, "link_library_siblings", side_effect=OSError("disk gone")):
            with self.assertRaisesRegex(OSError, "disk gone"):
                unpack.unpack(self.opt, self.tmp)
        self.assertEqual(self.entries(), [])

    def test_too_little_space_in_tmp_asks_for_more_ephemeral_storage(self):
        self.pack([("a", b"a", 0o644)], unpackedBytes=10 ** 15)
        with self.assertRaisesRegex(unpack.TmpTooSmallError, "ephemeralStorageSize"):
            unpack.unpack(self.opt, self.tmp)
        self.assertEqual(self.entries(), [])

    def test_frames_decode_on_one_thread_per_vcpu_the_memory_buys(self):
        self.pack([("blob", os.urandom(8 * FRAME), 0o644)])
        cpus = unpack.usable_cpus()
        for memory, expected in (("1769", 1), ("2048", 1), ("3008", min(2, cpus)), ("10240", min(6, cpus)), (None, cpus)):
            shutil.rmtree(os.path.join(self.tmp, "serverless-torch"), True)
            with mock.patch.dict(os.environ, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory or ""}):
                unpack.unpack(self.opt, self.tmp)
            self.assertEqual(unpack.last_unpack["workers"], expected, memory)


class DamagedArchives(UnpackCase):
    """Corrupt, truncated and hostile archives: a clear error, nothing half-published in /tmp,
    and the next cold start (with a good layer) unpacks cleanly."""

    def damaged(self, damage, fragment, error=unpack.CorruptArchiveError):
        files = [("pkg/a.bin", os.urandom(3 * FRAME), 0o644), ("pkg/b.py", "B = 1\n" * 500, 0o644)]
        self.pack(files)
        with open(self.archive_path, "rb") as f:
            good = f.read()
        with open(self.archive_path, "wb") as f:
            f.write(damage(bytearray(good)))
        with self.assertRaises(error) as caught:
            unpack.unpack(self.opt, self.tmp)
        self.assertRegex(str(caught.exception), fragment)
        self.assert_nothing_published()
        with open(self.archive_path, "wb") as f:
            f.write(good)
        self.assertEqual(unpack.unpack(self.opt, self.tmp), self.final)
        self.assertEqual(self.read("pkg/a.bin"), files[0][1])
        self.assertEqual(self.entries(), [KEY])

    def test_a_flipped_byte_is_caught_by_the_frame_checksum(self):
        def flip(data):
            data[len(data) // 2] ^= 0xFF
            return bytes(data)
        self.damaged(flip, r"the %s frame at byte \d+ does not decode to the \d+ bytes deps.json lists .*damaged" % self.codec)

    def test_a_truncated_archive_is_refused_before_anything_is_written(self):
        self.damaged(lambda data: bytes(data[:-100]), r"has \d+ bytes, deps.json lists frames of \d+")

    def test_an_archive_with_bytes_appended_is_refused(self):
        self.damaged(lambda data: bytes(data) + b"\0" * 8, r"has \d+ bytes, deps.json lists frames of \d+")

    def test_frames_swapped_for_others_of_another_size_are_refused(self):
        def swap(data):
            other = compress(self.codec, b"y" * 100)
            first = compress(self.codec, b"z" * 10)
            return other + first + bytes(data[len(other) + len(first):])
        self.damaged(swap, r"does not decode to the \d+ bytes deps.json lists")

    def test_a_frame_that_holds_more_than_deps_json_says_is_refused(self):
        data = os.urandom(FRAME)
        self.pack([("a", data, 0o644)])
        with open(os.path.join(self.opt, "serverless-torch", "deps.json")) as f:
            deps = json.load(f)
        deps["files"][0][1] = FRAME - 10
        deps["frames"][0][1] = FRAME - 10
        write_deps(self.opt, **deps)
        with self.assertRaisesRegex(unpack.CorruptArchiveError, "does not decode to the %d bytes" % (FRAME - 10)):
            unpack.unpack(self.opt, self.tmp)
        self.assert_nothing_published()

    def test_frames_that_do_not_add_up_to_the_files_are_refused(self):
        self.pack([("a", b"abc", 0o644)], files=[["a", 5, 0o644]])
        with self.assertRaisesRegex(unpack.UnpackError, "the frames hold 3 bytes, the files 5"):
            unpack.unpack(self.opt, self.tmp)
        self.assert_nothing_published()

    def assert_refused(self, files, fragment, error=unpack.UnsafeArchiveError):
        self.pack([("ok.txt", b"fine", 0o644)] + [(name, b"pwned", 0o644) for name in files])
        with self.assertRaises(error) as caught:
            unpack.unpack(self.opt, self.tmp)
        self.assertIn(fragment, str(caught.exception))
        self.assert_nothing_published()

    def test_parent_directory_paths_are_refused(self):
        self.assert_refused(["../evil"], "'../evil'")

    def test_nested_parent_directory_paths_are_refused(self):
        self.assert_refused(["a/../../../evil"], "'a/../../../evil'")

    def test_absolute_paths_are_refused(self):
        self.assert_refused(["/abs/path"], "'/abs/path'")

    def test_duplicate_paths_are_refused(self):
        self.assert_refused(["ok.txt"], "'ok.txt'")

    def test_a_file_that_is_also_a_directory_is_refused(self):
        self.assert_refused(["ok.txt/inside"], "'ok.txt' is a file too")

    def test_sizes_that_are_not_whole_numbers_are_refused(self):
        self.pack([("a", b"abc", 0o644)], files=[["a", -3, 0o644]])
        with self.assertRaisesRegex(unpack.UnpackError, "must be a whole number of bytes, got -3"):
            unpack.unpack(self.opt, self.tmp)
        self.assert_nothing_published()


class Libraries(UnpackCase):
    def test_siblings_left_in_opt_are_linked_next_to_the_moved_library(self):
        opt_lib = os.path.join(self.opt, "python", "torch", "lib")
        os.makedirs(opt_lib)
        for name in ("libc10.so", "libshm.so"):
            with open(os.path.join(opt_lib, name), "w") as f:
                f.write(name)
        self.pack([("torch/lib/libshm.so", b"unpacked copy wins", 0o755), ("torch/lib/libtorch_cpu.so", b"moved", 0o755)],
                  libraries=["torch/lib/libtorch_cpu.so"])
        unpack.unpack(self.opt, self.tmp)
        lib = os.path.join(self.final, "torch", "lib")
        self.assertEqual(os.readlink(os.path.join(lib, "libc10.so")), os.path.join(opt_lib, "libc10.so"))
        self.assertFalse(os.path.islink(os.path.join(lib, "libshm.so")))
        self.assertFalse(os.path.islink(os.path.join(lib, "libtorch_cpu.so")))

    def test_listed_libraries_are_loaded(self):
        candidates = sorted(glob.glob(os.path.join(sysconfig.get_config_var("DESTSHARED") or "", "*.so")))
        self.assertTrue(candidates, "this interpreter has no shared extension modules to load")
        with open(candidates[0], "rb") as f:
            elf = f.read()
        deps = self.pack([("pkg/lib/libreal.so", elf, 0o755)], libraries=["pkg/lib/libreal.so"])
        unpacked = unpack.unpack(self.opt, self.tmp)
        handles = unpack.load_libraries(unpacked, deps)
        self.assertEqual([h._name for h in handles], [os.path.join(self.final, "pkg", "lib", "libreal.so")])


class Processes(UnpackCase):
    def many_files(self):
        blob = os.urandom(1 << 20)
        files = [("pkg/m%03d.py" % i, ("X = %d\n" % i) * 200, 0o644) for i in range(300)]
        files += [("pkg/blob%d.bin" % i, blob[i:] + blob[:i], 0o644) for i in range(6)]
        self.pack(files, frame_bytes=256 * 1024)
        return {name: data if isinstance(data, bytes) else data.encode() for name, data, _mode in files}

    def script(self, before=""):
        return textwrap.dedent("""
            import os, sys, time
            sys.path[:0] = %r
            from serverless_torch import unpack
            %s
            print(unpack.unpack(%r, %r), unpack.last_unpack["skipped"])
        """) % ([os.path.dirname(PACKAGE_DIR)] + [p for p in sys.path if p], before, self.opt, self.tmp)

    def assert_complete(self, expected):
        for name, data in expected.items():
            self.assertEqual(self.read(name), data, name)

    def test_two_processes_unpacking_at_once_both_get_a_complete_copy(self):
        expected = self.many_files()
        barrier = os.path.join(self.base, "barrier")
        os.makedirs(barrier)
        # Both hold a finished copy before either renames it into place: a real race.
        both_unpacked = textwrap.dedent("""
            publish = unpack._publish
            def racing_publish(*args):
                open(os.path.join(%r, str(os.getpid())), "w").close()
                while len(os.listdir(%r)) < 2:
                    time.sleep(0.001)
                publish(*args)
            unpack._publish = racing_publish
        """) % (barrier, barrier)
        procs = [subprocess.Popen([sys.executable, "-c", self.script(both_unpacked)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err)
            self.assertEqual(out.decode().split(), [self.final, "False"])
        self.assert_complete(expected)
        self.assertEqual(self.entries(), [KEY])

    def test_losing_the_race_keeps_the_winners_copy(self):
        expected = self.many_files()
        extract = unpack._extract

        def other_process_finishes_first(*args):
            written = extract(*args)
            subprocess.run([sys.executable, "-c", self.script()], check=True, stdout=subprocess.DEVNULL)
            return written

        with mock.patch.object(unpack, "_extract", other_process_finishes_first):
            self.assertEqual(unpack.unpack(self.opt, self.tmp), self.final)
        self.assert_complete(expected)
        self.assertEqual(len(os.listdir(os.path.join(self.final, "pkg"))), 306)
        self.assertEqual(self.entries(), [KEY])

    def test_partial_directories_of_dead_processes_are_swept(self):
        self.many_files()
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        base = os.path.join(self.tmp, "serverless-torch")
        stale = os.path.join(base, ".%s.%d.abc" % (KEY, dead.pid))
        alive = os.path.join(base, ".%s.%d.abc" % (KEY, os.getppid()))
        other_key = os.path.join(base, ".fedcba9876543210.%d.abc" % dead.pid)
        for d in (stale, alive, other_key):
            os.makedirs(os.path.join(d, "pkg"))
        unpack.unpack(self.opt, self.tmp)
        self.assertEqual(self.entries(), sorted([KEY] + [os.path.basename(d) for d in (alive, other_key)]))


class ZstdFrames(UnpackCase):
    """What only zstd frames carry: a header that states the size, checked before decoding."""

    codec = "zstd"

    def test_a_frame_whose_header_claims_another_size_is_refused_before_it_is_decoded(self):
        data = os.urandom(FRAME)
        self.pack([("a", data, 0o644)])
        bomb = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(b"\0" * (64 << 20))
        with open(self.archive_path, "wb") as f:
            f.write(bomb)
        write_deps(self.opt, codec="zstd", files=[["a", FRAME, 0o644]], frames=[[len(bomb), FRAME]])
        with self.assertRaisesRegex(unpack.CorruptArchiveError, "the frame header says %d bytes" % (64 << 20)):
            unpack.unpack(self.opt, self.tmp)
        self.assert_nothing_published()

    def test_a_frame_without_its_size_in_the_header_is_refused(self):
        frame = zstandard.ZstdCompressor(write_content_size=False).compressobj()
        data = frame.compress(b"abc") + frame.flush()
        os.makedirs(os.path.dirname(self.archive_path))
        with open(self.archive_path, "wb") as f:
            f.write(data)
        write_deps(self.opt, codec="zstd", files=[["a", 3, 0o644]], frames=[[len(data), 3]])
        with self.assertRaisesRegex(unpack.CorruptArchiveError, "the frame header says"):
            unpack.unpack(self.opt, self.tmp)
        self.assert_nothing_published()

    def test_python314_decodes_with_compression_zstd(self):
        # No python3.14 here: a stand-in with compression.zstd's API (get_frame_info, ZstdDecompressor
        # with max_length and eof), built on zstandard, checks the unpacker's side of that API.
        class FrameInfo(object):
            def __init__(self, size):
                self.decompressed_size = size

        class Decompressor(object):
            calls = []

            def __init__(self):
                self.eof = False

            def decompress(self, data, max_length=-1):
                Decompressor.calls.append(max_length)
                out = zstandard.ZstdDecompressor().decompress(data)
                self.eof = True
                return out

        stdlib = mock.Mock(get_frame_info=lambda data: FrameInfo(zstandard.frame_content_size(data)), ZstdDecompressor=Decompressor)
        files = [("pkg/a.bin", os.urandom(3 * FRAME), 0o644)]
        self.pack(files)
        with mock.patch.object(unpack, "_stdlib_zstd", return_value=stdlib):
            unpack.unpack(self.opt, self.tmp)
        self.assertEqual(self.read("pkg/a.bin"), files[0][1])
        self.assertEqual(Decompressor.calls, [FRAME] * 3)

    def test_a_missing_decoder_is_explained(self):
        self.pack([("a", b"abc", 0o644)])
        with mock.patch.dict(sys.modules, {"zstandard": None}), mock.patch.object(unpack, "_stdlib_zstd", return_value=None):
            with self.assertRaisesRegex(unpack.UnpackError, "neither compression.zstd nor the zstandard package"):
                unpack.unpack(self.opt, self.tmp)
        self.assert_nothing_published()


# Every shared test, once per codec this interpreter can write archives with.
for _codec in CODECS:
    for _case in (PlainTrees, DamagedArchives, Libraries, Processes):
        _name = "%s%s" % (_codec.capitalize(), _case.__name__)
        globals()[_name] = type(_name, (_case, unittest.TestCase), {"codec": _codec})
if "zstd" in CODECS:
    ZstdOnly = type("ZstdOnly", (ZstdFrames, unittest.TestCase), {})


if __name__ == "__main__":
    unittest.main()
