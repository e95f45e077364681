# The only entry points: README, .gitlab-ci.yml and Jenkinsfile call these targets and nothing else.
# Every target that needs tools depends on $(READY), so a fresh machine bootstraps itself.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV  := .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
READY := $(VENV)/.bootstrap-stamp
# dvc stages call `python`: make it the venv's for every recipe
export PATH := $(abspath $(BIN)):$(PATH)

$(READY): pyproject.toml constraints.txt system-packages.txt scripts/bootstrap.sh
	scripts/bootstrap.sh

.PHONY: help bootstrap run pipeline test lint unit bench-pipeline clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

bootstrap: $(READY) ## create .venv and install system and Python packages

run: pipeline ## the main job: data -> model -> report -> manifests -> canary rehearsal

pipeline: $(READY) ## dvc repro: prepare, validate, train, evaluate, export, register
	$(BIN)/dvc repro

lint: $(READY) ## black --check, flake8, mypy --strict
	$(BIN)/black --check --quiet ml scripts tests
	$(BIN)/flake8 ml scripts tests
	$(BIN)/mypy

unit: $(READY) ## the fast tests only (no end-to-end runs)
	$(BIN)/pytest -q -m "not e2e"

test: lint $(READY) ## every check: lint, then all tests with coverage >= 80% on ml/ and scripts/
	$(BIN)/pytest --cov --cov-report=term --cov-report=xml

bench-pipeline: $(READY) ## time dvc repro from clean, no-op, and after a train-param change
	$(PY) -m scripts.bench_pipeline

clean: ## remove untracked generated outputs (keeps .venv, the DVC cache and git-tracked metrics)
	rm -rf data/prepared models/model.pt models/model.onnx reports/figures .bench
	rm -rf .pytest_cache .mypy_cache .coverage .coverage.* coverage.xml

# ---- Desired state (apps/, rollouts/, clusters/): render, validate, diff, benchmark ------------
# All logic lives in scripts/manifests (python -m scripts.manifests --help) and scripts/gen_schemas.
.PHONY: manifests schemas schemas-check bench-manifests manifests-diff

MANIFEST_REPORTS := .bench/manifests

manifests: $(READY) schemas-check ## render every overlay and cluster, validate strictly (table + JSON + JUnit)
	@mkdir -p $(MANIFEST_REPORTS)
	$(PY) -m scripts.manifests validate --json $(MANIFEST_REPORTS)/validate.json \
		--junit $(MANIFEST_REPORTS)/validate.junit.xml

schemas: $(READY) ## regenerate schemas/ (CRD JSON schemas) from the pinned npm packages
	$(PY) -m scripts.gen_schemas

schemas-check: $(READY) ## fail when schemas/ differs from what the pinned generator produces
	$(PY) -m scripts.gen_schemas --check

bench-manifests: $(READY) ## per-overlay render+validate times, total (budget 10 s), vs kubectl kustomize
	$(PY) -m scripts.manifests bench --kubectl

manifests-diff: $(READY) ## rendered differences between BASE (default origin/main) and HEAD
	@mkdir -p $(MANIFEST_REPORTS)
	$(PY) -m scripts.manifests diff $${BASE:-origin/main} $${HEAD_REF:-HEAD} \
		--json $(MANIFEST_REPORTS)/diff.json --patch $(MANIFEST_REPORTS)/diff.patch
