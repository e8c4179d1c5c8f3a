#!/usr/bin/env bash
# Runs every test: the suite in a release build, the suite again under ASan+UBSan, and a short
# regression run of each fuzz target over its seed corpus. Test data comes from ../shared.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)
# The official `openai` npm client that the server tests drive (versions pinned by the lockfile).
(cd tests/server && npm ci --no-audit --no-fund --loglevel=error)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRWKV_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs"
ctest --test-dir build-asan --output-on-failure -j "$jobs"

scripts/fuzz.sh 20
