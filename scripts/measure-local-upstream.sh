#!/usr/bin/env bash
# measure-local-upstream.sh — time to first token, tokens/s and embedding latency of the
# running local upstream (scripts/local-upstream.sh start), measured with curl.
#
#   scripts/measure-local-upstream.sh [BASE_URL]     default http://127.0.0.1:${UPSTREAM_PORT:-8001}/v1
#   N=10 scripts/measure-local-upstream.sh           repetitions (default 5)
#
# TTFT: from sending a streamed chat request until the first SSE chunk with non-empty content.
# tokens/s: usage.completion_tokens / curl time_total of a non-stream 64-token answer.
set -euo pipefail

BASE=${1:-http://127.0.0.1:${UPSTREAM_PORT:-8001}/v1}
N=${N:-5}
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

stream_body='{"model":"gemma3","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}'
chat_body='{"model":"gemma3","messages":[{"role":"user","content":"Write a short story about a cat."}],"max_tokens":64,"temperature":0}'
embed_body='{"model":"gemma3-embed","input":"The sky is blue."}'

for _ in $(seq 1 "$N"); do
  t0=$EPOCHREALTIME first="" done_at="" usage=""
  while IFS= read -r line; do
    if [[ -z $first && $line == *'"content":"'* && $line != *'"content":""'* ]]; then first=$EPOCHREALTIME; fi
    if [[ $line == 'data: [DONE]' ]]; then done_at=$EPOCHREALTIME; fi
    if [[ $line == *'"usage"'* ]]; then usage=${line#data: }; fi
  done < <(curl -sSN "$BASE/chat/completions" -H 'Content-Type: application/json' -d "$stream_body")
  "$PY" - "$t0" "$first" "$done_at" "$usage" <<'EOF'
import json, sys
t0, first, done, usage = sys.argv[1:]
u = json.loads(usage)
print(f"stream      ttft {1000 * (float(first) - float(t0)):6.0f} ms  total {1000 * (float(done) - float(t0)):6.0f} ms"
      f"  {u['usage']['completion_tokens']} tokens  server {u.get('timings', {}).get('predicted_per_second', 0):5.1f} tok/s")
EOF
done

for _ in $(seq 1 "$N"); do
  t=$(curl -sS -o "$tmp/chat.json" -w '%{time_total}' "$BASE/chat/completions" \
    -H 'Content-Type: application/json' -d "$chat_body")
  "$PY" - "$t" "$tmp/chat.json" <<'EOF'
import json, sys
t, path = float(sys.argv[1]), sys.argv[2]
d = json.load(open(path))
n = d["usage"]["completion_tokens"]
print(f"non-stream  {n} tokens in {1000 * t:6.0f} ms  {n / t:5.1f} tok/s end-to-end"
      f"  server {d.get('timings', {}).get('predicted_per_second', 0):5.1f} tok/s")
EOF
done

for _ in $(seq 1 "$N"); do
  curl -sS -o /dev/null -w 'embeddings  %{http_code} in %{time_total} s\n' "$BASE/embeddings" \
    -H 'Content-Type: application/json' -d "$embed_body"
done
