# manager-operator — developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Shared with e2e/tools.sh: built control-plane binaries are cached here, keyed by version.
CACHE_DIR ?= $(HOME)/.cache/manager-operator
export MO_CACHE_DIR := $(CACHE_DIR)
# Where `make run` keeps its persistent local control plane.
RUN_DIR ?= $(CURDIR)/.cache/run
RUN_NAMESPACE ?= mo-demo

VALID_SAMPLES = $(filter-out samples/invalid-%,$(wildcard samples/*.yaml))

.PHONY: help build unit test tools crds fmt fmt-check lint run run-down clean-cluster

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## Build the operator (debug)
	$(CARGO) build

unit: ## Unit tests only (no control plane needed)
	$(CARGO) test --lib --bins

test: tools ## Unit + integration tests against a fresh local control plane (started and stopped here)
	$(CARGO) test --all-targets --no-run
	e2e/with-cluster.sh $(CARGO) test --all-targets --no-fail-fast
	$(CARGO) test --doc

tools: ## Build etcd, kube-apiserver, kube-controller-manager, kubectl from Go modules (cached)
	e2e/tools.sh

crds: ## Regenerate crds/managerconfig.yaml from the code
	@mkdir -p crds
	$(CARGO) run -q -- crd > crds/managerconfig.yaml.tmp
	mv crds/managerconfig.yaml.tmp crds/managerconfig.yaml

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check: ## Check formatting
	$(CARGO) fmt --all -- --check

lint: ## Clippy with warnings as errors (and shellcheck when installed)
	$(CARGO) clippy --all-targets -- -D warnings
	@if command -v shellcheck >/dev/null; then shellcheck e2e/*.sh .ci/run; else echo "shellcheck not installed; skipped"; fi

run: tools ## Start a persistent local control plane, install the CRD, apply the valid samples
	e2e/cluster.sh up $(RUN_DIR)
	@set -euo pipefail; \
	source $(RUN_DIR)/env; \
	kubectl="$$MO_BIN_DIR/kubectl --kubeconfig $$KUBECONFIG"; \
	echo "==> installing the CRD (crds/managerconfig.yaml)"; \
	$$kubectl apply --server-side --force-conflicts -f crds/managerconfig.yaml; \
	$$kubectl wait --for=condition=Established --timeout=60s crd/managerconfigs.manager-operator.io; \
	echo "==> namespace $(RUN_NAMESPACE)"; \
	$$kubectl create namespace $(RUN_NAMESPACE) --dry-run=client -o yaml | $$kubectl apply --server-side -f -; \
	for f in $(VALID_SAMPLES); do \
	  echo "==> applying $$f"; \
	  $$kubectl apply --server-side --force-conflicts -n $(RUN_NAMESPACE) -f "$$f"; \
	done; \
	echo; $$kubectl get mc -n $(RUN_NAMESPACE); echo; \
	echo "The control plane keeps running ($$APISERVER_URL). Use it with:"; \
	echo "  source $(RUN_DIR)/env     # sets KUBECONFIG and puts kubectl on PATH"; \
	echo "  kubectl get mc -n $(RUN_NAMESPACE)"; \
	echo "Stop it with: make run-down"

run-down: ## Stop the control plane started by `make run`
	e2e/cluster.sh down $(RUN_DIR)

clean-cluster: run-down ## Alias of run-down
