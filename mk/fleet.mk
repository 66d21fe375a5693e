# Containers for the roles: test images, molecule scenarios and a local test fleet (issue 7).
# None of these run in `make test`; each needs root (debootstrap, rootful podman, ip netns).
#
#   make images        build (or reuse) the podman images debian12, debian12-dkms, rhel-like from the Debian
#                      mirror with tests/images/build.sh; rebuilt only when their recipe changes
#                      (cold 4-8 min here by load, cached 0.25 s)
#   make molecule      every molecule scenario under extensions/molecule/ (destroy, create, [prepare],
#                      converge, idempotence, verify, destroy), one after the other, podman driver, local
#                      images, systemd as PID 1, no network: smoke and one per role - signing_key, dkms, mok,
#                      enforce, report, kernel_build. MOLECULE_SCENARIOS="mok enforce" runs a subset.
#                      Time here (2 cores, load 10-30): 4-8 min per scenario, about 30-35 min for all seven.
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
MOLECULE_SCENARIOS ?= $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard extensions/molecule/*/molecule.yml))))

.PHONY: molecule-deps images molecule demo-fleet fleet-up fleet-down bench-fleet

molecule-deps: bootstrap
	@want=$$(sha256sum requirements-molecule.txt | cut -d' ' -f1); \
	if [ "$$(cat $(MOLECULE_STAMP) 2>/dev/null)" != "$$want" ]; then \
	  echo "molecule-deps: installing requirements-molecule.txt into $(VENV)"; \
	  $(VENV)/bin/pip install -q -r requirements-molecule.txt && echo "$$want" > $(MOLECULE_STAMP); \
	fi

images: bootstrap
	$(FLEET_ENV) bash tests/images/build.sh all

# One scenario after the other (not --all), so that a failing one names itself and the rest still run;
# the target fails if any did.
molecule: images molecule-deps
	@failed=""; for s in $(MOLECULE_SCENARIOS); do \
	  start=$$(date +%s); \
	  if $(FLEET_ENV) $(VENV)/bin/molecule test -s $$s; then echo "molecule $$s: passed in $$(( $$(date +%s) - start )) s"; \
	  else echo "molecule $$s: FAILED"; failed="$$failed $$s"; fi; \
	done; [ -z "$$failed" ] || { echo "molecule: failed:$$failed"; exit 1; }

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
