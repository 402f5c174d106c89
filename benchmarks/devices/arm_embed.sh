#!/usr/bin/env bash
# The C++ EdgeSegmenter (embed/) on emulated ARM: built with the native compiler inside the arm64
# Debian root against the aarch64 openvino wheel, then `cmunext_segment` run on emulated Cortex-A72
# and Neoverse-N1 for the device matrix's OpenVINO-readable artifacts. EMULATED TIMES ARE NOT
# SPEEDS: this proves the build and the masks (agreement with the host: embed_agreement.py).
#
# As root, after `python benchmarks/devices/make_bundles.py` (artifacts and bundles; the bundles'
# requirements make the root's venv, as for arm_matrix.sh):
#     benchmarks/devices/arm_embed.sh
#     .venv/bin/python benchmarks/devices/embed_agreement.py --out benchmarks/results/embed_arm_<date>
# Environment (beside arm_root.sh's CMUNEXT_ARM_ROOT, CMUNEXT_DEVICE_WORK, CMUNEXT_ARM_CPUS):
#   CMUNEXT_EMBED_ARTIFACTS  names under $WORK/exports (default "ort-fp32 ov-fp32 ov-fp16 ov-int8";
#                            "none": build only)
#   CMUNEXT_EMBED_SKIP_BUILD=1  reuse the build in the root
#   CMUNEXT_EMBED_IMAGES     host folder of images (default the bundled samples, cmunext_edge/samples/busi/images)
# Masks land in $WORK/embed/<cpu>/<artifact>/masks, logs beside them, the build log in $WORK/embed.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/arm_root.sh"
ARTIFACTS=${CMUNEXT_EMBED_ARTIFACTS:-"ort-fp32 ov-fp32 ov-fp16 ov-int8"}
IMAGES_DIR=$(cd "${CMUNEXT_EMBED_IMAGES:-$REPO/cmunext_edge/samples/busi/images}" && pwd)
OUT=$WORK/embed

[ "$(id -u)" = 0 ] || { echo "arm_embed: needs root (chroot, mount)" >&2; exit 2; }
ls "$WORK"/bundles/*.bundle/bundle.json >/dev/null 2>&1 || {
  echo "arm_embed: no bundles in $WORK/bundles; run: python benchmarks/devices/make_bundles.py" >&2; exit 2; }

build_embed() {
  if ! in_root sh -c 'command -v cmake && command -v c++' >/dev/null 2>&1; then
    log "installing cmake and g++ in the root"
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q cmake g++ make >/dev/null
  fi
  rm -rf "$ROOT/opt/embed-src" && mkdir -p "$ROOT/opt/embed-src" "$OUT"
  (cd "$REPO/embed" && tar --exclude=./build -cf - .) | tar -xf - -C "$ROOT/opt/embed-src"
  log "building embed/ natively in the root (emulated; slow)"
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU=neoverse-n1 \
    PYTHON="$VENV/bin/python" BUILD_DIR=/opt/embed-build JOBS="$(nproc)" bash /opt/embed-src/build.sh \
    > "$OUT/build.stdout" 2> "$OUT/build.log" || { tail -20 "$OUT/build.log" >&2; exit 1; }
  log "built: $(tail -1 "$OUT/build.stdout")"
}

run_embed() {
  rm -rf "$ROOT/opt/embed-images" && cp -r "$IMAGES_DIR" "$ROOT/opt/embed-images"
  local imgs=() f   # BUSI names hold spaces: an array, never word splitting
  for f in "$ROOT"/opt/embed-images/*; do imgs+=("/opt/embed-images/${f##*/}"); done
  for name in $ARTIFACTS; do
    local src="$WORK/exports/$name" entry
    entry=$(cd "$src" && ls -- *.xml *.onnx 2>/dev/null | head -1 || true)   # one of the two globs is empty
    [ -n "$entry" ] || { log "$name: no .xml or .onnx in $src (make_bundles.py first)"; continue; }
    rm -rf "$ROOT/opt/embed-art/$name" && mkdir -p "$ROOT/opt/embed-art" && cp -r "$src" "$ROOT/opt/embed-art/$name"
    for cpu in $CPUS; do
      fake_cpuinfo "$cpu"
      local dst="$OUT/$cpu/$name"; rm -rf "$dst" "$ROOT/opt/embed-out"; mkdir -p "$dst"
      log "$cpu: cmunext_segment $name/$entry on ${#imgs[@]} images (emulated; times are not speeds)"
      set +e
      timeout "$TIMEOUT" chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$cpu" \
        /opt/embed-build/cmunext_segment "/opt/embed-art/$name/$entry" "${imgs[@]}" --out /opt/embed-out \
        --times-json /opt/embed-out/times.json > "$dst/run.log" 2>&1
      local rc=$?
      set -e
      echo "rc=$rc cpu=$cpu artifact=$name entry=$entry images=$IMAGES_DIR" | tee -a "$OUT/summary.txt"
      cp -r "$ROOT/opt/embed-out/." "$dst/" 2>/dev/null || log "$cpu/$name: no output"
    done
  done
}

build_root
mount_root
in_root "$VENV/bin/python" -c 'import openvino' 2>/dev/null || setup_python
[ "${CMUNEXT_EMBED_SKIP_BUILD:-0}" = 1 ] && [ -x "$ROOT/opt/embed-build/cmunext_segment" ] || build_embed
[ "$ARTIFACTS" = none ] || run_embed
log "masks in $OUT; agreement: .venv/bin/python benchmarks/devices/embed_agreement.py --out benchmarks/results/embed_arm_<date>"
