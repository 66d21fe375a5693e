# skm_sign / skm_module_info: the benchmark of issue 4 (not part of `make test`).
#   make bench-sign   whole Debian module tree (~4023 modules) through skm_sign in host mode and
#                     controller mode, idempotent reruns, bytes per module in controller mode, and
#                     1000 xz-compressed modules; prints times and ratios (core, sha512 floor).
#                     Takes several minutes on 2 cores. BENCH_SIGN_ARGS passes options through
#                     (e.g. BENCH_SIGN_ARGS="--key p384 --limit 500").
.PHONY: bench-sign
BENCH_SIGN_ARGS ?= --xz 1000
bench-sign: bootstrap
	$(PY) bench/bench_sign.py $(BENCH_SIGN_ARGS)
