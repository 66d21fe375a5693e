#!/usr/bin/env bash
# Build the local podman test images from Debian's package mirror only (no container registry):
#
#   tests/images/build.sh NAME...     NAME: debian12 | debian12-dkms | rhel-like | all
#
# Prints one line per image: "NAME IMAGE-REF". Every image is tagged with the hash of its recipe
# (this script, tests/images/files/ and, for rhel-like, the grubby-bls it installs) and carries it in the
# label skm.recipe; an image whose recipe hash is already in podman's store is not rebuilt. The tag :latest
# points at the newest build.
#
# The images (all boot systemd as PID 1 under `podman run --systemd=always`):
#   debian12       Debian 12 (bookworm) by debootstrap: systemd, python3 (+ cryptography), openssh-server, sudo, kmod, mokutil,
#                  openssl, Debian's kernel (linux-image-amd64: /boot/vmlinuz-*, /lib/modules/*), GRUB layout:
#                  /etc/default/grub and grub2-common's update-grub / grub-mkconfig, and a prepared
#                  /etc/kernel/cmdline (what systemd's kernel-install reads; the container boots nothing,
#                  so update-grub cannot run here: grub-probe finds no device under overlay).
#   debian12-dkms  debian12 + dkms, gcc/make, linux-headers-amd64, and the out-of-tree module skm_hello
#                  (files/skm_hello) built and installed by DKMS for the image's kernel.
#   rhel-like      NOT a Fedora/RHEL userland: no Fedora/RHEL repository is reachable from here and Debian
#                  packages no grubby. It is the debian12 userland with the Fedora/RHEL *boot layout*:
#                  BLS entries in /boot/loader/entries/<machine-id>-<kver>.conf, /etc/kernel/cmdline,
#                  systemd's kernel-install, Debian's build of rpm (empty rpm database), and an
#                  /etc/os-release of the RHEL family (ID=rhel, so Ansible reports os_family RedHat) whose
#                  NAME/VARIANT say what it really is. grubby is Fedora's own: the grubby-bls script of
#                  Fedora's grubby package, a test fixture beside the clone at ../shared/tools/grubby/grubby-bls
#                  (see its README; never copied into this repository) or the file $SKM_GRUBBY, with
#                  grub-common's grub-editenv as grub2-editenv and a /boot/grub2/grubenv. No dnf repository.
#                  Without that script there is no rhel-like image: the build skips it and says why (an image
#                  without grubby would send the enforce role to GRUB, which cannot run in a container).
#
#   tests/images/build.sh --grubby   print the grubby-bls file the rhel-like image takes (rc 0), or say on
#                                    stderr why there is none (rc 1); callers use it to skip rhel-like hosts.
#   tests/images/build.sh --recipe-hash NAME   print the recipe hash (the image tag) NAME would be built with.
#
# Every image has /usr/local/sbin/skm-efi-like (files/skm-efi-like): run inside a container, it gives it
# file-backed UEFI variables that the real mokutil uses (how "EFI-like" hosts are represented).
#
# Containers share the host's running kernel (uname -r is the host's); /lib/modules/<kver> and /boot hold
# Debian's 6.1 kernel, which stands for "the kernel that will boot".
#
# Environment: SKM_IMAGE_CACHE (default ~/.cache/skm-modsign/images) keeps the debootstrap .deb cache and the
# base root filesystem tarball; SKM_MIRROR (default http://deb.debian.org/debian); SKM_GRUBBY (a grubby-bls
# file to use instead of ../shared/tools/grubby/grubby-bls; set, it must be readable).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
grubby_shared="$(cd "$here/../.." && pwd)/../shared/tools/grubby/grubby-bls"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
cache="${SKM_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skm-modsign/images}"
mirror="${SKM_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
repo=localhost/skm-test

# The grubby-bls file the rhel-like image takes: $SKM_GRUBBY when set (an unreadable one is an error, never
# a silent fallback), else ../shared's. Prints its path (rc 0), or why there is none on stderr (rc 1).
grubby_file() {
  if [ -n "${SKM_GRUBBY:-}" ]; then
    [ -f "$SKM_GRUBBY" ] && [ -r "$SKM_GRUBBY" ] && { echo "$SKM_GRUBBY"; return; }
    echo "build.sh: SKM_GRUBBY=$SKM_GRUBBY is not a readable file" >&2; exit 2
  fi
  [ -f "$grubby_shared" ] && [ -r "$grubby_shared" ] && { echo "$grubby_shared"; return; }
  echo "Fedora's grubby from ../shared/tools/grubby (absent: no $grubby_shared; or set SKM_GRUBBY)" >&2
  return 1
}

# The recipe of image NAME: this script, files/, and for rhel-like the grubby-bls it installs.
recipe_hash() {
  local name=$1 grubby=
  [ "$name" != rhel-like ] || grubby=$(grubby_file)
  (cd "$here" && { cat build.sh; find files -type f -print0 | sort -z | xargs -0 sha256sum;
                   [ -z "$grubby" ] || sha256sum < "$grubby"; } | sha256sum | cut -c1-12)
}

log() { printf 'build.sh: %s\n' "$*" >&2; }

# Run a command inside a root filesystem with /proc, /sys and /dev bound; always unmounts.
in_root() {
  local root=$1; shift
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
  mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
  local rc=0
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    LC_ALL=C.UTF-8 HOME=/root "$@" || rc=$?
  umount -R "$root/dev" "$root/sys" "$root/proc"
  return $rc
}

apt_in_root() {
  local root=$1; shift
  [ -n "$(find "$root/var/lib/apt/lists" -mindepth 1 -maxdepth 1 ! -name '*lock*' ! -name '*partial*' 2>/dev/null)" ] ||
    in_root "$root" apt-get update -q >&2
  in_root "$root" apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >&2
  in_root "$root" apt-get clean
}

# Base root filesystem, shared by every image: debootstrap once, kept as a tarball in the cache.
# Sets base_tar. Its cache key is the text of the functions that make it, so changing a variant
# does not repeat the debootstrap.
base_tarball() {
  local hash tarball
  hash=$( { echo "$suite $mirror"; declare -f base_tarball common_setup in_root apt_in_root; } | sha256sum | cut -c1-12)
  tarball="$cache/base-$hash.tar"
  base_tar=$tarball
  if [ -s "$tarball" ]; then return; fi
  mkdir -p "$cache/debs"
  local root; root=$(mktemp -d "$cache/rootfs.XXXXXX")
  work_root=$root
  log "debootstrap $suite from $mirror into $root"
  debootstrap --variant=minbase --cache-dir="$cache/debs" \
    --include=systemd-sysv,dbus,libpam-systemd,python3,openssh-server,sudo,kmod,iproute2,procps,less,openssl,mokutil,ca-certificates,xz-utils,zstd \
    "$suite" "$root" "$mirror" >&2
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # Debian's kernel: the modules tree and vmlinuz the roles audit and configure.
  apt_in_root "$root" linux-image-amd64
  common_setup "$root"
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  rm -rf "$root"; work_root=
  mv "$tarball.tmp" "$tarball"
}

# What every image needs to boot under podman with systemd and accept Ansible over ssh.
common_setup() {
  local root=$1
  echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
  : > "$root/etc/machine-id"                 # systemd makes one per container at boot
  rm -f "$root"/etc/ssh/ssh_host_*           # per-container host keys, made at first start
  mkdir -p "$root/etc/systemd/system/ssh.service.d"
  cat > "$root/etc/systemd/system/ssh.service.d/skm-hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
  cat > "$root/etc/ssh/sshd_config.d/skm-test.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
EOF
  # Units that mean nothing in a container and only slow boots down.
  local unit
  for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
    getty@tty1.service console-getty.service systemd-networkd-wait-online.service \
    systemd-timesyncd.service systemd-logind.service; do
    ln -sfn /dev/null "$root/etc/systemd/system/$unit"
  done
  in_root "$root" systemctl enable ssh.service >&2
  in_root "$root" systemctl set-default multi-user.target >&2
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
}

# The GRUB layout of a Debian host: /etc/default/grub and update-grub.
grub_layout() {
  local root=$1
  apt_in_root "$root" grub2-common
  mkdir -p "$root/boot/grub"
  [ -e "$root/etc/default/grub" ] || cat > "$root/etc/default/grub" <<'EOF'
# skm.modsign test image: the stock Debian defaults.
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
EOF
  mkdir -p "$root/etc/kernel"
  echo "root=UUID=00000000-0000-4000-8000-000000000000 ro quiet" > "$root/etc/kernel/cmdline"
}

# DKMS and the out-of-tree module skm_hello, built for the image's kernel.
dkms_layout() {
  local root=$1 kver
  apt_in_root "$root" dkms linux-headers-amd64 make gcc libc6-dev
  kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)
  mkdir -p "$root/usr/src/skm_hello-1.0"
  cp "$here/files/skm_hello/"* "$root/usr/src/skm_hello-1.0/"
  in_root "$root" dkms add -m skm_hello -v 1.0 >&2
  in_root "$root" dkms install -m skm_hello -v 1.0 -k "$kver" -j 2 >&2
  in_root "$root" dkms status >&2
  # DKMS 3.0 made a signing key of its own (/var/lib/dkms/mok.key) and signed skm_hello with it. A key
  # baked into an image would be shared by every host: drop it. skm_hello stays signed by a key no host
  # has (an "unknown key" to the audit), and DKMS makes a per-host key at its next build, as on a fresh host.
  rm -f "$root/var/lib/dkms/mok.key" "$root/var/lib/dkms/mok.pub"
}

# The Fedora/RHEL boot layout on the Debian userland (see the header for what this is not).
bls_layout() {
  local root=$1 kver
  apt_in_root "$root" rpm grub-common
  kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)
  install -m 0755 "$(grubby_file)" "$root/usr/sbin/grubby"
  ln -sfn grub-editenv "$root/usr/bin/grub2-editenv"
  mkdir -p "$root/boot/grub2"
  in_root "$root" grub-editenv /boot/grub2/grubenv set "saved_entry=skmtest-$kver" >&2
  mkdir -p "$root/boot/loader/entries" "$root/etc/kernel"
  echo "root=UUID=00000000-0000-4000-8000-000000000000 ro crashkernel=auto rhgb quiet" > "$root/etc/kernel/cmdline"
  printf 'layout=bls\n' > "$root/etc/kernel/install.conf"
  # One BLS entry per installed kernel, as grubby/kernel-install write them (the machine-id part of the
  # name is a fixed placeholder; the image has no machine-id of its own).
  cat > "$root/boot/loader/entries/skmtest-$kver.conf" <<EOF
title Red Hat Enterprise Linux-style test image ($kver)
version $kver
linux /vmlinuz-$kver
initrd /initrd.img-$kver
options root=UUID=00000000-0000-4000-8000-000000000000 ro crashkernel=auto rhgb quiet
grub_users \$grub_users
grub_arg --unrestricted
grub_class kernel
EOF
  mkdir -p "$root/etc/default"
  cat > "$root/etc/default/grub" <<'EOF'
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="$(sed 's, release .*$,,g' /etc/system-release)"
GRUB_DEFAULT=saved
GRUB_DISABLE_SUBMENU=true
GRUB_TERMINAL_OUTPUT="console"
GRUB_CMDLINE_LINUX="crashkernel=auto rhgb quiet"
GRUB_DISABLE_RECOVERY="true"
GRUB_ENABLE_BLSCFG=true
EOF
  rm -f "$root/etc/os-release"
  cat > "$root/usr/lib/os-release" <<'EOF'
NAME="RHEL-style test image (Debian 12 userland)"
VERSION="9.4 (skm.modsign test stand-in)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="RHEL-style boot layout on a Debian 12 userland (skm.modsign test image, not Red Hat)"
VARIANT="skm.modsign test image: Debian 12 userland, BLS boot layout, Fedora grubby-bls, no dnf repository"
VARIANT_ID="skm-test"
EOF
  ln -sfn ../usr/lib/os-release "$root/etc/os-release"
  echo "Red Hat Enterprise Linux release 9.4 (skm.modsign test stand-in on Debian 12)" > "$root/etc/redhat-release"
  ln -sfn redhat-release "$root/etc/system-release"
}

build_one() {
  local name=$1 hash=$2
  local ref="$repo/$name:$hash"
  if podman image exists "$ref"; then
    log "$name: cached ($ref)"
    podman tag "$ref" "$repo/$name:latest"
    echo "$name $ref"; return
  fi
  local started=$SECONDS root
  base_tarball
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  work_root=$root
  tar -C "$root" --numeric-owner -xf "$base_tar"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  install -m 0755 "$here/files/skm-efi-like" "$root/usr/local/sbin/skm-efi-like"
  # What the audit and the safety gate need on a managed host (signature verification), as on most real hosts.
  apt_in_root "$root" python3-cryptography
  case $name in
    debian12) grub_layout "$root" ;;
    debian12-dkms) grub_layout "$root"; dkms_layout "$root" ;;
    rhel-like) bls_layout "$root" ;;
  esac
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/*
  : > "$root/etc/resolv.conf"
  log "$name: importing into podman"
  tar -C "$root" --numeric-owner -cf - . | podman import \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL skm.recipe=$hash" --change "LABEL skm.image=$name" \
    - "$ref" >/dev/null
  rm -rf "$root"; work_root=
  podman tag "$ref" "$repo/$name:latest"
  log "$name: built in $((SECONDS - started)) s"
  echo "$name $ref"
}

# A root filesystem being built, removed (after unmounting what in_root bound) if the script stops early.
work_root=
cleanup() {
  [ -n "$work_root" ] && [ -d "$work_root" ] || return 0
  local m
  for m in dev sys proc; do umount -R "$work_root/$m" 2>/dev/null || true; done
  if findmnt -rn -o TARGET | grep -q "^$work_root/"; then
    log "still mounted under $work_root; not removing it"
  else
    rm -rf "$work_root"
  fi
}
trap cleanup EXIT

main() {
  case "${1:-}" in
    --grubby) grubby_file; return ;;
    --recipe-hash) recipe_hash "${2:?usage: build.sh --recipe-hash NAME}"; return ;;
  esac
  [ "$(id -u)" -eq 0 ] || { echo "build.sh: needs root (debootstrap, chroot, rootful podman)" >&2; exit 2; }
  [ $# -gt 0 ] || { sed -n '2,6p' "$0" >&2; exit 2; }
  local names=() name why rc
  for name in "$@"; do
    case $name in
      all) names+=(debian12 debian12-dkms rhel-like) ;;
      debian12|debian12-dkms|rhel-like) names+=("$name") ;;
      *) echo "build.sh: unknown image '$name' (debian12, debian12-dkms, rhel-like, all)" >&2; exit 2 ;;
    esac
  done
  mkdir -p "$cache"
  base_tar=
  for name in "${names[@]}"; do
    if [ "$name" = rhel-like ]; then
      rc=0; why=$(grubby_file 2>&1 >/dev/null) || rc=$?
      [ $rc -ne 2 ] || { echo "$why" >&2; exit 2; }
      [ $rc -eq 0 ] || { log "rhel-like: skipped: the rhel-like image needs $why"; continue; }
    fi
    build_one "$name" "$(recipe_hash "$name")"
  done
  [ -z "$base_tar" ] || find "$cache" -maxdepth 1 -name 'base-*.tar' ! -samefile "$base_tar" -delete
  # Old base tarballs of earlier recipes are dropped (above); old images stay until `podman image prune`.
}

main "$@"
