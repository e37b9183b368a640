import glob
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
from tests.support import KEY, PACKAGE_DIR, make_zip, write_deps, zip_member

ARCHIVE = "deps-%s-0.zip" % KEY
ARCHIVE_1 = "deps-%s-1.zip" % KEY


class UnpackCase(unittest.TestCase):
    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="serverless-torch-unpack-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.opt = os.path.join(self.base, "opt")
        self.tmp = os.path.join(self.base, "tmp")
        os.makedirs(self.tmp)
        self.final = os.path.join(self.tmp, "serverless-torch", KEY)

    def archive(self, name, members):
        make_zip(os.path.join(self.opt, "serverless-torch", name), members)

    def entries(self):
        return sorted(os.listdir(os.path.join(self.tmp, "serverless-torch")))

    def plain_tree(self):
        self.archive(ARCHIVE, [
            zip_member("pkg/", b"", mode=0o755, kind=stat.S_IFDIR),
            zip_member("pkg/__init__.py", "VALUE = 42\n"),
            zip_member("pkg/data/table.txt", b"x" * 5000),
            zip_member("pkg/bin/tool", b"#!/bin/sh\necho hi\n", mode=0o755),
            zip_member("pkg/no_mode.txt", b"plain", mode=None),
        ])
        return write_deps(self.opt, archives=[ARCHIVE])


class PlainMembers(UnpackCase):
    def test_without_deps_json_there_is_nothing_to_unpack(self):
        self.assertIsNone(unpack.unpack(self.opt, self.tmp))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "serverless-torch")))

    def test_members_land_at_their_paths_with_their_modes(self):
        self.plain_tree()
        self.assertEqual(unpack.unpack(self.opt, self.tmp), self.final)
        with open(os.path.join(self.final, "pkg", "__init__.py")) as f:
            self.assertEqual(f.read(), "VALUE = 42\n")
        with open(os.path.join(self.final, "pkg", "data", "table.txt"), "rb") as f:
            self.assertEqual(f.read(), b"x" * 5000)
        mode = lambda rel: stat.S_IMODE(os.stat(os.path.join(self.final, rel)).st_mode)  # noqa: E731
        self.assertEqual(mode("pkg/bin/tool"), 0o755)
        self.assertEqual(mode("pkg/__init__.py"), 0o644)
        self.assertEqual(mode("pkg/no_mode.txt"), 0o644)
        self.assertTrue(os.path.isfile(os.path.join(self.final, unpack.COMPLETE)))
        self.assertEqual(self.entries(), [KEY])
        self.assertFalse(unpack.last_unpack["skipped"])
        self.assertEqual(unpack.last_unpack["bytes"], 11 + 5000 + 18 + 5)

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
        with open(os.path.join(self.final, "pkg", "__init__.py")) as f:
            self.assertEqual(f.read(), "VALUE = 42\n")
        self.assertEqual(self.entries(), [KEY])

    def test_a_missing_archive_is_named_in_the_error(self):
        write_deps(self.opt, archives=[ARCHIVE])
        with self.assertRaises(unpack.MissingArchiveError) as caught:
            unpack.unpack(self.opt, self.tmp)
        self.assertIn(os.path.join(self.opt, "serverless-torch", ARCHIVE), str(caught.exception))
        self.assertEqual(self.entries(), [])

    def test_an_unknown_deps_format_is_refused(self):
        write_deps(self.opt, format=2)
        with self.assertRaisesRegex(unpack.UnpackError, "unsupported format 2"):
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
        self.plain_tree()
        write_deps(self.opt, archives=[ARCHIVE], unpackedBytes=10 ** 15)
        with self.assertRaisesRegex(unpack.TmpTooSmallError, "ephemeralStorageSize"):
            unpack.unpack(self.opt, self.tmp)
        self.assertEqual(self.entries(), [])

    def test_unreferenced_parts_are_never_written_as_files(self):
        self.archive(ARCHIVE, [zip_member("a.txt", "a"), zip_member(".parts/stray.000", "zzz")])
        write_deps(self.opt, archives=[ARCHIVE])
        unpack.unpack(self.opt, self.tmp)
        self.assertEqual(sorted(os.listdir(self.final)), [unpack.COMPLETE, "a.txt"])


class ChunkedFiles(UnpackCase):
    def test_parts_from_several_archives_reassemble_byte_exact(self):
        payload = os.urandom(3 * 1024 * 1024 + 12345)
        cuts = [0, 1024 * 1024, 2 * 1024 * 1024 + 7, len(payload)]
        pieces = [payload[a:b] for a, b in zip(cuts, cuts[1:])]
        member = ".parts/torch/lib/libbig.so.%03d"
        self.archive(ARCHIVE, [zip_member("torch/lib/small.so", b"s"),
                               zip_member(member % 0, pieces[0]), zip_member(member % 2, pieces[2])])
        self.archive(ARCHIVE_1, [zip_member(member % 1, pieces[1])])
        write_deps(self.opt, archives=[ARCHIVE, ARCHIVE_1], chunked={
            "torch/lib/libbig.so": {"size": len(payload), "mode": 0o755, "parts": [
                {"archive": ARCHIVE_1, "member": member % 1, "offset": cuts[1]},
                {"archive": ARCHIVE, "member": member % 0, "offset": cuts[0]},
                {"archive": ARCHIVE, "member": member % 2, "offset": cuts[2]},
            ]}})
        unpack.unpack(self.opt, self.tmp)
        big = os.path.join(self.final, "torch", "lib", "libbig.so")
        with open(big, "rb") as f:
            self.assertEqual(f.read(), payload)
        self.assertEqual(stat.S_IMODE(os.stat(big).st_mode), 0o755)
        self.assertFalse(os.path.exists(os.path.join(self.final, ".parts")))
        self.assertEqual(unpack.last_unpack["files"], 2)

    def test_parts_that_leave_a_gap_are_refused(self):
        self.archive(ARCHIVE, [zip_member(".parts/f.000", b"ab"), zip_member(".parts/f.001", b"cd")])
        write_deps(self.opt, archives=[ARCHIVE], chunked={"f": {"size": 5, "mode": 0o644, "parts": [
            {"archive": ARCHIVE, "member": ".parts/f.000", "offset": 0},
            {"archive": ARCHIVE, "member": ".parts/f.001", "offset": 3}]}})
        with self.assertRaisesRegex(unpack.UnpackError, "contiguously"):
            unpack.unpack(self.opt, self.tmp)
        self.assertEqual(self.entries(), [])

    def test_a_missing_part_is_named(self):
        self.archive(ARCHIVE, [zip_member("a", b"a")])
        write_deps(self.opt, archives=[ARCHIVE], chunked={"f": {"size": 2, "parts": [
            {"archive": ARCHIVE, "member": ".parts/f.000", "offset": 0}]}})
        with self.assertRaisesRegex(unpack.UnpackError, r"\.parts/f\.000"):
            unpack.unpack(self.opt, self.tmp)


class HostileArchives(UnpackCase):
    def assert_refused(self, members, fragment):
        self.archive(ARCHIVE, [zip_member("ok.txt", "fine")] + members)
        write_deps(self.opt, archives=[ARCHIVE])
        with self.assertRaises(ValueError) as caught:
            unpack.unpack(self.opt, self.tmp)
        self.assertIn(fragment, str(caught.exception))
        self.assertEqual(self.entries(), [])
        self.assertEqual(sorted(os.listdir(self.base)), ["opt", "tmp"])
        self.assertEqual(os.listdir(self.tmp), ["serverless-torch"])

    def test_parent_directory_members_are_refused(self):
        self.assert_refused([zip_member("../evil", "pwned")], "'../evil'")

    def test_nested_parent_directory_members_are_refused(self):
        self.assert_refused([zip_member("a/../../../evil", "pwned")], "'a/../../../evil'")

    def test_absolute_members_are_refused(self):
        self.assert_refused([zip_member("/abs/path", "pwned")], "'/abs/path'")

    def test_symlinks_pointing_outside_are_refused(self):
        self.assert_refused([zip_member("lib/link", "../../outside", mode=0o777, kind=stat.S_IFLNK)],
                            "'lib/link'")

    def test_absolute_symlinks_are_refused(self):
        self.assert_refused([zip_member("passwd", "/etc/passwd", mode=0o777, kind=stat.S_IFLNK)], "'passwd'")

    def test_symlinks_escaping_through_other_symlinks_are_refused(self):
        # Each target stays inside on paper; together they climb out.
        self.assert_refused([
            zip_member("a/s", "b/..", mode=0o777, kind=stat.S_IFLNK),
            zip_member("a/b", "..", mode=0o777, kind=stat.S_IFLNK),
        ], "'a/s'")

    def test_duplicate_members_are_refused(self):
        self.assert_refused([zip_member("ok.txt", "again")], "'ok.txt'")

    def test_chunked_paths_are_checked_too(self):
        self.archive(ARCHIVE, [zip_member(".parts/x.000", b"x")])
        write_deps(self.opt, archives=[ARCHIVE], chunked={"../x": {"size": 1, "parts": [
            {"archive": ARCHIVE, "member": ".parts/x.000", "offset": 0}]}})
        with self.assertRaisesRegex(ValueError, r"'\.\./x'"):
            unpack.unpack(self.opt, self.tmp)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "x")))

    def test_symlinks_that_stay_inside_are_kept(self):
        self.archive(ARCHIVE, [zip_member("lib/libz.so.1.2", b"elf"),
                               zip_member("lib/libz.so.1", "libz.so.1.2", mode=0o777, kind=stat.S_IFLNK)])
        write_deps(self.opt, archives=[ARCHIVE])
        unpack.unpack(self.opt, self.tmp)
        self.assertEqual(os.readlink(os.path.join(self.final, "lib", "libz.so.1")), "libz.so.1.2")


class Libraries(UnpackCase):
    def test_siblings_left_in_opt_are_linked_next_to_the_moved_library(self):
        opt_lib = os.path.join(self.opt, "python", "torch", "lib")
        os.makedirs(opt_lib)
        for name in ("libc10.so", "libshm.so"):
            with open(os.path.join(opt_lib, name), "w") as f:
                f.write(name)
        self.archive(ARCHIVE, [zip_member("torch/lib/libtorch_cpu.so", b"moved"),
                               zip_member("torch/lib/libshm.so", b"unpacked copy wins")])
        write_deps(self.opt, archives=[ARCHIVE], libraries=["torch/lib/libtorch_cpu.so"])
        unpack.unpack(self.opt, self.tmp)
        lib = os.path.join(self.final, "torch", "lib")
        self.assertEqual(os.readlink(os.path.join(lib, "libc10.so")), os.path.join(opt_lib, "libc10.so"))
        self.assertFalse(os.path.islink(os.path.join(lib, "libshm.so")))
        self.assertFalse(os.path.islink(os.path.join(lib, "libtorch_cpu.so")))

    def test_listed_libraries_are_loaded(self):
        candidates = sorted(glob.glob(os.path.join(sysconfig.get_config_var("DESTSHARED") or "", "*.so")))
        if not candidates:
            self.skipTest("this interpreter has no shared extension modules to load")
        with open(candidates[0], "rb") as f:
            elf = f.read()
        self.archive(ARCHIVE, [zip_member("pkg/lib/libreal.so", elf, mode=0o755)])
        deps = write_deps(self.opt, archives=[ARCHIVE], libraries=["pkg/lib/libreal.so"])
        unpacked = unpack.unpack(self.opt, self.tmp)
        handles = unpack.load_libraries(unpacked, deps)
        self.assertEqual([h._name for h in handles], [os.path.join(self.final, "pkg", "lib", "libreal.so")])


class Processes(UnpackCase):
    def many_files(self):
        blob = os.urandom(1 << 20)
        members = [zip_member("pkg/m%03d.py" % i, ("X = %d\n" % i) * 200) for i in range(300)]
        members += [zip_member("pkg/blob%d.bin" % i, blob[i:] + blob[:i]) for i in range(6)]
        self.archive(ARCHIVE, members)
        write_deps(self.opt, archives=[ARCHIVE])
        return {m[0].filename: m[1] for m in members}

    def script(self, before=""):
        return textwrap.dedent("""
            import os, sys, time
            sys.path.insert(0, %r)
            from serverless_torch import unpack
            %s
            print(unpack.unpack(%r, %r), unpack.last_unpack["skipped"])
        """) % (os.path.dirname(PACKAGE_DIR), before, self.opt, self.tmp)

    def assert_complete(self, expected):
        for name, data in expected.items():
            with open(os.path.join(self.final, name), "rb") as f:
                self.assertEqual(f.read(), data, name)

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

        def other_process_finishes_first(plan, root):
            written = extract(plan, root)
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


if __name__ == "__main__":
    unittest.main()
