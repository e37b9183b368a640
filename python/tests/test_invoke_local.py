import json
import os
import subprocess
import sys
import unittest

from tests.support import INVOKE_LOCAL, FunctionCase, write


class JsonLinesProtocol(FunctionCase):
    def setUp(self):
        super(JsonLinesProtocol, self).setUp()
        self.package_model("weights", {"kind": "weights", "state": {"w": [1.0]}})

    def test_one_result_line_per_event_and_an_error_does_not_poison_the_next(self):
        code, lines, out, err = self.invoke([{"n": 1}, {"raise": "second"}, {"n": 3, "print": "hello from user"}])
        self.assertEqual(code, 0, err)
        self.assertEqual(len(lines), 3)
        self.assertEqual(lines[0]["result"]["event"], {"n": 1})
        error = lines[1]["error"]
        self.assertEqual((error["errorType"], error["errorMessage"]), ("ValueError", "bad input: second"))
        self.assertTrue(any("handler.py" in frame and "raise LAST" in frame for frame in error["stackTrace"]))
        self.assertFalse(any("invoke_local.py" in frame for frame in error["stackTrace"]))
        self.assertEqual(lines[2]["result"]["event"], {"n": 3, "print": "hello from user"})
        self.assertEqual(out, "hello from user\n")

    def test_the_context_looks_like_lambdas(self):
        first, second = self.invoke_ok([{}, {}], AWS_REGION="eu-west-1")
        context = first["result"]["context"]
        self.assertEqual(context["function_name"], "predict")
        self.assertEqual(context["function_version"], "$LATEST")
        self.assertEqual(context["memory_limit_in_mb"], "1769")
        self.assertEqual(context["invoked_function_arn"], "arn:aws:lambda:eu-west-1:000000000000:function:predict")
        self.assertEqual(context["log_group_name"], "/aws/lambda/predict")
        self.assertIn("[$LATEST]", context["log_stream_name"])
        self.assertTrue(25000 < context["remaining"] <= 30000, context["remaining"])
        self.assertEqual(len(context["aws_request_id"]), 36)
        self.assertNotEqual(context["aws_request_id"], second["result"]["context"]["aws_request_id"])

    def test_sys_path_is_lambdas_and_holds_no_host_site_packages(self):
        (line,) = self.invoke_ok([{}])
        path = line["result"]["sys_path"]
        version = "python%d.%d" % sys.version_info[:2]
        self.assertEqual(path[:3], [self.task, os.path.join(self.opt, "python", "lib", version, "site-packages"),
                                    os.path.join(self.opt, "python")])
        self.assertFalse([p for p in path[3:] if "site-packages" in p or p.startswith(self.task)], path)
        self.assertEqual(line["result"]["shim_file"], os.path.join(self.task, "serverless_torch", "shim.py"))
        self.assertEqual(line["result"]["cwd"], self.task)

    def test_unserialisable_results_are_marshal_errors(self):
        bad, good = self.invoke_ok([{"unserialisable": True}, {}])
        self.assertEqual(bad["error"]["errorType"], "Runtime.MarshalError")
        self.assertIn("set", bad["error"]["errorMessage"])
        self.assertIn("result", good)

    def test_events_that_are_not_json_are_unmarshal_errors(self):
        bad, good = self.invoke_ok(["{not json", {}])
        self.assertEqual(bad["error"]["errorType"], "Runtime.UnmarshalError")
        self.assertIn("result", good)

    def test_an_init_failure_is_one_init_error_line_and_exit_1(self):
        write(os.path.join(self.task, "explodes.py"), "raise ZeroDivisionError('at import')\n")
        code, lines, _out, err = self.invoke([{}, {}], SERVERLESS_TORCH_HANDLER="explodes.handle")
        self.assertEqual(code, 1)
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0]["initError"]["errorType"], "ZeroDivisionError")
        self.assertEqual(lines[0]["initError"]["errorMessage"], "at import")
        self.assertIn("ZeroDivisionError", err)

    def test_resident_memory_is_on_every_line_only_when_asked(self):
        lines = self.invoke_ok([{}, {"raise": "x"}, {"unserialisable": True}], SERVERLESS_TORCH_REPORT_RSS="1")
        for line in lines:
            self.assertIsInstance(line["rss"], int)
            self.assertGreater(line["rss"], 1 << 20)
        (plain,) = self.invoke_ok([{}])
        self.assertNotIn("rss", plain)

    def test_results_go_to_the_descriptor_named_in_the_environment(self):
        read_end, write_end = os.pipe()
        proc = subprocess.Popen([sys.executable, "-S", "-s", INVOKE_LOCAL], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(write_end,),
                                env=self.env(SERVERLESS_TORCH_RESULT_FD=str(write_end)))
        os.close(write_end)
        proc.communicate(b'{"n": 5}\n', timeout=120)
        with os.fdopen(read_end) as results:
            lines = [json.loads(line) for line in results]
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(lines[0]["result"]["event"], {"n": 5})


if __name__ == "__main__":
    unittest.main()
