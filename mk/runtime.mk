# The running kernel's evidence (issue 18), proven on a real kernel; not part of `make test`.
#   make test-runtime     boots Debian's stock kernel under qemu (TCG) with OVMF (tests/vm/vm.py), runs
#                         skm_kernel_facts inside through real ansible-playbook and holds every answer against
#                         the guest's keyctl, /proc/keys, /sys and dmesg; loads unsigned and foreign-signed
#                         modules with and without sig_enforce (tests/runtime/test_runtime_vm.py); then the
#                         fleet report's browser test (headless chromium, tests/runtime/test_report_browser.py);
#                         and, when `make e2e` has cached its kernel (our certificates built in), that kernel's
#                         evidence read by the same reader (tests/runtime/test_runtime_e2e.py, ~30 s).
#                         Needs qemu-system-x86, ovmf, cpio, busybox-static, keyutils, kmod, chromium.
#                         5-10 min under TCG on a busy 2-core machine.
#   make runtime-capture  the same VM run, also recording the guest into tests/unit/captured_runtime/debian-qemu/,
#                         and the e2e kernel into tests/unit/captured_runtime/e2e-6.1-ours/ (when cached)
.PHONY: test-runtime runtime-capture

test-runtime: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider tests/runtime

runtime-capture: bootstrap
	SKM_RUNTIME_CAPTURE=1 $(PY) -m pytest -q -p no:cacheprovider tests/runtime/test_runtime_vm.py
	$(PY) -m tests.runtime.e2e_capture
