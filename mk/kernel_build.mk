# The kernel_build role's slow suite (owner: kernel_build).
#   make test-kernel-build  every case of tests/integration/test_kernel_build_role.py, including the one where the
#                           kernel's own build judges the prepare step: Debian's linux-source-6.1 (cached), a
#                           tinyconfig and Debian's config, `make olddefconfig` and `make certs/` in O= directories,
#                           the embedded certificate compared with skm_genkey's (a few minutes at -j2); and the
#                           package step on an existing DESTDIR (key withdrawn, key refreshed).
#                           `make test` runs only the cases without a kernel build.
.PHONY: test-kernel-build

test-kernel-build: bootstrap
	SKM_SLOW=1 $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_kernel_build_role.py
