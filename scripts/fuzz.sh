#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 600) over a corpus
# seeded from ../shared's real model files. Findings (crash-*, leak-*, timeout-*) land in
# fuzz-out/<target>/ and make the script fail.
#   scripts/fuzz.sh 600            # every target, 10 minutes each
#   scripts/fuzz.sh 600 fuzz_pth   # one target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
shared=${RWKV_SHARED:-../shared}
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRWKV_FUZZ=ON -DRWKV_TESTS=OFF >/dev/null
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_pth fuzz_safetensors fuzz_rwkv_cpp_bin fuzz_repack_cache fuzz_tokenizer)
cmake --build build-fuzz --target "${targets[@]}"

seed() {  # seed <target> <corpus dir>: small real files of the target's format
  case $1 in
    fuzz_pth) cp "$shared"/testdata/reference/models/*-bf16.pth "$2"/ ;;
    fuzz_rwkv_cpp_bin) cp "$shared"/testdata/tiny-rwkv/tiny-rwkv-{4v0-660K-FP16,5v1-730K-Q5_1,7v0-834K-Q5_0}.bin "$2"/ ;;
    fuzz_safetensors)  # written by our own converter and quantizer from real checkpoints
      cmake --build build --target rwkv_cli >/dev/null 2>&1 &&
        build/rwkv convert "$shared"/testdata/reference/models/rwkv4-ref-bf16.pth "$2"/rwkv4.safetensors 2>/dev/null &&
        build/rwkv quantize "$shared"/testdata/reference/models/rwkv7-ref-fp32.pth "$2"/rwkv7-i8.safetensors I8 >/dev/null 2>&1 ;;
    fuzz_repack_cache)  # caches of real files; the harness reads 16 bytes of identity first
      cmake --build build --target rwkv_cli >/dev/null 2>&1 &&
        for q in 5v1-730K-Q5_1 7v0-834K-Q5_0; do
          build/rwkv bench "$shared/testdata/tiny-rwkv/tiny-rwkv-$q.bin" --int8-activations \
            --repack-cache "$2/made" --prompt 2 --gen 2 --runs 1 >/dev/null 2>&1
        done &&
        for f in "$2"/made/*.repack; do { head -c 16 /dev/zero; cat "$f"; } >"$2/$(basename "$f")"; done &&
        rm -r "$2/made" ;;
    fuzz_tokenizer)  # the first byte picks the mode (see tests/fuzz/fuzz_tokenizer.cpp)
      for f in "$shared"/testdata/tokenizer/*.txt; do
        for mode in 0 1 3; do { printf "\\$mode"; cat "$f"; } >"$2/$mode-$(basename "$f")"; done
      done
      { printf '\4'; head -300 "$shared"/tokenizers/rwkv_vocab_v20230424.txt; } >"$2/4-vocab.txt"
      printf '\5{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"}}' >"$2/5-tiny.json" ;;
  esac
}

for t in "${targets[@]}"; do
  corpus=fuzz-out/$t/corpus
  mkdir -p "$corpus"
  if [ -d "$shared/testdata" ] && [ -z "$(ls -A "$corpus")" ]; then
    seed "$t" "$corpus" || echo "no seed corpus for $t"
  fi
  echo "fuzzing $t for ${seconds}s"
  build-fuzz/"$t" "$corpus" -max_total_time="$seconds" -max_len=4000000 -rss_limit_mb=4096 \
    -artifact_prefix=fuzz-out/"$t"/ -print_final_stats=1 2>fuzz-out/"$t"/log.txt \
    || { tail -40 fuzz-out/"$t"/log.txt; exit 1; }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" fuzz-out/"$t"/log.txt || true
done
