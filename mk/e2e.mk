# Proof on real kernels (issue 8): `make e2e` runs tests/e2e/run_e2e.py; not part of `make test`.
#
#   make e2e          skm_genkey makes our keys (RSA-3072 for CONFIG_MODULE_SIG_KEY, ECDSA P-384 for
#                     CONFIG_SYSTEM_TRUSTED_KEYS), skm_kconfig writes the signing options (sha512, force, all,
#                     xz + in-kernel decompression) and tests/e2e/kernel.config into a tinyconfig of Debian's
#                     linux-source-6.1, and the kernel's own olddefconfig must keep them; the kernel is built
#                     (or reused), tests/e2e/module is built against it, copies are signed with skm_sign (host
#                     and controller mode) and the kernel, booted under qemu (TCG), loads or rejects each;
#                     then Debian's own kernel boots with module.sig_enforce=1 (Debian-signed vs our key, and
#                     skm_enforce_gate's prediction). One line per case, closing `N passed, N failed`.
#                     Cold (kernel build, -j2): 14 min here on a shared, busy machine (kernel 13 min;
#                     ~3 min idle); warm (cached kernel, keys kept): about 1 min.
#   make e2e-ours     only our kernel;   make e2e-debian   only Debian's kernel.
#   .venv/bin/python -m pytest -s tests/e2e   the same run as `make e2e`, as one pytest test.
#
# The kernel, the source tree and our two keys are cached under $SKM_CACHE (default ~/.cache/skm-modsign)/e2e;
# skm_genkey keeps a key that is there, so the kernel (keyed by the trusted certificates' fingerprints, the
# recipe and the skm_kconfig options) stays valid between runs. Needs root (mknod for the initramfs console).

E2E := $(PY) tests/e2e/run_e2e.py

.PHONY: e2e e2e-ours e2e-debian

e2e: bootstrap
	$(E2E)

e2e-ours: bootstrap
	$(E2E) --part ours

e2e-debian: bootstrap
	$(E2E) --part debian
