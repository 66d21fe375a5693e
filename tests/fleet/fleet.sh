#!/usr/bin/env bash
# A local test fleet: N podman containers (systemd as PID 1, sshd) from the images of tests/images/build.sh,
# each in a network namespace of its own, reached by Ansible over ssh.
#
#   tests/fleet/fleet.sh up N        start hosts skmf-01..skmf-N (replaces a running fleet)
#   tests/fleet/fleet.sh down        remove every container, namespace and link the fleet made
#   tests/fleet/fleet.sh inventory   print the path of the Ansible inventory (INI)
#   tests/fleet/fleet.sh run CMD...  run CMD in the controller namespace, e.g. run ansible-playbook -i INV x.yml
#   tests/fleet/fleet.sh status      list the fleet's containers and namespaces
#
# Network: nothing is added to the machine's own network namespace. `ip netns` namespaces:
#   skmf-ctl   the controller side: bridge br0 with 10.213.0.1/16; Ansible runs here (`fleet.sh run`)
#   skmf-NN    one per host: eth0 = 10.213.X.Y/16, the peer of veth vNN on br0 in skmf-ctl; lo up
# The containers join their namespace with `podman run --network ns:/run/netns/skmf-NN`. The 10.213.0.0/16
# addresses exist only inside these namespaces; no route leads out of them.
#
# Hosts (i = 1..N): image by turn debian12, debian12-dkms (DKMS and the out-of-tree module skm_hello),
# rhel-like (BLS layout, os_family RedHat, Fedora's grubby; see tests/images/build.sh for what it is not). Where
# Fedora's grubby (../shared/tools/grubby, or $SKM_GRUBBY) is absent there is no rhel-like image: the default
# fleet then turns between the other two, and `up` says so.
# Even-numbered hosts are "EFI-like": containers have no EFI (podman masks /sys/firmware), so the image's
# skm-efi-like (tests/images/files/skm-efi-like) puts their UEFI variables in a plain directory,
# /var/lib/skm-fleet/efivars/, in efivarfs' file format (4 bytes of attributes, then the data):
# SecureBoot=1, SetupMode=0 at start. /etc/environment sets EFIVARFS_PATH=/var/lib/skm-fleet/efivars/, which
# Debian's libefivar (and so the real mokutil) honours for a directory that is not efivarfs; sshd's pam_env
# puts it in every Ansible session (over molecule's podman connection, set it with `environment:`). `mokutil --import`
# then writes MokNew/MokAuth there, `--list-new` / `--test-key` read them back; nothing applies them, as
# there is no reboot into shim's MokManager. Odd hosts have no such directory: mokutil says
# "EFI variables are not supported on this system", as on a BIOS machine.
#
# State (ssh key made at `up`, known_hosts from ssh-keyscan, inventory): $SKM_FLEET_DIR, default build/fleet.
# Environment: SKM_FLEET_IMAGES (default "debian12 debian12-dkms rhel-like"), SKM_FLEET_PARALLEL (default 4).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$project/tests/images/containers.conf}"
state="${SKM_FLEET_DIR:-$project/build/fleet}"
read -r -a images <<< "${SKM_FLEET_IMAGES:-debian12 debian12-dkms rhel-like}"
parallel="${SKM_FLEET_PARALLEL:-4}"
ctl=skmf-ctl
label=skm.fleet=1
efivars=/var/lib/skm-fleet/efivars/

log() { printf 'fleet: %s\n' "$*" >&2; }

host_name() { printf 'skmf-%02d\n' "$1"; }
host_addr() { echo "10.213.$(($1 / 200)).$(($1 % 200 + 10))"; }
host_image() { echo "${images[$((($1 - 1) % ${#images[@]}))]}"; }
host_efi_like() { [ $(($1 % 2)) -eq 0 ]; }

# systemd as PID 1 takes ~4 inotify instances per container from root's per-user limit
# (fs.inotify.max_user_instances, 128 by default): near 30 containers it runs out and systemd stalls before sshd
# starts. `up` raises the limit when it is too low for the fleet (never lowers it); `down` puts back the value it found.
inotify_limit=/proc/sys/fs/inotify/max_user_instances
raise_inotify_limit() {
  local want=$(($1 * 8 + 256)) current
  current=$(cat "$inotify_limit")
  [ "$current" -lt "$want" ] || return 0
  [ -f "$state/inotify_instances.orig" ] || echo "$current" > "$state/inotify_instances.orig"
  echo "$want" > "$inotify_limit"
  log "fs.inotify.max_user_instances $current -> $want for $1 containers (down puts $current back)"
}
restore_inotify_limit() {
  [ -f "$state/inotify_instances.orig" ] || return 0
  cat "$state/inotify_instances.orig" > "$inotify_limit"
  rm -f "$state/inotify_instances.orig"
}

fleet_down() {
  local c ns
  for c in $(podman ps -a --filter "label=$label" --format '{{.Names}}'); do
    podman rm -f -t 3 "$c" >/dev/null &
  done
  wait
  for ns in $(ip netns list | awk '$1 ~ /^skmf-[0-9]+$/ {print $1}'); do ip netns delete "$ns"; done
  if ip netns list | awk '{print $1}' | grep -qx "$ctl"; then ip netns delete "$ctl"; fi
  rm -f "$state/inventory.ini" "$state/known_hosts" "$state/hosts"
  restore_inotify_limit
}

# Namespaces, bridge and veths for hosts 1..n.
network_up() {
  local n=$1 i name
  ip netns add "$ctl"
  ip -n "$ctl" link set lo up
  ip -n "$ctl" link add br0 type bridge
  ip -n "$ctl" addr add 10.213.0.1/16 dev br0
  ip -n "$ctl" link set br0 up
  for ((i = 1; i <= n; i++)); do
    name=$(host_name "$i")
    ip netns add "$name"
    ip -n "$ctl" link add "v$i" type veth peer name eth0 netns "$name"
    ip -n "$ctl" link set "v$i" master br0 up
    ip -n "$name" addr add "$(host_addr "$i")/16" dev eth0
    ip -n "$name" link set eth0 up
    ip -n "$name" link set lo up
  done
}

# One container; run in the background by fleet_up.
start_host() {
  local i=$1 name image
  name=$(host_name "$i")
  image="localhost/skm-test/$(host_image "$i"):latest"
  podman run -d --name "$name" --hostname "$name" --label "$label" --systemd=always \
    --network "ns:/run/netns/$name" \
    -v "$state/id_ed25519.pub:/root/.ssh/authorized_keys:ro" \
    "$image" >/dev/null
  if host_efi_like "$i"; then podman exec "$name" /usr/local/sbin/skm-efi-like 1; fi
}

write_inventory() {
  local n=$1 i name image
  {
    echo "# skm.modsign local test fleet: made by tests/fleet/fleet.sh up $n; run Ansible with fleet.sh run."
    echo "[fleet]"
    for ((i = 1; i <= n; i++)); do
      name=$(host_name "$i"); image=$(host_image "$i")
      printf '%s ansible_host=%s skm_fleet_image=%s skm_fleet_efi_like=%s\n' "$name" "$(host_addr "$i")" \
        "$image" "$(host_efi_like "$i" && echo true || echo false)"
    done
    for group in "${images[@]}" efi_like; do
      echo; echo "[${group//-/_}]"
      for ((i = 1; i <= n; i++)); do
        if [ "$group" = efi_like ]; then host_efi_like "$i" || continue
        else [ "$(host_image "$i")" = "$group" ] || continue; fi
        host_name "$i"
      done
    done
    # The boot configuration each kind of host can honestly have in a container (which boots nothing):
    # update-grub cannot run here (grub-probe finds no device under overlay), so the Debian hosts' command
    # line is kept in /etc/kernel/cmdline (kernel_install: what systemd's kernel-install reads; GRUB's own
    # grub.cfg is not touched). rhel-like hosts use Fedora's grubby (the image always has it) on their BLS entries.
    echo
    echo "[debian12:vars]"
    echo "skm_enforce_bootloader=kernel_install"
    echo "[debian12_dkms:vars]"
    echo "skm_enforce_bootloader=kernel_install"
    echo "[rhel_like:vars]"
    echo "skm_enforce_bootloader=grubby"
    echo
    echo "[efi_like:vars]"
    echo "skm_fleet_efivars_path=$efivars"
    # podman's seccomp profile filters keyctl, so mokutil cannot read the kernel keyrings (the host's) here.
    echo "skm_mok_ignore_keyring=true"
    echo
    echo "[fleet:vars]"
    echo "ansible_user=root"
    echo "ansible_python_interpreter=/usr/bin/python3"
    echo "ansible_ssh_private_key_file=$state/id_ed25519"
    echo "ansible_ssh_common_args='-o UserKnownHostsFile=$state/known_hosts -o StrictHostKeyChecking=yes -o ControlMaster=auto -o ControlPersist=120s'"
  } > "$state/inventory.ini.tmp"
  mv "$state/inventory.ini.tmp" "$state/inventory.ini"
}

# Wait until every host's sshd answers, and keep the host keys it offers.
wait_for_ssh() {
  local n=$1 deadline=$((SECONDS + 180)) i pending
  : > "$state/known_hosts"
  pending=$(for ((i = 1; i <= n; i++)); do host_addr "$i"; done)
  while [ -n "$pending" ]; do
    [ $SECONDS -lt $deadline ] || { log "sshd did not answer on: $pending"; return 1; }
    # shellcheck disable=SC2086
    ip netns exec "$ctl" ssh-keyscan -T 2 -t ed25519 $pending 2>/dev/null >> "$state/known_hosts" || true
    pending=$(for a in $pending; do grep -q "^$a " "$state/known_hosts" || echo "$a"; done)
    [ -z "$pending" ] || sleep 1
  done
}

# There is a rhel-like image only where Fedora's grubby is (tests/images/build.sh --grubby). Without it the
# default fleet has no rhel-like hosts, said here; a SKM_FLEET_IMAGES that asks for them is an error.
drop_rhel_like_without_grubby() {
  local why rc=0 image kept=()
  why=$(bash "$project/tests/images/build.sh" --grubby 2>&1 >/dev/null) || rc=$?
  [ $rc -ne 0 ] || return 0
  [ $rc -eq 1 ] || { log "$why"; exit 2; }
  [[ " ${images[*]} " == *" rhel-like "* ]] || return 0
  if [ -n "${SKM_FLEET_IMAGES:-}" ]; then log "up: SKM_FLEET_IMAGES has rhel-like, whose image needs $why"; exit 1; fi
  for image in "${images[@]}"; do [ "$image" = rhel-like ] || kept+=("$image"); done
  images=("${kept[@]}")
  log "rhel-like hosts skipped: rhel-like host needs $why"
}

fleet_up() {
  local n=$1 i started=$SECONDS
  if ! { [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 999 ]; }; then log "up: N must be 1..999"; exit 2; fi
  drop_rhel_like_without_grubby
  local image
  for image in "${images[@]}"; do
    podman image exists "localhost/skm-test/$image:latest" ||
      { log "image skm-test/$image missing: run tests/images/build.sh $image (or make images)"; exit 1; }
  done
  fleet_down
  mkdir -p "$state"
  rm -f "$state/id_ed25519" "$state/id_ed25519.pub"
  ssh-keygen -q -t ed25519 -N '' -C "skm-fleet@$(hostname)" -f "$state/id_ed25519"
  chmod 0644 "$state/id_ed25519.pub"
  raise_inotify_limit "$n"
  network_up "$n"
  log "network ready for $n hosts in $((SECONDS - started)) s"
  for ((i = 1; i <= n; i++)); do
    start_host "$i" &
    if (( i % parallel == 0 )); then wait; fi
  done
  wait
  log "containers started in $((SECONDS - started)) s"
  wait_for_ssh "$n"
  write_inventory "$n"
  echo "$n" > "$state/hosts"
  log "$n hosts up in $((SECONDS - started)) s; inventory $state/inventory.ini"
}

fleet_status() {
  podman ps -a --filter "label=$label" --format '{{.Names}} {{.Image}} {{.Status}}'
  ip netns list | awk '$1 ~ /^skmf-/ {print "netns", $1}'
}

main() {
  [ "$(id -u)" -eq 0 ] || { log "needs root (ip netns, rootful podman)"; exit 2; }
  case "${1:-}" in
    up) [ $# -eq 2 ] || { log "usage: fleet.sh up N"; exit 2; }; fleet_up "$2" ;;
    down) local started=$SECONDS; fleet_down; log "down in $((SECONDS - started)) s" ;;
    inventory) [ -s "$state/inventory.ini" ] || { log "no fleet is up"; exit 1; }; echo "$state/inventory.ini" ;;
    run) shift; [ $# -gt 0 ] || { log "usage: fleet.sh run CMD..."; exit 2; }; exec ip netns exec "$ctl" "$@" ;;
    status) fleet_status ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
  esac
}

main "$@"
