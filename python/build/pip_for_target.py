"""pip, with environment markers evaluated for the Lambda target instead of this machine.

    python pip_for_target.py TARGET_ENVIRONMENT_JSON PIP_ARGUMENT...

pip's --python-version, --platform and --abi choose the target's wheels, but pip evaluates
environment markers (`tomli; python_version < "3.11"`, `...; platform_machine == "aarch64"`,
and the same markers in every dependency's metadata) with the interpreter that runs it: a
python3.12 build machine would silently leave out what a python3.10 function needs, and a
macOS or x86_64 one would pick its own platform's dependencies. pip reads the marker
environment from its vendored `packaging.markers.default_environment`; this replaces it with
the target's, checks that the replacement took effect, and runs pip.
"""

import json
import sys


def main() -> int:
    target = json.loads(sys.argv[1])
    from pip._vendor.packaging import markers

    def default_environment():
        return dict(target)

    markers.default_environment = default_environment
    # A pip that evaluates markers another way would install for the wrong Python without a
    # word: refuse instead.
    probe = 'python_version == "%s" and platform_machine == "%s" and sys_platform == "linux"' % (
        target["python_version"], target["platform_machine"])
    if not markers.Marker(probe).evaluate():
        sys.stderr.write(
            "serverless-torch: this pip (%s) does not evaluate environment markers through "
            "packaging.markers.default_environment, so markers cannot be evaluated for the "
            "Lambda target\n" % getattr(sys.modules.get("pip"), "__version__", "unknown"))
        return 3
    from pip._internal.cli.main import main as pip_main

    sys.argv = ["pip"] + sys.argv[2:]
    return pip_main()


if __name__ == "__main__":
    sys.exit(main())
