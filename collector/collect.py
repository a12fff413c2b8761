"""The collector: drives every scenario through the proxy against an upstream and saves each exchange.

    python -m collector.collect --name llama-server --base-url http://127.0.0.1:8001/v1 --model gemma3
    python -m collector.collect --name openai-recordings        # the real OpenAI recordings, served back

Each exchange becomes `flows/<name>/<scenario>.flow` (see collector/recorder.py); no key is ever
written. One progress line per scenario, a summary at the end; exit status 1 if any failed.
`--only a,b` records just those scenarios into the existing folder, keeping its other flows
(the manifest notes when each was added).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import ollama

from collector.recorder import SCENARIO_HEADER
from collector.scenarios import MANIFEST, Scenario, live_scenarios, recording_scenarios, run
from harness import ROOT
from harness.mitmdump import Mitmdump
from harness.upstream import FakeOpenAI, UpstreamServer


def collect(
    name: str,
    scenarios: list[Scenario],
    base_url: str,
    api_key: str,
    manifest: dict[str, Any],
    fake: FakeOpenAI | None = None,
    merge: bool = False,
) -> int:
    target = ROOT / "flows" / name
    staging = Path(tempfile.mkdtemp(prefix="collect-"))
    settings = [
        f"openai_base_url={base_url}",
        f"record_dir={staging / 'flows'}",
        "passthrough_options=true",
    ]
    # The key goes in the environment, never on the command line (which any local user reads in `ps`).
    environment = {"OPENAI_API_KEY": api_key} if api_key else {}
    dump = Mitmdump(
        staging, "reverse", *settings, scripts=[ROOT / "collector" / "recorder.py"], environment=environment
    )
    failed: list[str] = []
    try:
        for number, scenario in enumerate(scenarios, 1):
            if fake is not None and scenario.upstream_answer is not None:
                answer = scenario.upstream_answer
                body = answer["body"] if isinstance(answer["body"], str) else json.dumps(answer["body"], indent=2)
                chunks = (
                    [e + b"\n\n" for e in body.encode().split(b"\n\n") if e.strip()]
                    if isinstance(answer["body"], str)
                    else body
                )
                fake.queue(
                    answer["status"],
                    chunks,
                    {
                        "content-type": answer["headers"].get("content-type", "application/json"),
                        **{k: v for k, v in answer["headers"].items() if k.startswith("retry-after")},
                    },
                )
            client = ollama.Client(host=dump.url, headers={SCENARIO_HEADER: scenario.name}, timeout=120)
            http = httpx.Client(base_url=dump.url, headers={SCENARIO_HEADER: scenario.name}, timeout=120)
            started = time.monotonic()
            with http:
                result = run(client, scenario, http)
            saved = (staging / "flows" / f"{scenario.name}.flow").exists()
            failed_call = isinstance(result, dict) and "error" in result and isinstance(result.get("status"), int)
            outcome = f"error {result['status']}" if failed_call else "ok"
            print(
                f"[{number:2}/{len(scenarios)}] {scenario.name:48} {outcome:10} {time.monotonic() - started:6.2f}s"
                f"{'' if saved else '  NOT SAVED'}",
                flush=True,
            )
            if not saved:
                failed.append(scenario.name)
    finally:
        dump.stop()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if (staging / "flows").exists() and merge:
        kept = json.loads((target / MANIFEST).read_text())
        if "sources" in manifest:
            kept.setdefault("sources", {}).update(manifest["sources"])
        for flow in (staging / "flows").glob("*.flow"):
            shutil.copy2(flow, target / flow.name)
            kept.setdefault("added", {})[flow.stem] = now
        (target / MANIFEST).write_text(json.dumps(kept, indent=2) + "\n")
    elif (staging / "flows").exists():
        manifest["recorded_at"] = now
        (staging / "flows" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staging / "flows", target)
    shutil.rmtree(staging, ignore_errors=True)
    print(
        f"{len(scenarios) - len(failed)} of {len(scenarios)} scenarios recorded into {target.relative_to(ROOT)}"
        + (f"; not saved: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="folder under flows/, e.g. llama-server or openai")
    parser.add_argument(
        "--base-url", default=os.environ.get("OPENAI_BASE_URL", ""), help="the upstream (default $OPENAI_BASE_URL)"
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY", ""), help="the upstream key (default $OPENAI_API_KEY)"
    )
    parser.add_argument("--model", default="gemma3", help="the chat model the scenarios use")
    parser.add_argument("--embed-model", default="gemma3-embed", help="the embedding model the scenarios use")
    parser.add_argument(
        "--server", default="", help="what the upstream is (e.g. llama-server b6000, Gemma 3 270M), for the manifest"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated scenario names: record just these into the existing folder"
    )
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}

    def chosen(scenarios: list[Scenario]) -> list[Scenario]:
        unknown = only - {s.name for s in scenarios}
        if unknown:
            parser.error(f"no such scenarios: {', '.join(sorted(unknown))}")
        if only and not (ROOT / "flows" / args.name / MANIFEST).exists():
            parser.error(f"--only adds to an existing folder: flows/{args.name} has no {MANIFEST}")
        return [s for s in scenarios if not only or s.name in only]

    if args.name == "openai-recordings":
        with UpstreamServer() as server:
            scenarios = chosen(recording_scenarios())
            manifest = {
                "scenarios": "recordings",
                "upstream": "tests/fixtures/openai-recordings served by harness/upstream.py",
                "sources": {s.name: s.source for s in scenarios},
            }
            return collect(args.name, scenarios, server.base_url, "", manifest, server.fake, merge=bool(only))
    if not args.base_url:
        parser.error("--base-url or OPENAI_BASE_URL is required")
    manifest = {
        "scenarios": "live",
        "model": args.model,
        "embed_model": args.embed_model,
        "upstream": args.base_url,
        "server": args.server,
    }
    scenarios = chosen(live_scenarios(args.model, args.embed_model))
    return collect(args.name, scenarios, args.base_url, args.api_key, manifest, merge=bool(only))


if __name__ == "__main__":
    sys.exit(main())
