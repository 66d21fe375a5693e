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
# Times (2 shared cores, TCG, load ~8): see TIMINGS below, filled from real runs.
# Needs root, debootstrap, qemu-system-x86, ovmf, gdisk, dosfstools, mtools, socat, e2fsprogs; pexpect (PyPI).
.PHONY: test-secureboot test-secureboot-norecord secureboot-image

secureboot-image:
	bash tests/secureboot/build_image.sh

test-secureboot: bootstrap
	$(PY) tests/secureboot/run_secureboot.py

test-secureboot-norecord: bootstrap
	$(PY) tests/secureboot/run_secureboot.py --no-record
