# Ansible's own quality gates, fuzzing and the release build (issue 9). Owner: quality.
#
#   make sanity        tests/sanity/run.sh: `ansible-test sanity --venv` on a clean copy of the collection
#                      (build/sanity/ansible_collections/skm/modsign: git's files minus galaxy.yml's
#                      build_ignore); compile/import also on pyenv's Python 3.8 ... 3.13 when present.
#                      First run about 5 min (ansible-test builds its per-test venvs from PyPI into
#                      build/sanity-home), then about 2-3 min. Needs shellcheck (scripts/apt-packages.txt).
#   make units         the same tree, `ansible-test units --local` on tests/unit.
#   make lint          ansible-lint, production profile (.ansible-lint), on roles/, playbooks/ and the
#                      molecule scenarios, plus our rule skm-role-prefix (tests/sanity/lint_rules/, with its
#                      own test first); about 1.5 min.
#   make changelog-lint  antsibull-changelog lint on changelogs/fragments; seconds.
#   make fuzz          atheris, FUZZ_SECONDS (default 60) per target in tests/fuzz/ (trailer parser,
#                      PKCS#7 reader, compression detection/decompression, kconfig parser, sign_module_file
#                      on fuzzed files). `make test` runs each target for a few seconds through
#                      tests/unit/test_fuzz_core.py (which also holds the hypothesis properties).
#   make galaxy-check  tests/integration/test_galaxy_build.py alone: ansible-galaxy collection build +
#                      install into an empty path + a playbook with FQCNs only; about 30 s. Part of
#                      `make test` too.
#   make quality       all of the above.
#
# ansible-lint and antsibull-changelog come from tests/sanity/requirements.txt, installed into .venv on
# first use (they are not in requirements-dev.txt because `make test` does not need them).

QUALITY_STAMP := $(VENV)/.requirements-quality.sha256
FUZZ_SECONDS ?= 60

.PHONY: quality-deps sanity units lint changelog-lint fuzz galaxy-check quality

quality-deps: bootstrap
	@want=$$(sha256sum tests/sanity/requirements.txt | cut -d' ' -f1); \
	if [ "$$(cat $(QUALITY_STAMP) 2>/dev/null)" != "$$want" ]; then \
	  echo "quality-deps: installing tests/sanity/requirements.txt into $(VENV)"; \
	  $(VENV)/bin/pip install -q -r tests/sanity/requirements.txt && echo "$$want" > $(QUALITY_STAMP); \
	fi

sanity: bootstrap
	bash tests/sanity/run.sh

units: bootstrap
	bash tests/sanity/run.sh --units

lint: quality-deps
	$(PY) -m pytest -q -p no:cacheprovider tests/sanity/test_skm_role_prefix.py
	$(VENV)/bin/ansible-lint

changelog-lint: quality-deps
	$(VENV)/bin/antsibull-changelog lint

fuzz: bootstrap
	@mkdir -p build/fuzz
	@for target in tests/fuzz/fuzz_*.py; do \
	  name=$$(basename $$target .py); \
	  echo "fuzz: $$name for $(FUZZ_SECONDS) s (log: build/fuzz/$$name.log)"; \
	  if ! $(PY) $$target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 \
	       -artifact_prefix=build/fuzz/$$name- > build/fuzz/$$name.log 2>&1; then \
	    tail -40 build/fuzz/$$name.log; echo "fuzz: $$name FAILED (input saved as build/fuzz/$$name-crash-*)"; exit 1; \
	  fi; \
	  grep -E '^stat::number_of_executed_units' build/fuzz/$$name.log; \
	done

galaxy-check: bootstrap
	$(PY) -m pytest -q -p no:cacheprovider tests/integration/test_galaxy_build.py

quality: sanity units lint changelog-lint fuzz galaxy-check
