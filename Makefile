# The only entry points: README, .gitlab-ci.yml and Jenkinsfile call these targets and nothing else.
# Every target that needs tools depends on $(READY), so a fresh machine bootstraps itself.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV  ?= .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
READY := $(VENV)/.bootstrap-stamp
# dvc stages call `python`: make it the venv's for every recipe
export PATH := $(abspath $(BIN)):$(PATH)

ifeq ($(origin VENV),file)
$(READY): pyproject.toml constraints.txt system-packages.txt scripts/bootstrap.sh \
	$(wildcard tools/*/package-lock.json) $(wildcard tools/engines/*/go.mod) \
	$(wildcard native/Cargo.* native/*/Cargo.toml native/*/pyproject.toml native/*/*.pyi \
	native/*/src/*.rs)
	scripts/bootstrap.sh
else
# A venv the caller names (VENV=..., as the CI tests do for their scratch copies) is used as it is:
# bootstrapping it from another checkout would build a second 6 GB .venv there, or re-point the
# named venv's editable install at a folder that is about to be deleted.
$(READY):
	@test -x $(PY) || { echo "VENV=$(VENV) has no bin/python; unset VENV to bootstrap .venv" >&2; \
		exit 1; }
endif

.PHONY: help bootstrap engines run pipeline test lint test-no-e2e bench-pipeline bench-run seed-sweep clean

# MODEL: one model of models.yaml, or several space-separated; empty = every model. Every target
# that works on models loops over them (scripts/models.py reads the list).
MODEL ?=
MODELS_CLI := $(PY) -m scripts.models

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

bootstrap: $(READY) ## create .venv and install system and Python packages, build the engines

# Upstream engines (Kubernetes control plane, Argo Rollouts controller, kubeconform) from their Go
# modules in tools/engines/, cached outside the repo; KUBE_APISERVER=/path etc. use prebuilt ones.
engines: ## build the engines of tools/engines/ that are not cached yet (needs Go)
	python3 -m scripts.engines build

run: pipeline ## the main job, for every model (MODEL=<name>: one): data -> model -> manifests -> canary rehearsal -> report
	$(MAKE) --no-print-directory manifests
	$(MAKE) --no-print-directory rehearse
	$(MAKE) --no-print-directory report
	@echo "run: model cards models/*/model_card.md, rehearsals reports/rehearsal/<model>/, report reports/mr/report.md"

pipeline: $(READY) ## dvc repro of each model's pipeline: prepare, validate, train, evaluate, export, register
	$(BIN)/dvc repro $$($(MODELS_CLI) pipelines "$(MODEL)")
	@# a fresh clone's repro skips register (its record is as committed); register it here too
	for s in $$($(MODELS_CLI) unregistered "$(MODEL)"); do $(BIN)/dvc repro -f -s "$$s"; done

lint: $(READY) ## black --check, flake8, mypy --strict; rustfmt --check and clippy on native/
	$(BIN)/black --check --quiet ml scripts tests
	$(BIN)/flake8 ml scripts tests
	$(BIN)/mypy
	cargo fmt --manifest-path native/Cargo.toml --all --check
	cargo clippy --manifest-path native/Cargo.toml --workspace --locked --quiet -- -D warnings

test-no-e2e: $(READY) ## every test not marked e2e (all tiers, minutes), no lint, no coverage
	$(BIN)/pytest -q -m "not e2e"

# The one test command: the README's, .ci/run's and the CI test job's (PYTEST_ARGS narrows it).
test: lint ## every check: lint, then all tests, coverage >= 80% (JUnit in .bench/junit.xml)
	@mkdir -p .bench
	$(BIN)/pytest --cov --cov-report=term --cov-report=xml --junitxml=.bench/junit.xml $(PYTEST_ARGS)

bench-pipeline: $(READY) ## time dvc repro of every model from clean, no-op, one model's change (table)
	$(PY) -m scripts.bench_pipeline

bench-run: $(READY) ## time `make run` for every model in a fresh copy of the repository (table)
	$(PY) -m scripts.bench_pipeline --run

# e.g. MODEL=digits SWEEP_ARGS="--set model.channels=[8,16] --seeds 0,1,2"; ~20 s per model
seed-sweep: $(READY) ## test accuracy of each model over seeds beside its baselines (writes nothing)
	for m in $$($(MODELS_CLI) names "$(MODEL)"); do $(PY) -m scripts.seed_sweep --model $$m $(SWEEP_ARGS); done

clean: ## remove untracked generated outputs (keeps .venv, the DVC cache and git-tracked metrics)
	rm -rf models/*/data/prepared models/*/model.pt models/*/model.onnx models/*/reports/figures .bench
	rm -rf .pytest_cache .mypy_cache .coverage .coverage.* coverage.xml

# ---- Desired state (apps/, rollouts/, clusters/): render, validate, diff, benchmark ------------
# All logic lives in scripts/manifests (python -m scripts.manifests --help) and scripts/gen_schemas.
# `manifests` runs the fast path and the real kubeconform (built by `make engines`; KUBECONFORM=path
# uses another binary) on every target; schemas/ comes from the CRDs of scripts/platform.py.
.PHONY: manifests schemas schemas-check bench-manifests manifests-diff

MANIFEST_REPORTS := .bench/manifests

manifests: $(READY) schemas-check ## render every overlay and cluster, validate strictly + kubeconform (table, JSON, JUnit)
	@mkdir -p $(MANIFEST_REPORTS)
	$(PY) -m scripts.manifests validate --json $(MANIFEST_REPORTS)/validate.json \
		--junit $(MANIFEST_REPORTS)/validate.junit.xml

schemas: $(READY) ## regenerate schemas/ from the CRDs of the pinned platform versions (Go modules)
	$(PY) -m scripts.gen_schemas

schemas-check: $(READY) ## fail when schemas/ differs from what the pinned generator produces
	$(PY) -m scripts.gen_schemas --check

bench-manifests: $(READY) ## per-overlay render+validate times, total (budget 10 s), vs kubectl kustomize
	$(PY) -m scripts.manifests bench --kubectl

manifests-diff: $(READY) ## rendered differences between BASE (default origin/main) and HEAD
	@mkdir -p $(MANIFEST_REPORTS)
	$(PY) -m scripts.manifests diff $${BASE:-origin/main} $${HEAD_REF:-HEAD} \
		--json $(MANIFEST_REPORTS)/diff.json --patch $(MANIFEST_REPORTS)/diff.patch

# ---- CI/CD: what .gitlab-ci.yml and the Jenkinsfile call (one target per job) -----------------
.PHONY: ci-train ci-plan ci-rehearse cml cml-runner report mr-report manifests-ci kubeconform image-build \
	image-scan release promote perf-gate perf-baseline model-pull propose-retrain

CML_CLOUD       ?= aws
CML_REGION      ?= us-west
CML_CLOUD_TYPE  ?= g4dn.xlarge
CML_IDLE        ?= 300
# CML is not in our images (its own are Python 3.8): `make cml` installs the newest 0.20.x from
# npm into the job (Node from Debian's packages). Nothing here can reach it: tests use
# a stand-in.
CML_VERSION     ?= 0.20
CML             ?= cml
IMAGE_KIND      ?= serving
RENDERED        := .bench/manifests/rendered

ci-train: $(READY) ## CI training of the plan's TRAIN_MODELS (default every model): dvc repro --pull, push; RETRAIN=true: new data or seed first (scripts/retrain.py)
	targets="$$($(MODELS_CLI) pipelines --ci train "$(MODEL)")"; \
	if [ -z "$$targets" ]; then echo "ci-train: no model's pipeline changed: nothing to train"; exit 0; fi; \
	if [ "$${RETRAIN:-}" = true ]; then $(PY) -m scripts.retrain "$$($(MODELS_CLI) names --ci train "$(MODEL)")"; fi; \
	$(BIN)/dvc repro --pull $$targets; \
	$(BIN)/dvc push --run-cache $$targets

ci-plan: $(READY) ## CI: which models this pipeline trains and delivers (.bench/ci/plan.env, images.txt)
	$(MODELS_CLI) plan

model-pull: $(READY) ## fetch the plan's models (test split, ONNX) named by dvc.lock from the DVC remote
	for p in $$($(MODELS_CLI) pipelines --ci deliver "$(MODEL)"); do \
	  $(BIN)/dvc pull "$$p:prepare" "$$p:export"; done

ci-rehearse: model-pull rehearse ## CI: the plan's models from the DVC remote (unless trained here), then rehearse

propose-retrain: ## commit the retrained models' lock files and outputs on a branch and open its merge request
	sh scripts/sh/propose_retrain.sh retrain/$${CI_PIPELINE_ID:-local} "$${RETRAIN_REASON:-manual}"

cml: ## CI: install the pinned CML CLI (npm) unless the job already has it
	@# launch-runner needs only Node, not the whole bootstrap (torch): Debian's nodejs/npm
	command -v $(CML) >/dev/null 2>&1 || { command -v npm >/dev/null 2>&1 || { \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }; \
	  npm install -g --no-audit --no-fund "@dvcorg/cml@$(CML_VERSION)"; }

# no --single: CML registers the runner for untagged jobs too, and another job taking a one-job
# runner would leave train pending; the short idle timeout bounds what a cancelled train costs
cml-runner: cml ## register an ephemeral cloud GPU runner (labels cml-gpu) through CML
	$(CML) runner launch --cloud=$(CML_CLOUD) --cloud-region=$(CML_REGION) \
		--cloud-type=$(CML_CLOUD_TYPE) --labels=cml-gpu --idle-timeout=$(CML_IDLE)

report: $(READY) ## merge-request report vs BASE (default: MR target or main): a section per changed model
	$(PY) -m scripts.mr_report $(if $(BASE),--base $(BASE)) $(if $(MODEL),--models "$(MODEL)")

mr-report: $(READY) cml ## build the report, post/update it on the MR with cml, fail if a gate fails
	status=0; $(PY) -m scripts.mr_report $(if $(BASE),--base $(BASE)) || status=$$?; \
	$(CML) comment update reports/mr/report.md --watermark-title="model report" --publish-native; \
	exit $$status

manifests-ci: manifests ## validate, then write the rendered YAML (an artifact for reviewers)
	$(PY) -m scripts.manifests render -o $(RENDERED)

kubeconform: $(READY) ## only the real kubeconform -strict on every rendered target (JUnit)
	@mkdir -p $(MANIFEST_REPORTS)
	$(PY) -m scripts.manifests kubeconform --junit $(MANIFEST_REPORTS)/kubeconform.junit.xml

image-build: ## build+push IMAGE_KIND (serving|trainer) of the plan's models with kaniko (CI image only)
	sh scripts/sh/build_image.sh $(IMAGE_KIND)

image-scan: ## trivy scan of IMAGE_KIND of the plan's models: exit 1 on HIGH/CRITICAL with a fix, 3 if it cannot scan
	sh scripts/sh/scan_image.sh $(IMAGE_KIND)

# In CI (CI=true, set by GitLab and by the Jenkinsfile) the release is made on the default branch's
# tip and pushed inside its transaction; it needs MLFLOW_TRACKING_URI (the team's registry).
release: $(READY) ## TAG=<app>/vX.Y.Z: that app's staging write-back, production branch, alias, CHANGELOG (ALLOW_DOWNGRADE=1: a rollback)
	$(PY) -m scripts.release $(TAG) $(if $(DRY_RUN),--dry-run) $(if $(CI),--push) \
		$(if $(ALLOW_DOWNGRADE),--allow-downgrade)

promote: $(READY) ## TAG=<app>/vX.Y.Z: push release/TAG-production and open its merge request
	$(PY) -m scripts.release $(TAG) --promote

perf-gate: bench-pipeline ## fail on a > 10% serving-latency or pipeline-time regression vs perf/baseline.json
	$(PY) -m scripts.perf_gate

perf-baseline: bench-pipeline ## re-measure and rewrite perf/baseline.json (on a quiet machine)
	$(PY) -m scripts.perf_gate --update

# --- local cluster (scripts/cluster): the real control plane, node agent and Argo Rollouts -------
# `cluster-up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler (tools/engines),
# the platform CRDs at their pinned versions, a node agent running pods as local processes, a real
# Prometheus (kube-prometheus-stack stand-in) and the real Argo Rollouts controller, then returns;
# KUBECONFIG=.cluster/kubeconfig. `canary` runs each model's staging canary (MODEL=<name>: one) of
# models/<name>/model.onnx on it, under load from the model's test split, judged by the real
# controller (exit 0 promoted / 1 aborted / 2 paused / 3 could not run: the first failing model's);
# options through CANARY_ARGS, e.g. CANARY_ARGS="--canary-error-rate 0.1". Reports:
# reports/canary/<name>/.
.PHONY: cluster-up cluster-down cluster-status canary bench-cluster
cluster-up: $(READY) engines ## start the local Kubernetes cluster (real control plane; pods as processes)
	$(PY) -m scripts.cluster up

cluster-down: $(READY) ## stop the local cluster and every process it started
	$(PY) -m scripts.cluster down

cluster-status: $(READY) ## what of the local cluster runs
	$(PY) -m scripts.cluster status

canary: cluster-up ## each model's staging canary judged by the real Argo Rollouts controller, locally
	status=0; for m in $$($(MODELS_CLI) names "$(MODEL)"); do \
	  $(PY) -m scripts.cluster.canary --name $$m $(CANARY_ARGS) \
	    || { code=$$?; [ $$status -ne 0 ] || status=$$code; }; \
	done; exit $$status

# a fresh cluster in a temp folder: cluster-up phases, a healthy canary, the rehearsal beside it
bench-cluster: $(READY) engines ## time cluster-up, the real canary and the rehearsal (targets 30 s, 3 min)
	$(PY) -m scripts.bench_cluster $(BENCH_CLUSTER_ARGS)

# --- Argo CD on the local cluster (scripts/gitops) ------------------------------------------------
# `gitops-up` (after cluster-up): serves GITOPS_REF of this repository under the repoURL of
# clusters/ (https://gitlab.example.com/mlops/gitops.git) from a local git server, runs Argo CD
# (application controller, repo server, ApplicationSet controller, Redis; tools/engines/argocd) as
# processes from its install manifests, applies the root Application and its project once, and
# waits until Argo CD has synced clusters/GITOPS_CLUSTER: every Application Synced and Healthy.
# Helm-chart platform Applications are marked substituted (cluster-up's stand-ins replace them);
# each app's process image serves its model of models.yaml (trained: `make pipeline`).
# Options through GITOPS_ARGS, e.g. GITOPS_ARGS="--time-factor 20 --poll 3" (canaries in ~1 min).
# `bench-gitops`: gitops-up from nothing and a release to the canary's verdict, timed by phase
# (BENCH_GITOPS_ARGS="--repeat 3"); results in .bench/gitops.json.
GITOPS_CLUSTER ?= staging
GITOPS_REF     ?= HEAD
.PHONY: gitops-up gitops-down gitops-status bench-gitops
gitops-up: cluster-up ## Argo CD syncing clusters/$(GITOPS_CLUSTER) from a local git server at GITOPS_REF
	$(PY) -m scripts.gitops up --cluster $(GITOPS_CLUSTER) --ref $(GITOPS_REF) $(GITOPS_ARGS)

gitops-down: $(READY) ## stop Argo CD and the git server; delete what Argo CD created
	$(PY) -m scripts.gitops down

gitops-status: $(READY) ## Argo CD's processes and every Application's sync and health
	$(PY) -m scripts.gitops status

bench-gitops: cluster-up ## time gitops-up's phases and a release's detection, sync and canary (targets 90 s, 3 min)
	$(PY) -m scripts.bench_gitops $(BENCH_GITOPS_ARGS)

# --- canary rehearsal (scripts/rehearsal; owner: the rehearsal tool) -------------------------------
# Each model's candidate (models/<name>/model.onnx) vs stable behind a real Prometheus, judged by
# the AnalysisTemplates of its app's rendered overlay (REHEARSE_OVERLAY, default
# apps/<app>/overlays/staging; only with one MODEL) with Argo Rollouts' semantics, under load drawn
# from the model's own test split. Exit 0 Promoted, 1 Aborted, 2 Paused, 3 could not rehearse
# (the first failing model's code; every model is rehearsed). Reports: reports/rehearsal/<model>/.
# Extra options through REHEARSE_ARGS, e.g. REHEARSE_ARGS="--canary-error-rate 0.1 --keep".
REHEARSE_OVERLAY ?=
.PHONY: rehearse
rehearse: $(READY) ## canary rehearsal of each model's candidate (exit 0 promoted / 1 aborted / 2 paused)
	status=0; for m in $$($(MODELS_CLI) names --ci deliver "$(MODEL)"); do \
	  $(PY) -m scripts.rehearsal --name $$m $(if $(REHEARSE_OVERLAY),--overlay $(REHEARSE_OVERLAY)) \
	    $(REHEARSE_ARGS) || { code=$$?; [ $$status -ne 0 ] || status=$$code; }; \
	done; exit $$status

# --- continuous training (ml/monitoring, scripts/workflows; owner: the monitoring work) --------------
# `drift`: for each model, the drift job on its held-out rows shifted by DRIFT_SHIFT (none, darker,
# brighter, noise, classes; translate for images), labelled by its model.onnx when it exists;
# reports and the textfile metrics land in .bench/drift/<model>/, the retraining decision is a dry
# run. Exit 0 whatever the verdict.
# `workflows`: regenerate what is generated under each app of models.yaml (Argo WorkflowTemplate +
# CronWorkflow from the model's dvc.yaml, Grafana dashboard, the drift CronJob and its params);
# `workflows-check` fails on any difference (tests/workflows runs the same check in `make test`).
DRIFT_SHIFT ?= darker
DRIFT_DIR   := .bench/drift
.PHONY: drift workflows workflows-check
drift: $(READY) ## each model's drift report (JSON, HTML, metrics) on a synthetic DRIFT_SHIFT sample
	for m in $$($(MODELS_CLI) names "$(MODEL)"); do \
	  dir=$$($(MODELS_CLI) field $$m folder); out=$(DRIFT_DIR)/$$m; \
	  $(BIN)/dvc repro "$$dir/dvc.yaml:prepare"; \
	  $(PY) -m ml.monitoring synthetic --params $$dir/params.yaml --shared-params params.yaml \
	    --data $$dir/data/prepared --shift $(DRIFT_SHIFT) --model $$dir/model.onnx \
	    --out $$out/$(DRIFT_SHIFT).npz; \
	  $(PY) -m ml.monitoring drift --params $$dir/params.yaml --shared-params params.yaml \
	    --reference $$dir/data/prepared/train.npz --sample $$out/$(DRIFT_SHIFT).npz --out $$out \
	    --trigger --dry-run --state $$out/retrain-state.json; \
	done

workflows: $(READY) ## regenerate each app's Argo workflows, dashboard and drift CronJob under apps/
	$(PY) -m scripts.workflows

workflows-check: $(READY) ## fail when the generated manifests under apps/ are out of date
	$(PY) -m scripts.workflows --check

# --- model service (ml/serving; owner: the serving work) -----------------------------------------
# `serve`: the service on one model's model.onnx (MODEL, default the first of models.yaml) at
# http://127.0.0.1:$(SERVE_PORT) (env config: see ml/serving/README.md; e.g.
# `make serve MODEL=breast-cancer SERVE_PORT=9000` or FAULT_ERROR_RATE=0.1 make serve).
# `bench-serving`: this service (own HTTP layer, uvicorn, granian; JSON and binary tensors) vs HTTP
# ceilings (own layer, nginx, bare ASGI) vs mlflow / MLServer / KServe, all up at once on loopback,
# loads taken in turn with wrk; then the attack corpus and SIGTERM under load; ~35 min; peers
# install once into .bench/peers-venv, nginx is unpacked into .bench/nginx. Results:
# .bench/serving.json and .bench/serving.md. Not part of `make test` (too long); options through
# BENCH_SERVING_ARGS, e.g. BENCH_SERVING_ARGS="--duration 5 --passes 1 --servers ml-serving,kserve".
# `fuzz-serving`: the raw-bytes fuzzer of tests/serving/test_fuzz.py for FUZZ_SECONDS (default
# 300; `make test` runs it for at most 30 s).
# `lint-docker`: hadolint on the serving and training Dockerfiles (also a test in tests/serving).
SERVE_PORT ?= 8080
FUZZ_SECONDS ?= 300
.PHONY: serve bench-serving fuzz-serving lint-docker
serve: $(READY) ## run the model service on one model's model.onnx (MODEL=<name>, PORT=$(SERVE_PORT), loopback)
	m=$$($(MODELS_CLI) names "$(MODEL)" | cut -d' ' -f1); dir=$$($(MODELS_CLI) field $$m folder); \
	MODEL_DIR=$$dir MODEL_URI=$$dir/model.onnx MODEL_NAME=$$($(MODELS_CLI) field $$m app) \
	  PORT=$(SERVE_PORT) $(PY) -m ml.serving

bench-serving: $(READY) ## benchmark the service against peer model servers (long; not in `make test`)
	$(PY) -m scripts.bench_serving $(BENCH_SERVING_ARGS)

fuzz-serving: $(READY) ## fuzz the model server's HTTP layer with raw bytes for FUZZ_SECONDS
	FUZZ_EXAMPLES=10000000 FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/pytest -q -s -p no:randomly \
		tests/serving/test_fuzz.py

lint-docker: $(READY) ## hadolint the serving and training Dockerfiles
	$(BIN)/hadolint ml/serving/Dockerfile ml/training.Dockerfile
