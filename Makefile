# SPDX-License-Identifier: GPL-2.0-or-later
# asbb — build, install, demo, test. Run as root on Debian 12 for demo/test/install:
# they install what is missing (apt packages, SLURM's source headers) first.

CARGO      ?= cargo
PREFIX     ?= /usr/local
# SLURM's PluginDir (Debian's default); override for other layouts.
PLUGIN_DIR ?= /usr/lib/x86_64-linux-gnu/slurm-wlm
# Where `make build` stages the plugins under their SLURM names.
STAGE      := target/plugins

.PHONY: all deps build plugins test-plugins cli install demo test test-slurm deb test-core test-faults test-postgres bench bench-slurm clean

all: build

deps:
	bash scripts/install-deps.sh

# The CLIs build anywhere; the plugins need SLURM's headers (deps).
cli:
	$(CARGO) build --release --bins

plugins: deps
	$(CARGO) build --release -p job_submit_asbb -p jobcomp_asbb -p prep_asbb
	mkdir -p $(STAGE)
	# install(1) writes a new inode: a slurmctld that has the old file loaded keeps it.
	install -m 0755 target/release/libjob_submit_asbb.so $(STAGE)/job_submit_asbb.so
	install -m 0755 target/release/libjobcomp_asbb.so $(STAGE)/jobcomp_asbb.so
	install -m 0755 target/release/libprep_asbb.so $(STAGE)/prep_asbb.so

build: cli plugins

# For `make test` only: job_submit with the test-only hook (feature test-hooks: a job
# name that panics, to prove slurmctld survives it), in a target dir of its own so the
# plugins `make build` stages and `make install` installs never have it.
TEST_STAGE := target/test-plugins
test-plugins: plugins
	$(CARGO) build --release -p job_submit_asbb --features job_submit_asbb/test-hooks --target-dir target/test-hooks
	mkdir -p $(TEST_STAGE)
	install -m 0755 target/test-hooks/release/libjob_submit_asbb.so $(TEST_STAGE)/job_submit_asbb.so
	install -m 0755 $(STAGE)/jobcomp_asbb.so $(STAGE)/prep_asbb.so $(TEST_STAGE)/

install: build
	install -d $(DESTDIR)$(PLUGIN_DIR) $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(STAGE)/job_submit_asbb.so $(STAGE)/jobcomp_asbb.so $(STAGE)/prep_asbb.so $(DESTDIR)$(PLUGIN_DIR)/
	install -m 0755 target/release/asbb target/release/asbb-admin $(DESTDIR)$(PREFIX)/bin/
	@echo "installed the plugins into $(PLUGIN_DIR) and asbb, asbb-admin into $(PREFIX)/bin;"
	@echo "restart slurmctld to load them (scontrol reconfigure does not reload a loaded plugin)"

demo: build
	bash scripts/demo.sh

# The SLURM releases besides the host's 22.05 whose end-to-end suites `make test` runs,
# each in a Debian chroot (scripts/slurm-chroot.sh, scripts/test-release.sh).
SLURM_RELEASES ?= 24.11
SLURM ?= 22.05

# Every test: core, CLI and end-to-end against clusters the tests start themselves,
# on the host's SLURM 22.05, beside a private PostgreSQL server (the shared-ledger
# tests); then the end-to-end plugin suites against each newer release.
test: build test-plugins
	bash scripts/with-postgres.sh env ASBB_E2E=1 ASBB_TEST_HOOKS=1 ASBB_PLUGIN_DIR=$(CURDIR)/$(TEST_STAGE) \
		ASBB_BIN_DIR=$(CURDIR)/target/release $(CARGO) test --release -- --test-threads=2
	# The SQLite helpers' own tests (VFS, busy handler): a crate of the workspace.
	$(CARGO) test --release -p asbb-wal-writes
	# The SLURM glue's own unit tests (only the plugin crates build it).
	$(CARGO) test --release --no-default-features --features slurm --lib slurm::
	for r in $(SLURM_RELEASES); do bash scripts/test-release.sh $$r || exit 1; done

# The Debian package for one release: make deb SLURM=24.11 -> target/deb/asbb-slurm24.11_<version>_amd64.deb
deb: build
ifneq ($(SLURM),22.05)
	bash scripts/test-release.sh $(SLURM) --build-only
endif
	bash scripts/make-deb.sh $(SLURM)

# The end-to-end plugin suites against one release: make test-slurm SLURM=24.11
test-slurm: build test-plugins
ifeq ($(SLURM),22.05)
	ASBB_E2E=1 ASBB_TEST_HOOKS=1 ASBB_PLUGIN_DIR=$(CURDIR)/$(TEST_STAGE) ASBB_BIN_DIR=$(CURDIR)/target/release \
		$(CARGO) test --release --test e2e_plugins --test e2e_faults --test e2e_prep -- --test-threads=2
else
	bash scripts/test-release.sh $(SLURM)
endif

# Only the PostgreSQL ledger's tests, which `make test` also runs: the same operations
# on SQLite and PostgreSQL, ledger copy, concurrent writers, the server killed mid-burst,
# and two real clusters sharing one PostgreSQL ledger.
test-postgres: build test-plugins
	bash scripts/with-postgres.sh env ASBB_E2E=1 ASBB_TEST_HOOKS=1 ASBB_PLUGIN_DIR=$(CURDIR)/$(TEST_STAGE) \
		ASBB_BIN_DIR=$(CURDIR)/target/release $(CARGO) test --release --test ledger_props --test ledger_postgres \
		--test e2e_postgres -- --test-threads=2

# Only the fault tests (kill -9, ledger faults), which `make test` also runs.
test-faults: build
	ASBB_E2E=1 ASBB_PLUGIN_DIR=$(CURDIR)/$(STAGE) ASBB_BIN_DIR=$(CURDIR)/target/release \
		$(CARGO) test --release --test e2e_faults -- --test-threads=2

test-core:
	$(CARGO) test --release --lib --test ledger_props --test cli_admin --test grants --test api_http \
		--test learning_sim --test reconcile_core --test fuzz_fields --test cli_reconcile --test simulation \
		--test licences --test alerts --test ledger_wal
	$(CARGO) test --release -p asbb-wal-writes

bench: build
	$(CARGO) bench --bench ledger
	ASBB_PLUGIN_DIR=$(CURDIR)/$(STAGE) $(CARGO) bench --bench slurm_throughput

# The sbatch throughput bench against one release: make bench-slurm SLURM=24.11
bench-slurm: build
ifeq ($(SLURM),22.05)
	ASBB_PLUGIN_DIR=$(CURDIR)/$(STAGE) $(CARGO) bench --bench slurm_throughput
else
	bash scripts/test-release.sh $(SLURM) --bench
endif

clean:
	$(CARGO) clean
