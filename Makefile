# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m ablate.run sweeps/gamma.yaml --overwrite
	$(PY) -m analysis.report results/gamma

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,bench]'
	$(PY) -m bench

clean:
	rm -rf results reports .cache
