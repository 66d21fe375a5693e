# skm_mok_enroll's slow suite (owner: MOK).
#   make test-mok   boots Debian's kernel under qemu (TCG) with OVMF firmware and runs skm_mok_enroll
#                   through real ansible-playbook inside the VM against the real mokutil over a real
#                   UEFI variable store (tests/vm/test_mok_vm.py; 5-9 minutes under TCG; needs the Debian
#                   packages qemu-system-x86, ovmf, cpio, busybox-static).
#   make mok-capture  re-record real mokutil output for tests/unit/test_mok.py (tests/vm/captured/).
.PHONY: test-mok mok-capture

test-mok: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider tests/vm/test_mok_vm.py

mok-capture: bootstrap
	$(PY) -m tests.vm.capture_mokutil
