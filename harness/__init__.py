"""The shared test harness: a fake OpenAI upstream on loopback (`harness.upstream`), real mitmdump
processes running the addon (`harness.mitmdump`) and the addon in process (`harness.inproc`).
Imported by tests/, the collector and the benchmark alike."""

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = "sk-test-0123456789abcdef"  # the upstream key the tests' proxies are started with


def script_module(path: Path) -> ModuleType:
    """A script of the project that is no package module (scripts/workers.py), loaded by its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
