# skm.modsign — the two README commands and the slower suites.
#   make demo   set everything up and run the main job on a local test fleet (podman containers)
#   make demo-local  the same job on one machine: sign Debian's module tree in a scratch directory
#   make test   every test that fits the default run (well under 20 minutes): pytest + the molecule site scenario
# Slow suites: make e2e (real kernel under qemu), make molecule-rest (the other scenarios), make bench.

SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/build/collections
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: bootstrap demo demo-local test test-unit test-integration sanity e2e bench build clean

bootstrap:
	bash scripts/bootstrap.sh

demo: bootstrap
	bash scripts/demo_fleet.sh

demo-local: bootstrap
	bash scripts/demo.sh

# pytest, then the molecule subset (mk/fleet.mk: the site scenario on two local podman images, built while
# pytest runs)
test: bootstrap
	$(MAKE) --no-print-directory molecule-test-images-start
	$(PY) -m pytest -q -n 2 --dist loadfile tests/unit tests/integration
	$(MAKE) --no-print-directory molecule-test

test-unit: bootstrap
	$(PY) -m pytest -q tests/unit

test-integration: bootstrap
	$(PY) -m pytest -q tests/integration

bench: bootstrap
	$(PY) bench/bench_core.py

build: bootstrap
	$(VENV)/bin/ansible-galaxy collection build --force --output-path build/

-include mk/*.mk

clean:
	rm -rf build $(VENV) .pytest_cache
