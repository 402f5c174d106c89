# Shared by arm_matrix.sh and arm_embed.sh (sourced): the cached arm64 Debian root, its mounts, the
# fake ARM /proc/cpuinfo per emulated CPU, and the fresh venv holding the bundles' requirements.
# shellcheck shell=bash
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=${CMUNEXT_ARM_ROOT:-$HOME/.cache/cmunext-edge/arm64-bookworm}
WORK=${CMUNEXT_DEVICE_WORK:-$HOME/.cache/cmunext-edge/devices}
CPUS=${CMUNEXT_ARM_CPUS:-"cortex-a72 neoverse-n1"}
ITERS=${CMUNEXT_ARM_ITERS:-1}
WARMUP=${CMUNEXT_ARM_WARMUP:-0}
IMAGES=${CMUNEXT_ARM_IMAGES:-all}
TIMEOUT=${CMUNEXT_ARM_TIMEOUT:-1800}
VENV=/opt/cmunext-venv
declare -A PART=([cortex-a72]=0xd08 [neoverse-n1]=0xd0c [cortex-a76]=0xd0b [cortex-a53]=0xd03)
declare -A LABEL=([cortex-a72]="Cortex-A72 (RPi 4 class)" [neoverse-n1]="Neoverse-N1 (Orin class)"
                  [cortex-a76]="Cortex-A76" [cortex-a53]="Cortex-A53")
log() { echo "[$(basename "$0" .sh) $(date -u +%H:%M:%S)] $*" >&2; }

build_root() {
  if [ -x "$ROOT/usr/bin/apt-get" ] && [ -x "$ROOT/bin/bash" ]; then return; fi
  [ "${CMUNEXT_ARM_NO_BUILD:-0}" = 1 ] && { echo "arm_matrix: SKIPPED: no cached arm64 root at $ROOT"; exit 0; }
  log "building the arm64 root at $ROOT (once, ~13 min)"
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "arm_matrix: binfmt for aarch64 is not registered (apt-get install qemu-user-static binfmt-support)" >&2; exit 2; }
  mkdir -p "$(dirname "$ROOT")"
  debootstrap --arch=arm64 --variant=minbase bookworm "$ROOT"
}

MOUNTED=()
mount_root() {
  for d in proc sys dev; do
    mountpoint -q "$ROOT/$d" && continue
    case $d in proc) mount -t proc proc "$ROOT/proc" ;; *) mount --bind "/$d" "$ROOT/$d" ;; esac
    MOUNTED+=("$ROOT/$d")
  done
}
CPUINFO_MOUNTED=0
cleanup() {   # only what this run mounted: another run may be using the root
  [ "$CPUINFO_MOUNTED" = 1 ] && { umount "$ROOT/proc/cpuinfo" 2>/dev/null || true; }
  for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do umount "${MOUNTED[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

fake_cpuinfo() {   # $1: QEMU cpu name -> bind-mount an ARM /proc/cpuinfo (onnxruntime segfaults without)
  local part=${PART[$1]} f="$ROOT/tmp/cpuinfo.$1"
  : > "$f"
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid%s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: %s\nCPU revision\t: 0\n\n' \
      "$i" "$([ "$1" = cortex-a72 ] || echo ' atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp')" "$part" >> "$f"
  done
  umount "$ROOT/proc/cpuinfo" 2>/dev/null || true
  mount --bind "$f" "$ROOT/proc/cpuinfo"
  CPUINFO_MOUNTED=1
}

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

setup_python() {
  fake_cpuinfo neoverse-n1
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  if ! in_root python3 -c 'import venv, ensurepip' 2>/dev/null; then
    log "installing python3, venv, pip in the root"
    in_root apt-get update -q
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-pip ca-certificates
  fi
  local crt changed=0   # the host's extra CAs (pip's index may sit behind them); rehash only on change
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    cp "$crt" "$ROOT/usr/local/share/ca-certificates/"
    grep -qF "$(sed -n 2p "$crt")" "$ROOT/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || changed=1
  done
  [ $changed = 1 ] && { log "update-ca-certificates in the root"; in_root update-ca-certificates >/dev/null; }
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
  [ -d /etc/xdg/pip ] && mkdir -p "$ROOT/etc/xdg" && cp -r /etc/xdg/pip "$ROOT/etc/xdg/"
  [ -f "$HOME/.config/pip/pip.conf" ] && mkdir -p "$ROOT/root/.config/pip" && cp "$HOME/.config/pip/pip.conf" "$ROOT/root/.config/pip/"
  local reqs
  reqs=$(sed 's/#.*//' "$WORK"/bundles/*.bundle/requirements.txt | awk NF | sort -u | tr '\n' ' ')   # comments dropped
  if ! in_root "$VENV/bin/python" -c 'import numpy, cv2' 2>/dev/null; then
    log "creating $VENV in the root (fresh, no torch)"
    in_root python3 -m venv "$VENV"
  fi
  log "pip install (aarch64 wheels): $reqs"
  in_root "$VENV/bin/pip" install -q --disable-pip-version-check $reqs
  install_wheel "$(ls -d "$WORK"/bundles/*.bundle | head -1)"
  in_root "$VENV/bin/python" -c 'import torch' 2>/dev/null && { echo "arm_matrix: torch present in $VENV" >&2; exit 1; } || true
}

install_wheel() {   # $1: a bundle folder -> its own cmunext-edge wheel in the venv (bundles made at
  local wheel       # different commits carry different code: each check runs its bundle's wheel)
  wheel=$(ls "$1"/wheels/*.whl | head -1)
  cp "$wheel" "$ROOT/tmp/" && in_root "$VENV/bin/pip" install -q --force-reinstall --no-deps "/tmp/$(basename "$wheel")"
}

