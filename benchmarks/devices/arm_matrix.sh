#!/usr/bin/env bash
# ARM matrix by emulation: run cmunext-check on emulated Cortex-A72 (Raspberry Pi 4 class) and
# Neoverse-N1 (close to the Jetson Orin's Cortex-A78AE) for every device bundle in $WORK/bundles.
# EMULATED TIMES ARE NOT SPEEDS (QEMU user mode is 170-900x slower than the real core): this
# run proves correctness (sha256, preprocessing contract, self-test, agreement, Dice) only.
#
# One documented command (as root, after `python benchmarks/devices/make_bundles.py`):
#     sudo benchmarks/devices/arm_matrix.sh
# Needs: qemu-user-static + binfmt (aarch64 registered with the F flag), debootstrap, chroot.
# The arm64 Debian root is built once (~13 min, ~800 MB) and cached outside the repo:
#   CMUNEXT_ARM_ROOT   (default ~/.cache/cmunext-edge/arm64-bookworm)
#   CMUNEXT_DEVICE_WORK (default ~/.cache/cmunext-edge/devices: bundles/, reports/)
#   CMUNEXT_ARM_CPUS   (default "cortex-a72 neoverse-n1"), CMUNEXT_ARM_BUNDLES (names; default all)
#   CMUNEXT_ARM_ITERS, CMUNEXT_ARM_WARMUP (timed and untimed inferences per check, default 1 and 0),
#   CMUNEXT_ARM_IMAGES (verification images used, default all the bundle carries: 49 for the
#   shipped model, what the INT8 tail claim needs), CMUNEXT_ARM_TIMEOUT (s per check, default 1800;
#   a check stopped by it writes its partial report, marked "interrupted", and exits 143)
#   CMUNEXT_ARM_NO_BUILD=1: skip (exit 0 with a message) instead of building a missing root.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/arm_root.sh"

[ "$(id -u)" = 0 ] || { echo "arm_matrix: needs root (chroot, mount)" >&2; exit 2; }
ls "$WORK"/bundles/*.bundle/bundle.json >/dev/null 2>&1 || {
  echo "arm_matrix: no bundles in $WORK/bundles; run: python benchmarks/devices/make_bundles.py" >&2; exit 2; }

run_matrix() {
  local IMAGES_ARG=(); [ "$IMAGES" = all ] || IMAGES_ARG=(--images "$IMAGES")
  local names=${CMUNEXT_ARM_BUNDLES:-$(cd "$WORK/bundles" && ls -d *.bundle | sed 's/\.bundle$//')}
  local qemu; qemu=$(qemu-aarch64-static --version | head -1)
  for name in $names; do      # bundle by bundle, both CPUs each: the first results cover every CPU
    install_wheel "$WORK/bundles/$name.bundle"
    local PROGRESS=()   # per-image progress with ETA in the logs (bundles made by this version's wheel)
    in_root "$VENV/bin/cmunext-check" --help 2>/dev/null | grep -q -- --progress && PROGRESS=(--progress)
    for cpu in $CPUS; do
      fake_cpuinfo "$cpu"
      mkdir -p "$WORK/reports/$cpu" "$ROOT/opt/bundles/$cpu"
      rm -rf "$ROOT/opt/bundles/$cpu/$name.bundle"
      cp -r "$WORK/bundles/$name.bundle" "$ROOT/opt/bundles/$cpu/"
      rm -f "$ROOT/opt/bundles/$cpu/$name.bundle/device_report.json"
      log "$cpu: cmunext-check $name (emulated; times are not speeds)"
      set +e
      timeout -k 120 "$TIMEOUT" chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$cpu" \
        "$VENV/bin/cmunext-check" "/opt/bundles/$cpu/$name.bundle" --iters "$ITERS" --warmup "$WARMUP" ${IMAGES_ARG[@]+"${IMAGES_ARG[@]}"} ${PROGRESS[@]+"${PROGRESS[@]}"} \
        --label "${LABEL[$cpu]}" --emulated "$qemu user mode, QEMU_CPU=$cpu" \
        2>&1 | tee "$WORK/reports/$cpu/$name.log"
      echo "rc=${PIPESTATUS[0]} cpu=$cpu bundle=$name" | tee -a "$WORK/reports/summary.txt"
      set -e
      cp "$ROOT/opt/bundles/$cpu/$name.bundle/device_report.json" "$WORK/reports/$cpu/$name.json" 2>/dev/null \
        || log "$cpu/$name: no report written"   # a timed-out check's report is partial ("interrupted")
    done
  done
}

build_root
mount_root
setup_python
run_matrix
log "reports in $WORK/reports; merge: cmunext-compare $WORK/reports/*/*.json --out benchmarks/results/devices_arm"
