# skm_kconfig against the real kernel build system (owner: genkey/kconfig).
#   make test-kernel-config   Debian's linux-source-6.1 (apt-get download, unpacked once into the test cache by
#                             tests/lib/kernel_source.py) judges our configs: for every hash 6.1 offers with each
#                             key type Kconfig allows and every module compression, the kernel's own
#                             `make olddefconfig` must keep every value skm_kconfig set, and skm_kconfig run again
#                             on the rewritten config must change nothing; SHA-3 on 6.1 is shown to be dropped
#                             (why skm_kconfig refuses it there). The two Debian-config cases through
#                             ansible-playbook also run in `make test`; this adds the matrix (SKM_SLOW=1).
#                             About 2 minutes with the source cached (first run: + download and unpack).
.PHONY: test-kernel-config

test-kernel-config: bootstrap
	SKM_SLOW=1 $(PY) -m pytest -q -p no:cacheprovider tests/unit/test_kconfig.py tests/integration/test_kconfig_module.py
