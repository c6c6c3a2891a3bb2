# `make test` and `make demo` work on a fresh machine: each sets up what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The pinned stack that installs fast on our machines; pyproject.toml states ranges.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0

.PHONY: setup system-deps test test-all lint format demo data codec-bench-deps

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

# espeak-ng synthesizes the training speech; its library is loaded in-process. Chromium runs
# the browser test of `suite serve` (Playwright drives Debian's build; no browser download).
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -z "$$missing" ] || { \
		echo "installing$$missing with apt"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }

# Speaks open-domain test sentences with the synthesizer and voices held out of training (SVOX
# Pico from PyPI, installed here if it builds; espeak-ng), adds recordings of people from the
# shared pack's test splits, transcribes them with default-asr and streams them through
# streaming-asr, with the WER of each group. Then default-captioner captions composed scenes of
# held-out compositions, made from CIFAR-10 (shared data pack) and Fashion-MNIST (Debian) test
# images.
demo: setup
	@$(PY) -c 'import ttspico' 2>/dev/null || $(PY) -m pip install -q ttspico || \
		echo "SVOX Pico (ttspico) did not install; the demo skips its held-out-engine group"
	@dpkg-query -W -f='$${Status}' dataset-fashion-mnist 2>/dev/null | grep -q "ok installed" || { \
		echo "installing dataset-fashion-mnist with apt"; $(SUDO) apt-get update -qq && \
		$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }
	$(PY) -m suite.demo

# `suite bench codec` compares with Opus and Codec2 through ffmpeg (Debian's build has libopus
# and libcodec2) and scores with pesq and pystoi; `make test` needs none of them.
codec-bench-deps: setup
	@command -v ffmpeg >/dev/null 2>&1 || { echo "installing ffmpeg with apt"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg; }
	$(PY) -m pip install -q -e '.[codec-bench]' $(TORCH_PINS)

# Open-domain training text (README "Data"): installs the Debian packages of prose that
# `suite data text` reads (documentation, dictionaries, public-domain Bibles, fortunes), then
# builds data/text. It also installs the speech engines of `suite data synth-speech --engines
# all` (flite, festival and its voices from Debian, SVOX Pico's ttspico from PyPI). Tests use
# small fixtures and never need any of it: those that need an engine skip without it.
data: setup
	@pkgs="$$($(PY) -c 'from suite.data.text_corpus import debian_packages; print(*debian_packages())') \
		$$($(PY) -c 'from suite.data.engines import debian_packages; print(*debian_packages())')"; \
	missing=""; for p in $$pkgs; do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	[ -z "$$missing" ] || { \
		echo "installing$$missing with apt"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; }
	@for p in $$($(PY) -c 'from suite.data.engines import pypi_packages; print(*pypi_packages())'); do \
		$(PY) -m pip show -q $$p >/dev/null 2>&1 || $(PY) -m pip install -q $$p; \
	done
	$(VENV)/bin/suite data text --out data/text --grammar 20000

# The quick suite (minutes on 2 cores); end-to-end tests that train for tens of seconds or more
# are marked `slow` and run by test-all, which CI runs.
test: setup
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .
