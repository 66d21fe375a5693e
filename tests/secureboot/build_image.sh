#!/usr/bin/env bash
# Build the Secure Boot test disk from Debian's packages only, and print its path:
#
#   tests/secureboot/build_image.sh          -> ~/.cache/skm-modsign/secureboot/<recipe-hash>/disk.raw
#
# The disk (raw, GPT, made without loop devices or mounts):
#   part 1  ESP (vfat, made with mkfs.vfat + mtools): EFI/BOOT/BOOTX64.EFI = shim-signed's shimx64.efi.signed,
#           EFI/BOOT/mmx64.efi = shim's MokManager, EFI/BOOT/grubx64.efi = grub-efi-amd64-signed's image,
#           EFI/debian/grub.cfg (where Debian's signed GRUB looks: its prefix is /EFI/debian on the device
#           it was loaded from), and Debian's signed vmlinuz + its initrd. No fbx64.efi: shim then starts
#           GRUB directly instead of the fallback loader.
#   part 2  root (ext4 built with `mkfs.ext4 -d` from a debootstrap bookworm tree): systemd, openssh-server,
#           mokutil, keyutils, kmod, python3, dkms + linux-headers-amd64 + gcc/make, and the DKMS source of
#           tests/images/files/skm_hello in /usr/src (not built: the test builds and signs it in the guest).
#           Network by systemd-networkd (DHCP on the virtio NIC). root's authorized_keys comes from qemu's
#           fw_cfg (opt/skm/authorized_keys) at each boot, so the cached disk holds no key.
# Every signed binary is Debian's own; OVMF_CODE_4M.secboot.fd + OVMF_VARS_4M.ms.fd (Microsoft's keys) boot it.
#
# The recipe hash is this script + the skm_hello files; a disk with the same hash is reused. Environment:
# SKM_CACHE (default ~/.cache/skm-modsign), SKM_MIRROR (default: the mirror in /etc/apt/sources.list,
# else http://deb.debian.org/debian). Needs root (debootstrap, chroot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hello="$here/../images/files/skm_hello"
cache_root="${SKM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skm-modsign}/secureboot"
suite=bookworm
root_uuid=5b7e0c3a-9f7e-4d8e-9a59-0c5d2b1f3a11
esp_mib=160
root_mib=3072

default_mirror() {
  local m
  m=$(grep -hoE '^deb +(\[[^]]*\] +)?https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{print $NF}' | head -1) || true
  echo "${m:-http://deb.debian.org/debian}"
}
mirror="${SKM_MIRROR:-$(default_mirror)}"

log() { printf 'secureboot/build_image.sh: %s\n' "$*" >&2; }

recipe_hash() {
  { cat "$0"; echo "$suite $mirror"; (cd "$hello" && find . -type f -print0 | sort -z | xargs -0 sha256sum); } |
    sha256sum | cut -c1-12
}

# Run a command in the tree with /proc, /sys and /dev bound; always unmounts.
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

make_tree() {
  local root=$1
  mkdir -p "$cache_root/debs"
  log "debootstrap $suite from $mirror"
  debootstrap --variant=minbase --cache-dir="$cache_root/debs" \
    --include=systemd-sysv,udev,dbus,kmod,iproute2,procps,openssh-server,python3,sudo,mokutil,keyutils,openssl,ca-certificates,zstd,xz-utils \
    "$suite" "$root" "$mirror" >&2
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  echo "deb $mirror $suite main" > "$root/etc/apt/sources.list"
  # The initrd must find the root disk on virtio (MODULES=most has it) and be small enough for the ESP.
  mkdir -p "$root/etc/initramfs-tools/conf.d"
  echo "COMPRESS=zstd" > "$root/etc/initramfs-tools/conf.d/skm-compress"
  in_root "$root" apt-get update -q >&2
  in_root "$root" apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends \
    linux-image-amd64 initramfs-tools shim-signed grub-efi-amd64-signed \
    dkms linux-headers-amd64 make gcc libc6-dev >&2
  in_root "$root" apt-get clean
  mkdir -p "$root/usr/src/skm_hello-1.0"
  cp "$hello/"* "$root/usr/src/skm_hello-1.0/"
  configure_guest "$root"
}

configure_guest() {
  local root=$1 unit
  echo skm-sb > "$root/etc/hostname"
  : > "$root/etc/machine-id"
  echo "UUID=$root_uuid / ext4 errors=remount-ro 0 1" > "$root/etc/fstab"
  mkdir -p "$root/etc/systemd/network"
  printf '[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\n' > "$root/etc/systemd/network/50-skm.network"
  cat > "$root/etc/ssh/sshd_config.d/skm-test.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF
  cat > "$root/etc/systemd/system/skm-fwcfg-keys.service" <<'EOF'
[Unit]
Description=root's authorized_keys from qemu fw_cfg (opt/skm/authorized_keys)
Before=ssh.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'modprobe qemu_fw_cfg; f=/sys/firmware/qemu_fw_cfg/by_name/opt/skm/authorized_keys/raw; [ -r $f ] || exit 0; install -d -m 0700 /root/.ssh; cat $f > /root/.ssh/authorized_keys; chmod 0600 /root/.ssh/authorized_keys'
[Install]
WantedBy=multi-user.target
EOF
  # Units a short-lived test VM does not need; each costs seconds under TCG.
  for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer \
    dpkg-db-backup.timer systemd-timesyncd.service systemd-networkd-wait-online.service getty@tty1.service; do
    ln -sfn /dev/null "$root/etc/systemd/system/$unit"
  done
  in_root "$root" systemctl enable systemd-networkd.service ssh.service skm-fwcfg-keys.service >&2
  in_root "$root" systemctl set-default multi-user.target >&2
  : > "$root/etc/resolv.conf"
  rm -f "$root"/etc/ssh/ssh_host_* && in_root "$root" ssh-keygen -A >&2
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/*
}

grub_cfg() {
  local kver=$1
  cat <<EOF
set timeout=0
set default=0
menuentry "Debian $kver (Secure Boot test)" {
  linux /vmlinuz-$kver root=UUID=$root_uuid ro console=ttyS0,115200 panic=-1
  initrd /initrd.img-$kver
}
EOF
}

make_esp() {
  local root=$1 esp=$2 kver
  kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)
  rm -f "$esp"
  mkfs.vfat -F 32 -n ESP -C "$esp" $((esp_mib * 1024 - 1024)) >&2
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
  mcopy -i "$esp" "$root/usr/lib/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$esp" "$root/usr/lib/shim/mmx64.efi.signed" ::/EFI/BOOT/mmx64.efi
  mcopy -i "$esp" "$root/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" ::/EFI/BOOT/grubx64.efi
  grub_cfg "$kver" > "$root/tmp/grub.cfg"
  mcopy -i "$esp" "$root/tmp/grub.cfg" ::/EFI/debian/grub.cfg
  mcopy -i "$esp" "$root/tmp/grub.cfg" ::/EFI/BOOT/grub.cfg
  mcopy -i "$esp" "$root/boot/vmlinuz-$kver" "::/vmlinuz-$kver"
  mcopy -i "$esp" "$root/boot/initrd.img-$kver" "::/initrd.img-$kver"
  rm -f "$root/tmp/grub.cfg"
  echo "$kver"
}

assemble_disk() {
  local esp=$1 rootfs=$2 disk=$3
  local esp_start=2048 esp_sectors=$((esp_mib * 2048)) root_start root_sectors=$((root_mib * 2048))
  root_start=$((esp_start + esp_sectors))
  rm -f "$disk"
  truncate -s $(( (root_start + root_sectors + 2048) * 512 )) "$disk"
  sgdisk -n "1:$esp_start:+$esp_sectors" -t 1:ef00 -c 1:ESP \
         -n "2:$root_start:+$root_sectors" -t 2:8304 -c 2:root "$disk" >&2
  dd if="$esp" of="$disk" bs=1M seek=$((esp_start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
  dd if="$rootfs" of="$disk" bs=1M seek=$((root_start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
}

work=
cleanup() {
  [ -n "$work" ] && [ -d "$work" ] || return 0
  local m
  for m in dev sys proc; do umount -R "$work/tree/$m" 2>/dev/null || true; done
  if findmnt -rn -o TARGET | grep -q "^$work/"; then log "still mounted under $work; not removing it"
  else rm -rf "$work"; fi
}
trap cleanup EXIT

main() {
  [ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap, chroot)"; exit 2; }
  local hash dir started=$SECONDS kver
  hash=$(recipe_hash)
  dir="$cache_root/$hash"
  if [ -s "$dir/disk.raw" ]; then log "cached ($dir)"; echo "$dir/disk.raw"; return; fi
  mkdir -p "$cache_root"
  work=$(mktemp -d "$cache_root/build.XXXXXX")
  make_tree "$work/tree"
  kver=$(make_esp "$work/tree" "$work/esp.img")
  log "ext4 root from the tree (kernel $kver)"
  mkfs.ext4 -q -F -L root -U "$root_uuid" -d "$work/tree" "$work/root.img" "${root_mib}M" >&2
  assemble_disk "$work/esp.img" "$work/root.img" "$work/disk.raw"
  mkdir -p "$dir"
  echo "$kver" > "$dir/kernel-version"
  mv "$work/disk.raw" "$dir/disk.raw"
  find "$cache_root" -mindepth 1 -maxdepth 1 -type d -name '????????????' ! -name "$hash" -exec rm -rf {} +
  log "built $dir/disk.raw in $((SECONDS - started)) s"
  echo "$dir/disk.raw"
}

main "$@"
