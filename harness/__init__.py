"""The shared test harness: a fake OpenAI upstream on loopback (`harness.upstream`) and real
mitmdump processes running the addon (`harness.mitmdump`). Imported by tests/, the collector and
the benchmark alike."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = "sk-test-0123456789abcdef"  # the upstream key the tests' proxies are started with
