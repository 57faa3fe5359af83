# semops-data: `make run` sets up and runs the pipeline; `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# The page `dvc plots show/diff` fill (.dvc/config's plots.html_template): Vega, Vega-Lite and
# vega-embed inline, from the installed vl-convert-python, so the plots draw with no network.
PLOTS_TEMPLATE := .dvc/plots.html
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000
# `make lab`: Jupyter Lab over the repository, on loopback: the dev container forwards 8888 from
# there (VS Code tunnels a forwarded port into the container). LAB_HOST=0.0.0.0 opens it wider.
LAB_HOST ?= 127.0.0.1
LAB_PORT ?= 8888
# `make services`: Jupyter Lab and the MLflow UI in the background, each in a session of its own
# (the dev container starts them on start); their logs (the lab's holds its token) and process ids
SERVICES := .services
SERVICES_WAIT ?= 120
# `make serve`: the champion MLflow Model of params.yaml's data set, as a REST endpoint
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 5001
# `make server`: the team MLflow server on PostgreSQL; beyond loopback only with ALLOW_REMOTE=1,
# AUTH=1 for basic auth (admin: MLFLOW_TRACKING_USERNAME/PASSWORD from the environment or .env)
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5050
# Extra pip index for torch on machines without a GPU (e.g. PyTorch's CPU wheel index): PyPI's
# Linux torch wheel is the CUDA build. Empty: use pip's configured indexes.
TORCH_INDEX_URL ?=
EXTRAS ?= mlops,research,scale,notebooks,dev
CHROMIUM ?= /usr/bin/chromium
# `make remote`: the DVC remote's name (URL=... is its address)
REMOTE_NAME = $(or $(NAME),team)
# Hydra overrides for `make params/repro/run`, e.g. make run O='data=churn model=gbdt'
O ?=
# `make show`: experiments with their test metrics and the params that differ, best first
SHOW_DROP := Created|State|Executor|.*clean\.json.*|.*split\..*|baseline_logreg\..*|lift_over_baseline\..*|test_rows|epochs_run|best_.*|data/.*|reports/.*|src/.*|stages/.*|data\..*|featurize\..*|evaluate\..*|tracking\..*|train\.(threads|early_stopping\..*|epochs)|model\.(amp|device|weight_decay)

ifneq (,$(wildcard .env))
include .env
export
endif
export PATH := $(BIN):$(PATH)

.PHONY: help setup browser params run repro exp show report screenshot remote push pull ui lab services services-stop serve server server-stop server-status postgres mirror predict ask test reliability lint bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# A .venv that links to another checkout's environment (the test suite's project copies, a
# worktree) is that checkout's to install: installing here would point its editable install at
# this copy.
ifeq ($(shell test -L $(VENV) && echo link),link)
$(STAMP):
	@true
else
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "setup: NVIDIA GPU found, installing CUDA torch"; \
		$(BIN)/pip install -q -c constraints.txt torch; \
	else \
		echo "setup: no GPU: torch from $(if $(TORCH_INDEX_URL),$(TORCH_INDEX_URL),pip's indexes; on a plain PyPI that is the CUDA build: set TORCH_INDEX_URL to PyTorch's CPU wheel index)"; \
		$(BIN)/pip install -q -c constraints.txt $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)) torch; \
	fi
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	@# On a GPU the local embedder runs on onnxruntime-gpu (PyPI's newest is 1.31.1, beside
	@# onnxruntime 1.32.0). Both wheels provide the onnxruntime module: never install both, and
	@# remove both first (removing one deletes the files the other shares).
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/pip uninstall -y -q onnxruntime onnxruntime-gpu; \
		$(BIN)/pip install -q -c constraints.txt onnxruntime-gpu==$(ORT_GPU_VERSION); \
	fi
	@# Docling pulls PyPI's torchvision, which fails to load beside a CPU torch ("operator
	@# torchvision::nms does not exist") and then breaks every transformers model import. Nothing
	@# here uses torchvision (Docling's layout models are not used offline): drop it where broken.
	@$(BIN)/python -c "import torchvision" 2>/dev/null || $(BIN)/pip uninstall -y -q torchvision
	@touch $@
endif

ORT_GPU_VERSION ?= 1.31.1

$(PLOTS_TEMPLATE): $(STAMP) src/semops/reporting/vega.py
	@$(BIN)/python -m semops.reporting.vega $@

setup: $(STAMP) $(PLOTS_TEMPLATE) ## Create .venv and install the project (CPU torch where there is no GPU), write the offline plots page

browser: ## Install Debian's Chromium (web ingest renders pages in it; its tests need it)
	@command -v $(CHROMIUM) >/dev/null 2>&1 && echo "browser: $$($(CHROMIUM) --version)" || { \
		echo "browser: installing Debian's chromium with apt-get (the web tests render pages in it)"; \
		APT="$$([ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get"; \
		$$APT install -y -q chromium || { $$APT update -q && $$APT install -y -q chromium; }; }

params: $(STAMP) $(PLOTS_TEMPLATE) ## Compose conf/ (+ overrides O='key=value ...') into params.yaml, validated
	@$(BIN)/semops compose $(O)

repro: params ## Compose params, then run the stages whose inputs changed
	@$(BIN)/dvc repro

run: repro ## Set up, run the whole pipeline on the bundled data, print test metrics
	@$(BIN)/semops report

exp: $(STAMP) ## A small example sweep: three models, queued and run, then compared
	$(BIN)/dvc exp run --queue -S 'model=mlp,logreg,gbdt'
	$(BIN)/dvc exp run --run-all
	@$(MAKE) -s show

show: $(STAMP) ## Experiments side by side: test metrics and the params that differ, best first
	@$(BIN)/dvc exp show --no-pager --only-changed --drop '$(SHOW_DROP)' --sort-by test.roc_auc --sort-order desc

report: $(STAMP) ## One HTML page of the results that opens offline (reports/index.html): metrics, plots, experiments, data, research index, pipeline
	@$(BIN)/semops report --html --drop '$(SHOW_DROP)'

screenshot: report browser ## The README's picture of the report (docs/images/report.png), drawn offline in Chromium
	@mkdir -p docs/images
	@$(BIN)/python tests/browserkit.py reports/index.html docs/images/report.png

remote: $(STAMP) ## The team's DVC remote, the default: make remote URL=webdav://host/dav|/shared/dir [NAME=team] [REMOTE_USER=you]
	@test -n "$(URL)" || { echo 'usage: make remote URL=webdav://host/path|ssh://host/path|/shared/folder [NAME=team] [REMOTE_USER=you] (password: DVC_REMOTE_PASSWORD, e.g. in .env)' >&2; exit 2; }
	@# .dvc/config is committed: a password in the URL would be too, so it goes to the git-ignored
	@# .dvc/config.local, read from the environment (never a command's arguments, which ps shows).
	@if [[ '$(URL)' =~ ^[A-Za-z0-9+.-]+://[^/@]*:[^/@]*@ ]]; then echo 'make remote: refused a URL with a password (user:password@; .dvc/config is committed): give REMOTE_USER=you and DVC_REMOTE_PASSWORD in the environment or .env instead' >&2; exit 2; fi
	$(BIN)/dvc remote add -d --force $(REMOTE_NAME) '$(URL)'
	@# 0600 before any line of it is written (DVC keeps the mode of a file it rewrites).
	@test -e .dvc/config.local || install -m 600 /dev/null .dvc/config.local
	$(if $(REMOTE_USER),$(BIN)/dvc remote modify --local $(REMOTE_NAME) user '$(REMOTE_USER)')
	@if [ -n "$$DVC_REMOTE_PASSWORD" ]; then \
		$(BIN)/python -c 'import os, configobj; from semops.io import write_bytes; c = configobj.ConfigObj(".dvc/config.local"); c.filename = None; c.setdefault("remote \"$(REMOTE_NAME)\"", {})["password"] = os.environ["DVC_REMOTE_PASSWORD"]; write_bytes(".dvc/config.local", "\n".join(c.write()).encode() + b"\n", mode=0o600)' && \
		echo "remote: $(REMOTE_NAME)'s password from DVC_REMOTE_PASSWORD -> .dvc/config.local (git-ignored, 0600)"; fi

push: $(STAMP) ## Share this commit's data, models and embedding store on the DVC remote (dvc add the store, dvc push)
	@# The embedding store is no stage output (README: "The embedding store"): dvc add tracks it.
	@# research-embed adds and merges its files as it runs: push when no pipeline or queued
	@# experiment is running (a dvc repro here holds DVC's lock; queued ones run in copies).
	@if [ -d data/research/embeddings ]; then $(BIN)/dvc add -q data/research/embeddings; fi
	$(BIN)/dvc push
	@git status --porcelain -- dvc.lock reports data/research/embeddings.dvc | grep -q . && \
		echo "push: commit dvc.lock, reports/ and data/research/embeddings.dvc (git add ...; git commit; git push) so teammates get what was pushed" || true

pull: $(STAMP) ## Fetch this commit's data, models and embedding store from the DVC remote (then dvc repro runs nothing)
	$(BIN)/dvc pull

ui: $(STAMP) ## MLflow UI on 127.0.0.1:5000 over mlruns/ (every run, plots, model)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db \
		--default-artifact-root ./mlruns/artifacts --host $(UI_HOST) --port $(UI_PORT) --workers 1

lab: $(STAMP) ## Jupyter Lab on 127.0.0.1:8888 over the repository: prints its URL with the token (JUPYTER_TOKEN, else a new one); Ctrl-C stops it
	@# The token reaches Jupyter through its environment, not its command line (which ps shows).
	@# Jupyter refuses to run as root without --allow-root: containers often run as root. -y: Ctrl-C
	@# stops it at once, as it stops `make ui` (no "Shut down this Jupyter server?" prompt).
	@token=$${JUPYTER_TOKEN:-$$($(BIN)/python -c 'import secrets; print(secrets.token_hex(24))')} && \
	echo "lab: Jupyter Lab on http://$(LAB_HOST):$(LAB_PORT)/lab?token=$$token" && \
	JUPYTER_TOKEN=$$token exec $(BIN)/jupyter lab --no-browser --ip='$(LAB_HOST)' --port='$(LAB_PORT)' \
		--ServerApp.port_retries=0 --ServerApp.root_dir='$(CURDIR)' -y $(if $(filter 0,$(shell id -u)),--allow-root)

# A started service's record: its process id, the boot and its start time (clock ticks after boot,
# field 22 of /proc/<pid>/stat), as semops.tracking.processes.same_process tells a recorded process
# from a later one that took its id (after a restart or a reboot, ids come again).
PROCESS_RECORD = record() { echo "$$1 $$(cat /proc/sys/kernel/random/boot_id) $$(sed 's/.*) //' /proc/$$1/stat 2>/dev/null | cut -d' ' -f20)"; }

# $(call start_service,TARGET,HOST,PORT): `make TARGET` in a session of its own, detached from this
# shell (a dev container's postStartCommand ends with it), unless the one recorded runs; then wait
# until HOST:PORT accepts connections.
define start_service
$(PROCESS_RECORD); rec=$$(cat $(SERVICES)/$(1).pid 2>/dev/null); pid=$${rec%% *}; \
	if [ -n "$$pid" ] && [ "$$rec" = "$$(record $$pid)" ]; then \
		echo "services: $(1) runs already (process group $$pid)"; \
	else \
		setsid nohup $(MAKE) -s $(1) </dev/null >$(SERVICES)/$(1).log 2>&1 & pid=$$!; \
		record $$pid >$(SERVICES)/$(1).pid; \
	fi; \
	for i in $$(seq $(SERVICES_WAIT)); do \
		(exec 3<>/dev/tcp/$(2)/$(3)) 2>/dev/null && exit 0; \
		kill -0 $$pid 2>/dev/null || break; sleep 1; \
	done; \
	echo "services: $(1) is not serving on $(2):$(3); the end of $(SERVICES)/$(1).log:" >&2; \
	tail -n 20 $(SERVICES)/$(1).log >&2; exit 1
endef

services: $(STAMP) ## Start Jupyter Lab and the MLflow UI in the background (the dev container does on start; logs in .services/); prints their URLs
	@install -d -m 700 $(SERVICES)
	@$(call start_service,lab,$(LAB_HOST),$(LAB_PORT))
	@$(call start_service,ui,$(UI_HOST),$(UI_PORT))
	@grep -m1 '^lab: ' $(SERVICES)/lab.log
	@echo "ui: MLflow UI on http://$(UI_HOST):$(UI_PORT)"
	@echo "services: logs in $(SERVICES)/; make services-stop stops them"

services-stop: ## Stop Jupyter Lab and the MLflow UI that `make services` started (nothing of them left running)
	@# A process group runs while one of its members is no zombie (state Z: ended, not yet reaped).
	@$(PROCESS_RECORD); for service in lab ui; do \
		rec=$$(cat $(SERVICES)/$$service.pid 2>/dev/null) || continue; pid=$${rec%% *}; \
		rm -f $(SERVICES)/$$service.pid; \
		[ "$$rec" = "$$(record $$pid)" ] || continue; \
		kill -TERM -- -$$pid; \
		for i in $$(seq 100); do \
			cat /proc/[0-9]*/stat 2>/dev/null | awk -v g=$$pid '{ sub(/.*\) /, "") } $$3 == g && $$1 != "Z" { n++ } END { exit !n }' || break; \
			sleep 0.2; \
		done; \
		kill -KILL -- -$$pid 2>/dev/null; \
		echo "services: stopped $$service (process group $$pid)"; \
	done

serve: $(STAMP) ## Serve models:/<experiment>-<data set>@champion on 127.0.0.1:5001 (POST raw rows to /invocations)
	@name=$$($(BIN)/python -c 'from semops.tracking.registry import params_model_name; print(params_model_name())') && \
	uri=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db} && \
	echo "serve: models:/$$name@champion on http://$(SERVE_HOST):$(SERVE_PORT)/invocations" && \
	MLFLOW_TRACKING_URI=$$uri MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false exec $(BIN)/mlflow models serve -m "models:/$$name@champion" \
		--env-manager local --host $(SERVE_HOST) --port $(SERVE_PORT)

server: $(STAMP) $(if $(MLFLOW_BACKEND_STORE_URI),,postgres) ## Start the team MLflow server on PostgreSQL (mlruns/server/); prints its URL and how to stop it
	@$(BIN)/semops server start --host '$(SERVER_HOST)' --port '$(SERVER_PORT)' $(if $(ALLOW_REMOTE),--allow-remote) $(if $(AUTH),--auth) $(if $(WORKERS),--workers '$(WORKERS)')

server-stop: $(STAMP) ## Stop the team MLflow server and its PostgreSQL (nothing left running)
	@$(BIN)/semops server stop

server-status: $(STAMP) ## Where the team MLflow server listens and whether it runs (exit 3: not running)
	@$(BIN)/semops server status

postgres: ## Install Debian's PostgreSQL unless present (the team server and its tests run it)
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 && echo "postgres: $$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)" || { \
		echo "postgres: installing Debian's postgresql with apt-get (the team server and its tests run it)"; \
		APT="$$([ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get"; \
		$$APT install -y -q postgresql || { $$APT update -q && $$APT install -y -q postgresql; }; }

mirror: $(STAMP) ## Mirror results that could not reach MLflow; TO=URI: also copy the local store there, once
	@$(BIN)/semops mirror $(if $(TO),--to '$(TO)')

predict: $(STAMP) ## Score raw rows: make predict IN=rows.csv OUT=predictions.parquet [MODEL=models:/NAME@champion]
	@test -n "$(IN)" -a -n "$(OUT)" || { echo 'usage: make predict IN=rows.{csv,parquet} OUT=predictions.{parquet,csv} [MODEL=...]' >&2; exit 2; }
	@$(BIN)/semops predict --input "$(IN)" --output "$(OUT)" $(if $(MODEL),--model "$(MODEL)")

ask: $(STAMP) ## Ask the research index with citations: make ask Q="How do I copy an object?"
	@test -n "$(Q)" || { echo 'usage: make ask Q="your question"' >&2; exit 2; }
	@$(BIN)/semops research ask "$(Q)"

test: $(STAMP) browser postgres ## Run the test suite, reliability suite included (installs Chromium and PostgreSQL first; fails if no test ran)
	@$(BIN)/pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: no tests ran" >&2; exit 1; fi; exit $$rc

reliability: $(STAMP) browser postgres ## Run the reliability suite alone (tests/reliability: hostile input, concurrency)
	@$(BIN)/pytest tests/reliability; rc=$$?; if [ $$rc -eq 5 ]; then echo "make reliability: no tests ran" >&2; exit 1; fi; exit $$rc

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) ## Benchmarks; results written to benchmarks/results.md
	@# the peers compared with (the bench extra), never part of setup's install
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python -m benchmarks.run

clean: ## Remove generated data (not data/raw, the committed reports/, mlruns/, the embedding store, the ONNX model) and tool caches
	rm -rf data/interim/*.parquet data/processed/*.parquet data/processed/*.json data/models data/reports
	rm -rf data/research/chunks.parquet data/research/index.json data/research/index
	rm -rf data/.cache/research/chunks data/.cache/research/converted
	rm -rf .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
