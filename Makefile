# Thin wrappers over scripts/: each target runs what CI and the README run.
#
#   make build                      release binaries (banger, bangerd, banger-helper)
#   make test                       the whole suite (what CI runs: scripts/test)
#   sudo make smoke JOBS=4          the two-service install + scenarios (scripts/smoke);
#                                   --no-start is chosen by itself where systemd is not PID 1
#   sudo make bench                 the benchmarks (scripts/bench; BENCH=nat for one)
#   sudo make install OWNER=alice   build, then `banger system install --owner alice`

JOBS ?= 4
OWNER ?= $(SUDO_USER)
export JOBS

.PHONY: build test smoke bench install

build:
	cargo build --release --bins

test:
	scripts/test

smoke:
	scripts/smoke $(SMOKE_ARGS)

bench:
	scripts/bench $(BENCH)

install: build
	cargo run --release --quiet --bin banger -- system install $(if $(OWNER),--owner $(OWNER))
