#!/usr/bin/env bash
# Builds the cmunext embed library and example against the active Python environment's OpenVINO
# (the `openvino` wheel ships the C++ headers, libraries and CMake package), with CMake and the
# system C++ compiler. The build log goes to stderr; the last line on stdout is the example's path:
#
#   exe=$(embed/build.sh) && "$exe" model.xml cmunext_edge/samples/busi --out out/embed
#
# Python: $PYTHON if set, else the active virtual environment ($VIRTUAL_ENV), else the
# repository's .venv, else python3 on PATH. Build folder: $BUILD_DIR (default embed/build);
# parallel jobs: $JOBS (default: the core count).
# `embed/build.sh --install DIR` also installs a self-contained DIR/{bin,lib,include}
# (program, library and the OpenVINO runtime libraries a CPU device needs).
# CMUNEXT_SANITIZE=1: an AddressSanitizer + UndefinedBehaviorSanitizer build (RelWithDebInfo) in
# $BUILD_DIR (default embed/build-sanitize), for testing; how to run it is printed (docs/firmware.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
install_dir=""
if [[ "${1:-}" == "--install" ]]; then
    install_dir="${2:?--install needs a folder}"
elif [[ $# -gt 0 ]]; then
    echo "build.sh: error: unknown argument $1 (usage: embed/build.sh [--install DIR])" >&2
    exit 2
fi

if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then py="$VIRTUAL_ENV/bin/python"
elif [[ -x "$here/../.venv/bin/python" ]]; then py="$here/../.venv/bin/python"
else py="python3"
fi
for tool in cmake c++; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build.sh: error: '$tool' not found: install CMake (>= 3.16) and a C++17 compiler (e.g. apt-get install cmake g++, or pip install cmake)" >&2
        exit 2
    fi
done
if ! ov_cmake="$("$py" -c 'import openvino, os; print(os.path.join(os.path.dirname(openvino.__file__), "cmake"))' 2>/dev/null)" \
        || [[ ! -f "$ov_cmake/OpenVINOConfig.cmake" ]]; then
    echo "build.sh: error: $py has no openvino wheel with its CMake package; install it: pip install \"cmunext-edge[openvino]\"" >&2
    exit 2
fi

sanitize=OFF
build_type=Release
default_build="$here/build"
if [[ "${CMUNEXT_SANITIZE:-0}" == "1" ]]; then
    sanitize=ON
    build_type=RelWithDebInfo
    default_build="$here/build-sanitize"
fi
build="${BUILD_DIR:-$default_build}"
generator=()
if command -v ninja >/dev/null 2>&1 && [[ ! -f "$build/CMakeCache.txt" ]]; then generator=(-G Ninja); fi
jobs="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
{
    cmake -S "$here" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE="$build_type" -DOpenVINO_DIR="$ov_cmake" \
        -DCMUNEXT_SANITIZE="$sanitize"
    cmake --build "$build" --parallel "$jobs"
    if [[ -n "$install_dir" ]]; then cmake --install "$build" --prefix "$install_dir"; fi
    if [[ "$sanitize" == ON ]]; then
        echo "build.sh: sanitizer build; run it as:"
        echo "  LD_PRELOAD=$build/libcmunext_nodeepbind.so ASAN_OPTIONS=verify_asan_link_order=0 $build/cmunext_segment ..."
    fi
} >&2
if [[ -n "$install_dir" ]]; then
    echo "$(cd "$install_dir" && pwd)/bin/cmunext_segment"
else
    echo "$build/cmunext_segment"
fi
