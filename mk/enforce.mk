# enforce role: every test, including the slow ones the default `make test` skips
# (role cases gate-refuses/runtime/absent/check-mode and grubby with $kernelopts, about 4 minutes here).
# The bootloader tests need root (private mount namespaces) and grub-common/grub2-common;
# the grubby cases use Fedora's grubby-bls from ../shared/tools/grubby (or $SKM_GRUBBY) and skip, saying so, without it.
.PHONY: test-enforce
test-enforce: bootstrap
	SKM_SLOW=1 $(PY) -m pytest -q tests/unit/test_cmdline.py tests/unit/test_gate.py \
		tests/integration/test_enforce.py tests/integration/test_enforce_gate.py tests/integration/test_enforce_role.py
