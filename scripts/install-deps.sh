#!/usr/bin/env bash
# Installs the Debian packages the build, tests and fuzzers need. Quick when all are present.
set -euo pipefail
packages=(cmake ninja-build g++ libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
          libcli11-dev libfmt-dev clang-14 libclang-rt-14-dev libcpp-httplib-dev pkg-config curl
          libopenblas-dev libopenmpi-dev openmpi-bin gnuplot-nox)
# The PyTorch reference of the training-gradient tests, without recommends (which would pull in
# far more than the CPU library).
no_recommends=(python3-torch python3-numpy)
# The server tests' `openai` client runs on Node.js; a node already installed (from any source)
# is kept, as Debian's npm would replace it.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
updated=""

# install [apt-get flags...] -- packages...: installs those not installed yet.
install() {
  local flags=()
  while [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "installing: ${missing[*]}"
  [ -z "$updated" ] && $sudo apt-get update -qq && updated=1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${flags[@]}" "${missing[@]}" >/dev/null
}

install -- "${packages[@]}"
install --no-install-recommends -- "${no_recommends[@]}"
