#!/usr/bin/env bash
# Prepares a machine without network access to LLVM downloads (and without CUDA) to build
# `--features cuda`:
#
#   tools/cuda-build-setup.sh            # then: cargo build --release -p rtmdet-cli --features cuda
#
# Why: burn 0.22.1's CUDA backend (cubecl-cuda 0.11) lowers kernels to PTX through LLVM's
# NVPTX target, via `cubecl-llvm`, whose build dependency `tracel-llvm-bundler` downloads an
# LLVM 23.1 bundle from GitHub in its build script. The bundler skips the download when the
# marker `.tracel-llvm-installed` exists in its folder
# `${XDG_DATA_HOME:-~/.local/share}/tracel/tracel-llvm-23.1.0-4/`, and `cubecl-llvm` then links
# LLVM statically from what `bin/llvm-config` there reports. This script fills that folder with
# an `llvm-config` that forwards to Debian's LLVM 22 (`llvm-22-dev`, `libpolly-22-dev`: the
# closest release the distribution ships; its NVPTX output was measured correct, slightly less
# folded than 23's on a small kernel), rewriting the absolute `libz3.so` path it reports into
# `-lz3` (the bundler expects library names).
#
# Installs the Debian packages when run as root with apt; otherwise they must be there.
# Exit codes: 0 ready; 3 the packages are missing and cannot be installed here (nothing else
# is wrong: CI treats this as "cannot check the CUDA build on this machine").
#
# At run time the binary needs no CUDA toolkit: it loads the driver's libcuda, and for exp/tanh
# it needs `libdevice.10.bc` (point CUDA_PATH at a folder holding `nvvm/libdevice/`, e.g. the
# `nvidia-cuda-nvcc-cu12` Python wheel's `nvidia/cuda_nvcc`).
set -euo pipefail

LLVM_MAJOR=22
BUNDLE=tracel-llvm-23.1.0-4
packages=(llvm-${LLVM_MAJOR}-dev libpolly-${LLVM_MAJOR}-dev libzstd-dev libz3-dev)
real_config=/usr/lib/llvm-${LLVM_MAJOR}/bin/llvm-config

if [ ! -x "$real_config" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing ${packages[*]} (Debian)" >&2
    apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null 2>&1; } \
      || { echo "could not install ${packages[*]}" >&2; exit 3; }
  else
    echo "$real_config is missing: install ${packages[*]} (as root: apt-get install ${packages[*]})" >&2
    exit 3
  fi
fi

dir="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/$BUNDLE"
mkdir -p "$dir/bin"
# Written to a temporary name and renamed, so that a build never sees half a script.
cat >"$dir/bin/llvm-config.tmp" <<EOF
#!/bin/sh
# Written by rtmdet-rs tools/cuda-build-setup.sh: LLVM ${LLVM_MAJOR} from Debian standing in
# for the ${BUNDLE} bundle; absolute shared-library paths become -l flags.
$real_config "\$@" | sed -E 's#(^| )/[^ ]*/lib(z3|zstd|xml2|ffi|edit|tinfo)\.so(\.[0-9.]+)?#\1-l\2#g'
EOF
chmod +x "$dir/bin/llvm-config.tmp"
mv "$dir/bin/llvm-config.tmp" "$dir/bin/llvm-config"
touch "$dir/.tracel-llvm-installed"
echo "LLVM ${LLVM_MAJOR} stands in for ${BUNDLE} at $dir" >&2
"$dir/bin/llvm-config" --version >/dev/null
