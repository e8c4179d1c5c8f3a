#!/usr/bin/env bash
# Aggregate generation throughput of a running `rwkv serve`: CLIENTS concurrent clients each
# send ROUNDS completion requests of MAX_TOKENS tokens (greedy, stop strings off), one after
# another; prints generated tokens / wall seconds. Usage: bench.sh URL CLIENTS [MAX_TOKENS] [ROUNDS]
set -euo pipefail
url=$1 clients=$2 max_tokens=${3:-64} rounds=${4:-1}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s.%N)
for c in $(seq "$clients"); do
  (for r in $(seq "$rounds"); do
     curl -sS --fail-with-body "$url/v1/completions" -H 'Content-Type: application/json' \
       -d "{\"prompt\": \"Client $c round $r: Once upon a time\", \"max_tokens\": $max_tokens, \"temperature\": 0}" \
       | grep -o '"completion_tokens":[0-9]*' | cut -d: -f2
   done >"$out/$c") &
done
wait
end=$(date +%s.%N)
awk -v clients="$clients" -v start="$start" -v end="$end" '{ tokens += $1 }
  END { printf "clients=%d tokens=%d seconds=%.2f tok/s=%.1f\n", clients, tokens, end - start, tokens / (end - start) }' "$out"/*
