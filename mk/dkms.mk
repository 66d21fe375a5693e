# The DKMS role's slow suite (owner: DKMS).
#   make test-dkms  every case of tests/integration/test_dkms_role.py, including the ones where the real dkms
#                   (Debian 12: 3.0.10) builds and installs tests/dkms/skm-hello for Debian's kernel: native
#                   signing through the framework.conf.d drop-in, the passphrase wrapper, the POST_BUILD hook
#                   (about 15 s per build on an idle machine; needs root and the packages dkms and
#                   linux-headers-amd64). `make test` runs only the cases without a build.
.PHONY: test-dkms

test-dkms: bootstrap
	SKM_SLOW=1 $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_dkms_role.py
