# manager-operator — developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Shared with hack/tools.sh: built control-plane binaries are cached here, keyed by version.
CACHE_DIR ?= $(HOME)/.cache/manager-operator
export MO_CACHE_DIR := $(CACHE_DIR)
# Where `make run` keeps its persistent local control plane.
RUN_DIR ?= $(CURDIR)/.cache/run
RUN_NAMESPACE ?= mo-demo

VALID_SAMPLES = $(filter-out samples/invalid-%,$(wildcard samples/*.yaml))

.PHONY: help build unit test tools tools-cluster tools-node node-smoke image crds chart chart-test e2e e2e-node reliability soak bench fmt fmt-check lint run run-down clean-cluster

help: ## Show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## Build the operator (debug)
	$(CARGO) build

unit: ## Unit tests only (no control plane needed)
	$(CARGO) test --lib --bins

test: tools tools-node build ## Unit + integration + chart + e2e (host processes, then real pods on real nodes), each against a fresh local control plane
	$(CARGO) test --all-targets --no-run
	hack/with-cluster.sh $(CARGO) test --all-targets --no-fail-fast
	$(CARGO) test --doc --workspace
	hack/with-cluster.sh e2e/chart-test.sh
	hack/with-cluster.sh e2e/e2e.sh
	hack/with-cluster.sh e2e/e2e-node.sh

tools: tools-cluster ## Build etcd, kube-apiserver, kube-controller-manager, kubectl, helm, prometheus, promtool and the client-go elector from Go modules (cached)
	hack/tools-observability.sh
	hack/tools-clientgo.sh

image: ## Build the operator image offline (FROM scratch, static binary) with buildah; writes target/image/manager-operator.tar
	hack/image.sh build

tools-cluster: ## Build only the control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from Go modules (cached)
	hack/tools.sh

tools-node: ## Build kubelet, kube-scheduler and the pause image; install containerd, runc, CNI plugins if missing (for hack/node.sh)
	hack/tools-node.sh

node-smoke: tools-cluster tools-node ## Real kubelet nodes (hack/node.sh, root): hostNetwork pods Ready by probe, kubectl logs
	hack/with-cluster.sh e2e/node-smoke.sh

chart: ## Regenerate the chart's generated files (CRD copy, dashboards, values schema, README values table)
	hack/check-chart-crd.sh --fix
	python3 hack/chart/gen-dashboards.py
	python3 hack/chart/gen-schema.py
	python3 hack/chart/values-table.py

chart-test: tools ## Chart lint/template/server dry-run per value set, schema checks, promtool check+test
	hack/with-cluster.sh e2e/chart-test.sh

e2e: tools tools-node build ## E2E: chart + 2 replicas as processes (RBAC, Prometheus, failover, dashboards), then as pods on 2 kubelet nodes
	hack/with-cluster.sh e2e/e2e.sh
	hack/with-cluster.sh e2e/e2e-node.sh

e2e-node: tools tools-node ## Only the node scenario: make image, 2 kubelet nodes, helm install/upgrade/test/uninstall, pod failover
	hack/with-cluster.sh e2e/e2e-node.sh

reliability: tools build ## Fault-injection tests only (API server/etcd restarts, paused leader, churn, Lease tampering; ~4 min)
	$(CARGO) test --test reliability -- --test-threads=1 --nocapture

soak: tools build ## Long variants: MO_SOAK=1 fault tests (~18 min) and 20,000-case fuzzing of the webhook and `check`
	MO_SOAK=1 $(CARGO) test --test reliability -- --test-threads=1 --nocapture
	PROPTEST_CASES=20000 $(CARGO) test --lib -- webhook::handler::tests cli::check::tests

crds: ## Regenerate crds/managerconfig.yaml from the code
	@mkdir -p crds
	$(CARGO) run -q -- crd > crds/managerconfig.yaml.tmp
	mv crds/managerconfig.yaml.tmp crds/managerconfig.yaml
	hack/check-chart-crd.sh --fix

bench: tools ## Benchmarks (the side-by-side scenarios need Go): rewrites docs/benchmarks.md and bench/results/*.csv; BENCH_QUICK=1 for a few minutes
	bench/run.sh

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check: ## Check formatting
	$(CARGO) fmt --all -- --check

lint: ## Clippy with warnings as errors on the whole workspace: operator, test kit, bench harness (and shellcheck when installed)
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@if command -v shellcheck >/dev/null; then shellcheck -x hack/*.sh hack/lib/*.sh e2e/*.sh e2e/lib/*.sh bench/run.sh bench/peers/build.sh .ci/run; else echo "shellcheck not installed; skipped"; fi

run: tools-cluster build ## Local control plane + CRD + the operator (webhook in URL mode) + one valid and one broken sample
	hack/run-local.sh up $(RUN_DIR)

run-down: ## Stop the operator and the control plane started by `make run`
	hack/run-local.sh down $(RUN_DIR)

clean-cluster: run-down ## Alias of run-down
