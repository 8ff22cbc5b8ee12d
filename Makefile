# The book's two commands: `make book` (build the HTML book) and `make test` (the whole suite).
# Both set up .venv from requirements.txt first; the install is skipped while its inputs are unchanged.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALL_HASH := $(shell cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -c1-16)
INSTALLED := $(VENV)/.installed-$(INSTALL_HASH)
# TensorFlow's C++ INFO lines (oneDNN notices) are noise in a built page; warnings and errors still show.
export TF_CPP_MIN_LOG_LEVEL := 1
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help install browser book executed-book check random-order robustness test lint tensorboard lab strip sync-bootstrap lock pretrained benchmarks bench-notebooks screenshots clean

help:
	@echo "make book         build the HTML book into _build/html (executes every notebook)"
	@echo "make test         the whole suite: lint, every notebook (once, under nbmake), the built book, all tests"
	@echo "make check        lint and the fast tests (not marked slow): the edit-test loop, under 3 minutes"
	@echo "make random-order the fast tests in a shuffled order (SEED=<n> repeats one): finds order dependencies"
	@echo "make robustness   every notebook under other seeds, threads and CPU kernels (what changed since its record)"
	@echo "make lab          JupyterLab on this repository (127.0.0.1)"
	@echo "make tensorboard  TensorBoard on runs/ (127.0.0.1:6006)"
	@echo "make strip        strip outputs from every notebook (as they are committed)"
	@echo "make benchmarks   throughput against nanoGPT's CPU recipe, logging overhead, DDP scaling, all-reduce bandwidth, learning rate against global batch, the diagnosis rules' precision and recall, each notebook's cost: tables into the READMEs (about 45 min)"
	@echo "make bench-notebooks  only the notebooks: wall time, CPU time and peak memory of each in a fresh kernel (13 min)"
	@echo "make screenshots  photograph each TensorBoard dashboard over the book's runs into book/images (after make book)"
	@echo "make pretrained   retrain the shipped GPT utils/data/gpt_shakespeare.safetensors (about 5 min)"

install: $(INSTALLED)

$(INSTALLED): requirements.txt constraints.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 not found: install it, or run make PYTHON=/path/to/python3.11"; exit 1; }
	@rm -f $(VENV)/.installed-*
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing requirements into $(VENV) (about 4 minutes the first time) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@$(PY) -m pip check
	@touch $@

# The built-book test renders pages in a real headless Chromium (Debian's package; installed here when missing
# and we are root with apt-get, as on CI). Elsewhere: install Chromium, or set BOOK_BROWSER to a Chrome binary.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$${BOOK_BROWSER:-}" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the browser tests (about 1 minute) ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "The tests need headless Chromium: install it (e.g. sudo apt-get install chromium) or set BOOK_BROWSER"; \
	    exit 1; fi; }

book: install
	BOOK_HEADLESS=1 $(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "The book: file://$(CURDIR)/_build/html/index.html"

# The notebooks must write only under runs/ (and checkpoints/): nothing new may appear beside them
# (a notebook or page not yet committed, or edited, is a source, not something a notebook wrote; chapter 7's
# screenshots are retaken by every `make test`).
define no_files_beside_notebooks
	@stray=$$(git status --porcelain --ignored --untracked-files=all -- book labs \
		| { grep -vE '^(\?\?| M|M |MM) (book|labs)/[^/]+\.(ipynb|md)$$' || true; } \
		| { grep -vE '^( M|M |MM) book/images/tensorboard/[a-z_0-9]+\.png$$' || true; }); \
	if [ -n "$$stray" ]; then echo "Files written beside the notebooks (write under runs/ instead):"; \
	echo "$$stray"; exit 1; fi
endef

# One execution of every notebook serves both the tests and the HTML book: nbmake executes each notebook
# and writes its outputs back (--overwrite; a failing cell fails here, with its traceback); the labs as
# executed are kept for tests/test_labs.py; chapter 7's screenshots are taken of the runs just written;
# Jupyter Book builds the pages from those outputs with execution off; the notebooks are stripped again.
EXECUTED := _build/executed
executed-book: install browser
	@rm -rf $(EXECUTED) && mkdir -p $(EXECUTED)
	@trap '$(PY) -m utils.notebooks strip >/dev/null' EXIT; \
	BOOK_HEADLESS=1 $(PY) -m pytest --nbmake --overwrite book labs --nbmake-timeout=900 -p no:cacheprovider \
		--durations=25; \
	cp labs/*.ipynb $(EXECUTED)/; \
	$(PY) -m utils.tb.screenshots --runs runs --out book/images/tensorboard; \
	sed -E -e 's/^(  execute_notebooks:) cache /\1 "off" /' -e 's|^(    offline_mathjax:) _ext |\1 $(CURDIR)/_ext |' \
		_config.yml > $(EXECUTED)/_config.yml; \
	grep -q 'execute_notebooks: "off"' $(EXECUTED)/_config.yml; \
	BOOK_HEADLESS=1 $(VENV)/bin/jupyter-book build . --config $(EXECUTED)/_config.yml --warningiserror \
		--nitpick --keep-going
	@echo "The book: file://$(CURDIR)/_build/html/index.html"

test: install browser lint executed-book
	$(no_files_beside_notebooks)
	BOOK_HEADLESS=1 BOOK_EXECUTED_LABS=$(EXECUTED) $(PY) -m pytest tests -p no:cacheprovider --durations=25
	$(no_files_beside_notebooks)

# The edit-test loop: lint, then every test not marked slow (no notebook, no server start-up).
check: install lint
	$(PY) -m pytest tests -m "not slow" -p no:cacheprovider -q --durations=10

# The fast tests in a shuffled order (pytest-randomly; the seed is printed: rerun one order with
# SEED=<n>): a test that passes only after another one set something up fails here.
random-order: install
	$(PY) -m pytest tests -m "not slow" -p no:cacheprovider -q -p randomly $(if $(SEED),--randomly-seed=$(SEED))

# Every notebook under other seeds, thread counts and CPU kernels (benchmarks/robustness.py); only those
# whose code changed since their record, or failed, run again (the whole matrix: 88 executions).
robustness: install
	$(PY) -m benchmarks.robustness --jobs 1
	$(PY) -m benchmarks.report

lint: install
	$(VENV)/bin/ruff check utils tests book labs benchmarks

tensorboard: install
	$(VENV)/bin/tensorboard --logdir runs --host 127.0.0.1 --port 6006

lab: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser $(ROOT_FLAG)  # tb.show() finds tensorboard

strip: install
	$(PY) -m utils.notebooks strip

sync-bootstrap: install
	$(PY) -m utils.notebooks sync-bootstrap

# Regenerate constraints.txt: the whole resolved tree of requirements.txt (Linux x86_64, Python 3.11).
lock: install
	{ echo "# Generated by \`make lock\`: every package of the resolved environment, pinned (Linux x86_64, Python 3.11)."; \
	  echo "# requirements.txt names what the book imports; this file fixes everything they pull in."; \
	  $(PY) -m pip freeze --all --exclude-editable | grep -v "^pip==" | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/'; \
	} > constraints.txt

# The pretrained GPT the fine-tuning chapter loads: the pretraining chapter's code, trained longer. Writes
# utils/data/gpt_shakespeare.safetensors, its .sha256 and its event file (utils/data/gpt_shakespeare_run/); commit all.
pretrained: install
	$(PY) -m utils.pretrain --out utils/data/gpt_shakespeare.safetensors --threads 1

# Measurements, never part of `make test`: each writes benchmarks/results/<name>.json, then the README's tables.
benchmarks: install
	$(PY) -m benchmarks.train_throughput
	$(if $(NANOGPT),$(PY) -m benchmarks.vs_nanogpt --nanogpt $(NANOGPT),@echo "vs_nanogpt skipped: give NANOGPT=<a nanoGPT checkout>")
	$(if $(NANOGPT),$(PY) -m benchmarks.speedrun --nanogpt $(NANOGPT),@echo "speedrun skipped: give NANOGPT=<a nanoGPT checkout>")
	$(PY) -m benchmarks.logging_overhead
	$(PY) -m benchmarks.scaling
	$(PY) -m benchmarks.communication
	$(PY) -m benchmarks.batch_scaling
	$(PY) -m benchmarks.diagnose_zoo
	$(PY) -m benchmarks.notebooks
	$(PY) -m benchmarks.report

# Photographs of the real TensorBoard UI over the book's runs (after `make book`), embedded by chapter 7.
screenshots: install browser
	$(PY) -m utils.tb.screenshots --runs runs --out book/images/tensorboard

# Every notebook executed in a fresh kernel: wall time and peak memory (as long as `make book` on a cold cache).
bench-notebooks: install
	$(PY) -m benchmarks.notebooks
	$(PY) -m benchmarks.report

clean:
	rm -rf _build runs
