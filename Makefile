# The two set-up commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions

.PHONY: install tracking demo test lint bench clean browser docs-img

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The experiment trackers (MLflow, W&B, TensorBoard): optional for users, needed by the tests.
$(VENV)/.tracking: $(VENV)/.installed
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,tracking]'
	touch $@

tracking: $(VENV)/.tracking

demo: install
	$(PY) -m ablate.run sweeps/gamma.yaml --overwrite
	$(PY) -m analysis.report results/gamma

# Two pytest workers, one test file each at a time (a file's module fixtures are built once): most of a
# slow test's wall time is Ray and processes starting, so two files at once take ~0.7x as long on 2 cores.
# Files in collection order (tests/conftest.py puts those with slow tests first), not by test count.
test: install tracking browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=12

# The report's browser test renders report.html in headless Chromium (Debian's `chromium` package).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; } || \
	  { echo "error: the report test needs Chromium: install it (Debian/Ubuntu: apt-get install chromium)" >&2; exit 1; }

# The README's picture: the top of the demo's report.html (run `make demo` first) in headless Chromium,
# cropped and reduced to 64 colours so that the repository stays small.
docs-img: install browser
	$$(command -v chromium || command -v chromium-browser) --headless --no-sandbox --disable-gpu --hide-scrollbars \
	  --user-data-dir=$(CURDIR)/.cache/chromium --virtual-time-budget=10000 --window-size=1300,1400 \
	  --screenshot=$(CURDIR)/.cache/report-top.png $(CURDIR)/reports/gamma/report.html 2>/dev/null
	$(PY) -c "from PIL import Image; Image.open('.cache/report-top.png').crop((0, 0, 1300, 1000))\
	  .quantize(64).save('docs/img/report.png', optimize=True)"

bench: install
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,bench]'
	$(PY) -m bench

clean:
	rm -rf results reports .cache
