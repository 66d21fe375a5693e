# skm_sign / skm_module_info: the benchmark of issue 4 (not part of `make test`); see bench/README.md.
#   make bench-sign   whole Debian module tree (~4023 modules) through skm_sign in host mode and
#                     controller mode, idempotent reruns, bytes per module in controller mode, and the
#                     whole tree as .ko.xz against one single-threaded xz process; prints times and
#                     ratios (core, sha512 floor, xz baseline). About 10 minutes on 2 cores.
#                     BENCH_SIGN_ARGS passes options through (e.g. BENCH_SIGN_ARGS="--key p384 --xz 0").
.PHONY: bench-sign
BENCH_SIGN_ARGS ?=
bench-sign: bootstrap
	$(PY) bench/bench_sign.py $(BENCH_SIGN_ARGS)
