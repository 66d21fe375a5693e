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
#                           runs), then the run below: about 35 min in all.
#   warm  (disk cached)     first boot to ssh 101 s at load ~7, 217-294 s at load ~15; each reboot through
#                           MokManager to ssh 140-312 s; the whole run (4 boots, 3 MokManager dialogues, DKMS
#                           build in the guest) 26.6 min at load ~15 (1599 s). Boot-by-boot timings are printed.
# Needs the cached disk under ~/.cache/skm-modsign/secureboot/<recipe-hash>/ (build_image.sh), ~3.3 GB sparse.
# Needs root, debootstrap, qemu-system-x86, ovmf, gdisk, dosfstools, mtools, socat, e2fsprogs; pexpect (PyPI).
.PHONY: test-secureboot test-secureboot-norecord secureboot-image

secureboot-image:
	bash tests/secureboot/build_image.sh

test-secureboot: bootstrap
	$(PY) tests/secureboot/run_secureboot.py

test-secureboot-norecord: bootstrap
	$(PY) tests/secureboot/run_secureboot.py --no-record
