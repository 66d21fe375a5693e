# Secure Boot on Debian's stock signed kernel, MOK enrolled with no one at the console (issue 19).
#   make test-secureboot   builds (or reuses) a disk from Debian's packages only (tests/secureboot/build_image.sh:
#                          debootstrap bookworm, shim-signed, grub-efi-amd64-signed, linux-image-amd64, mokutil,
#                          dkms), boots it under qemu TCG with OVMF_CODE_4M.secboot.fd + OVMF_VARS_4M.ms.fd
#                          (Microsoft's keys), checks "SecureBoot enabled" and lockdown [integrity], stages a
#                          certificate with mokutil --import, and drives the real MokManager over the serial
#                          console three times (fingerprint mismatch -> declined; wrong password -> refused;
#                          right -> enrolled), then checks mokutil --test-key and the kernel keyring.
#                          Rewrites tests/unit/captured_mokmanager/*.json (the screens the unit tests replay).
#   make test-secureboot-norecord   the same, leaving the recorded screens alone.
# Times here (2 cores shared with other jobs, qemu TCG, one vCPU):
#   cold  (no cached disk)  disk build 594 s (debootstrap + kernel, shim, grub, dkms, headers; three initramfs
#                           runs, measured at load ~10) + the warm run: ~18 min at load ~3, ~36 min at load ~15.
#   warm  (disk cached)     8.1 min (486 s) at load ~3: first boot to ssh 50 s; each reboot through MokManager
#                           to ssh 78-133 s (the dialogue itself 37-53 s); DKMS build + module checks ~1.5 min.
#                           At load ~15 (other jobs' VMs and builds): 26.6 min (1599 s), first boot 217-294 s.
#                           Boot-by-boot timings are printed at the end of each run.
# Two such VMs at once starve the firmware: its serial output then drops bytes (titles, menu items); the driver
# tolerates some of that, not all of it. Run one at a time.
# Needs the cached disk under ~/.cache/skm-modsign/secureboot/<recipe-hash>/ (build_image.sh), ~3.3 GB sparse.
# Needs root, debootstrap, qemu-system-x86, ovmf, gdisk, dosfstools, mtools, socat, e2fsprogs; pexpect (PyPI).
.PHONY: test-secureboot test-secureboot-norecord secureboot-image

secureboot-image:
	bash tests/secureboot/build_image.sh

test-secureboot: bootstrap
	$(PY) tests/secureboot/run_secureboot.py

test-secureboot-norecord: bootstrap
	$(PY) tests/secureboot/run_secureboot.py --no-record
