# Proof on real kernels (issue 8): `make e2e` runs tests/e2e/run_e2e.py; not part of `make test`.
#
#   make e2e          build (or reuse) a tinyconfig-based kernel from Debian's linux-source-6.1 configured by
#                     skm_kconfig with skm_genkey's keys, build tests/e2e/module against it, sign copies with
#                     skm_sign (host and controller mode), boot it under qemu (TCG) and let it load each;
#                     then boot Debian's own kernel with module.sig_enforce=1 (Debian-signed vs our key,
#                     and skm_enforce_gate's prediction). One line per case, closing `N passed, N failed`.
#                     Cold (kernel build, -j2) about 4-6 min here; warm (cached kernel) about 2 min.
#   make e2e-ours     only our kernel;   make e2e-debian   only Debian's kernel.
#
# The kernel, the source tree and our two trusted keys are cached under $SKM_CACHE (default
# ~/.cache/skm-modsign)/e2e; the kernel is keyed by the trusted certificates' fingerprints and the recipe
# (tests/e2e/kernel.config + the skm_kconfig options). Needs root (mknod for the initramfs console).

E2E := $(PY) tests/e2e/run_e2e.py

.PHONY: e2e e2e-ours e2e-debian

e2e: bootstrap
	$(E2E)

e2e-ours: bootstrap
	$(E2E) --part ours

e2e-debian: bootstrap
	$(E2E) --part debian
