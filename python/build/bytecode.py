"""Bytecode for the modules a cold start imports, run on the build machine at package time.

    python3.X -I -S bytecode.py TREE_DIR MODULE...

Run with an interpreter of the function's runtime minor version (bytecode is specific to it,
not to the machine). It follows the imports that run when MODULE is imported (statements at
module level and in class bodies, not in functions or under `if TYPE_CHECKING:`) through the
.py files of TREE_DIR, and writes __pycache__/*.pyc for those only: Lambda's /opt is read-only,
so without them every cold start compiles torch from source (import torch 2.5-2.9 s instead of
1.3-1.4 s on a 2-core machine, measured with torch 2.13), while bytecode for the
modules nothing imports at init would take layer space and save nothing. The .pyc use
unchecked-hash invalidation, because unzipped files get fixed or fresh mtimes and checking a
hash would mean reading every source, and carry paths relative to the tree so identical trees
give identical files. Prints one JSON line: {"compiled", "bytes", "failed"}.
"""

import ast
import importlib.util
import json
import os
import py_compile
import sys
from typing import Dict, Iterator, List, Optional, Set


def module_file(tree: str, name: str) -> Optional[str]:
    """The .py file that importing `name` executes, when the tree holds it as source."""
    base = os.path.join(tree, *name.split("."))
    for candidate in (os.path.join(base, "__init__.py"), base + ".py"):
        if os.path.isfile(candidate):
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _eager_statements(body: List[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run when the module body runs."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _eager_statements(node.body)
            yield from _eager_statements(node.orelse)
        elif isinstance(node, ast.ClassDef):
            yield from _eager_statements(node.body)
        elif isinstance(node, (ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)):
            yield from _eager_statements(node.body)
            yield from _eager_statements(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            yield from _eager_statements(node.body)
            for handler in node.handlers:
                yield from _eager_statements(handler.body)
            yield from _eager_statements(node.orelse)
            yield from _eager_statements(node.finalbody)


def _with_parents(name: str) -> List[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imports_of(tree: str, name: str, path: str) -> Set[str]:
    """Modules (with their parent packages) that importing `name` imports at once."""
    with open(path, "rb") as f:
        source = f.read()
    try:
        parsed = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return set()
    is_package = os.path.basename(path) == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in _eager_statements(parsed.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".") if package else []
                if node.level - 1 > len(anchor):
                    continue
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base:
                continue
            found.update(_with_parents(base))
            for alias in node.names:
                if alias.name != "*" and module_file(tree, base + "." + alias.name):
                    found.add(base + "." + alias.name)
    return found


def eager_modules(tree: str, seeds: List[str]) -> Dict[str, str]:
    """Module name -> source file, for everything importing the seeds pulls in from the tree."""
    found: Dict[str, str] = {}
    pending = [name for seed in seeds for name in _with_parents(seed)]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = module_file(tree, name)
        if path is None:
            continue
        found[name] = path
        pending.extend(sorted(imports_of(tree, name, path) - set(found)))
    return found


def compile_modules(tree: str, modules: Dict[str, str]) -> Dict[str, object]:
    compiled = 0
    written = 0
    failed: List[str] = []
    for name in sorted(modules):
        source = modules[name]
        target = importlib.util.cache_from_source(source)
        relative = os.path.relpath(source, tree).replace(os.sep, "/")
        try:
            py_compile.compile(
                source,
                cfile=target,
                dfile=relative,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
        except py_compile.PyCompileError:
            # Source for another Python version (torch ships 3.12-only test helpers): it
            # would fail at import too, so no bytecode is lost.
            failed.append(relative)
            continue
        compiled += 1
        written += os.path.getsize(target)
    return {"compiled": compiled, "bytes": written, "failed": failed}


def main(argv: List[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    tree = os.path.abspath(argv[1])
    modules = eager_modules(tree, argv[2:])
    print(json.dumps(compile_modules(tree, modules)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
