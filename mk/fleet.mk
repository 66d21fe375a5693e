# Containers for the roles: test images, molecule scenarios and a local test fleet (issue 7).
# Each needs root (debootstrap, rootful podman, ip netns). `make test` runs molecule-test after pytest.
#
#   make images        build (or reuse) the podman images debian12, debian12-dkms, rhel-like from the Debian
#                      mirror with tests/images/build.sh; rebuilt only when their recipe changes
#                      (cold 4-8 min here by load, cached 0.25 s)
#   make molecule      every molecule scenario under extensions/molecule/ (destroy, create, [prepare],
#                      converge, idempotence, verify, destroy), one after the other, podman driver, local
#                      images, systemd as PID 1, no network: site, smoke and one per role - signing_key, dkms,
#                      mok, enforce, report, kernel_build. MOLECULE_SCENARIOS="mok enforce" runs a subset.
#                      Time here (2 cores): all eight 16.5 min at load ~18 (0.5-2.5 min each), 4-8 min each at load 10-30
#                      two at a time; make molecule-rest 5.5 min at load 1-2.
#   make molecule-test the subset `make test` runs: MOLECULE_TEST (site: playbooks/site.yml over a DKMS EFI-like
#                      host and a RHEL-style host), building only the images it needs (MOLECULE_TEST_IMAGES).
#                      The RHEL-style host needs Fedora's grubby from ../shared/tools/grubby (or $SKM_GRUBBY);
#                      where that is absent, build.sh skips the rhel-like image and site runs without that host,
#                      both saying so (scripts/molecule_run.sh)
#   make molecule-rest every other scenario, most valuable first (what `make test` leaves out; .ci/run runs it).
#                      MOLECULE_DEADLINE=<epoch s>: a scenario starts only if MOLECULE_SLOT (600) s remain
#                      before it; the ones that do not fit are listed as skipped (the target still passes).
#   make demo-fleet    scripts/demo_fleet.sh: images, a fleet of 6 hosts, playbooks/site.yml twice (the second
#                      shows changed=0), the fleet report, fleet down (what `make demo` runs)
#   make fleet-up      start FLEET_SIZE (default 5) hosts with tests/fleet/fleet.sh, each in its own network
#                      namespace, and run the trivial baseline playbook over ssh; inventory in build/fleet/
#   make fleet-down    remove the fleet: containers, network namespaces, bridge and veths
#   make bench-fleet   bench/bench_fleet.py --site: the baseline playbook over 10 and 30 hosts (wall time,
#                      controller peak memory): defaults, forks, pipelining, strategy free, mitogen; then
#                      site.yml first and second run (pipelining, and mitogen), as ratios to the baseline
#                      (60-90 min here; results in build/bench_fleet.json, numbers in tests/fleet/README.md)
#
# podman reads tests/images/containers.conf (runc, cgroupfs, file events, lower ulimits) through
# CONTAINERS_CONF; nothing under /etc is changed. requirements-molecule.txt goes into .venv on top of
# requirements-dev.txt.

FLEET_SIZE ?= 5
FLEET_ENV := CONTAINERS_CONF=$(CURDIR)/tests/images/containers.conf
MOLECULE_STAMP := $(VENV)/.requirements-molecule.sha256
MOLECULE_ALL := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard extensions/molecule/*/molecule.yml))))
MOLECULE_SCENARIOS ?= $(MOLECULE_ALL)
# make test: the whole site playbook (every role of site.yml) on the two images that need the fewest builds.
MOLECULE_TEST := site
MOLECULE_TEST_IMAGES := debian12-dkms rhel-like
# The rest, by value: DKMS signing with the host's key (real rebuild), kernel_build (not in site.yml), enforce on
# three images, host key mode, mok, report, then any other (smoke: the plumbing, which site already exercises).
MOLECULE_REST_ORDER := dkms kernel_build enforce signing_key mok report
MOLECULE_REST := $(filter $(MOLECULE_ALL),$(MOLECULE_REST_ORDER)) \
  $(filter-out $(MOLECULE_TEST) $(MOLECULE_REST_ORDER),$(MOLECULE_ALL))
MOLECULE_DEADLINE ?=
MOLECULE_SLOT ?= 600

.PHONY: molecule-deps images molecule molecule-test-images-start molecule-test molecule-rest demo-fleet fleet-up fleet-down bench-fleet

molecule-deps: bootstrap
	@want=$$(sha256sum requirements-molecule.txt | cut -d' ' -f1); \
	if [ "$$(cat $(MOLECULE_STAMP) 2>/dev/null)" != "$$want" ]; then \
	  echo "molecule-deps: installing requirements-molecule.txt into $(VENV)"; \
	  $(VENV)/bin/pip install -q -r requirements-molecule.txt && echo "$$want" > $(MOLECULE_STAMP); \
	fi

images: bootstrap
	$(FLEET_ENV) bash tests/images/build.sh all

# $(call molecule_run,SCENARIOS): scripts/molecule_run.sh, one scenario after the other (not --all), so that a
# failing one names itself and the rest still run; fails if any did. With MOLECULE_DEADLINE, scenarios that
# would not fit are skipped. Without Fedora's grubby (../shared/tools/grubby, or $SKM_GRUBBY) there is no
# rhel-like image: its hosts are dropped from their scenario (site runs on its DKMS host alone), or the
# scenario is skipped, saying why.
define molecule_run
	@$(FLEET_ENV) MOLECULE_DEADLINE=$(MOLECULE_DEADLINE) MOLECULE_SLOT=$(MOLECULE_SLOT) bash scripts/molecule_run.sh $(1)
endef

molecule: images molecule-deps
	$(call molecule_run,$(MOLECULE_SCENARIOS))

# `make test` starts the build of MOLECULE_TEST_IMAGES in the background while pytest runs (a cold build is
# mostly download and dpkg); molecule-test waits for it, then calls build.sh again (a cache hit, or the
# error in the open). Log: build/molecule-test/images.log.
MOLECULE_TEST_DIR := build/molecule-test

molecule-test-images-start: bootstrap
	@mkdir -p $(MOLECULE_TEST_DIR); \
	$(FLEET_ENV) bash tests/images/build.sh $(MOLECULE_TEST_IMAGES) > $(MOLECULE_TEST_DIR)/images.log 2>&1 & \
	echo $$! > $(MOLECULE_TEST_DIR)/images.pid; \
	echo "images $(MOLECULE_TEST_IMAGES): building in the background ($(MOLECULE_TEST_DIR)/images.log)"

molecule-test: bootstrap molecule-deps
	@pid=$$(cat $(MOLECULE_TEST_DIR)/images.pid 2>/dev/null); \
	if [ -n "$$pid" ] && kill -0 "$$pid" 2>/dev/null; then \
	  echo "images: waiting for the background build ($(MOLECULE_TEST_DIR)/images.log)"; \
	  while kill -0 "$$pid" 2>/dev/null; do sleep 2; done; fi; \
	rm -f $(MOLECULE_TEST_DIR)/images.pid; \
	grep -h -e 'build.sh: .*built in' -e 'build.sh: .*skipped' $(MOLECULE_TEST_DIR)/images.log 2>/dev/null || true
	$(FLEET_ENV) bash tests/images/build.sh $(MOLECULE_TEST_IMAGES)
	$(call molecule_run,$(MOLECULE_TEST))

molecule-rest: images molecule-deps
	$(call molecule_run,$(MOLECULE_REST))

demo-fleet: bootstrap
	bash scripts/demo_fleet.sh

fleet-up: images
	$(FLEET_ENV) bash tests/fleet/fleet.sh up $(FLEET_SIZE)
	$(FLEET_ENV) bash tests/fleet/fleet.sh run $(VENV)/bin/ansible-playbook \
	  -i build/fleet/inventory.ini tests/fleet/baseline.yml

fleet-down:
	$(FLEET_ENV) bash tests/fleet/fleet.sh down

bench-fleet: images molecule-deps
	$(FLEET_ENV) $(PY) bench/bench_fleet.py --site
