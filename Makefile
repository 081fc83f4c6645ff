# backchat developer targets: `make run` (the local stack), `make test` (what CI runs).

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
# apt-get needs root: use sudo when not root and sudo exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: run test chromium clean distclean package bench

run: $(VENV_STAMP)
	exec $(VENV_PYTHON) -m scripts.local_stack

# pytest's exit status is make's: failures fail, and so does collecting no tests (5).
# Two workers (pytest-xdist; a test file stays on one worker, with its fixtures), then the
# tests that must run alone (schemathesis: xdist does not report its subtests' failures).
test: $(VENV_STAMP) chromium
	$(VENV_PYTHON) -m pytest --numprocesses 2 --dist loadfile -m "not serial"
	$(VENV_PYTHON) -m pytest -m serial

# Benchmarks on the real local stack; rewrites docs/BENCHMARKS.md and docs/bench/*.png (~7 min).
bench: $(VENV_STAMP)
	$(VENV_PYTHON) -m bench.run

# The deployable SAM template and zip in PACKAGE_DIR (offline; docs/deploy.md).
# STAGE=dev|prod; CORS_ORIGIN=https://<the page's domain> (required for prod).
STAGE ?= dev
PACKAGE_DIR ?= build/package
package: $(VENV_STAMP)
	$(VENV_PYTHON) -m scripts.package --stage $(STAGE) --out $(PACKAGE_DIR) $(if $(CORS_ORIGIN),--cors-origin '$(CORS_ORIGIN)')

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "$(CHROMIUM) is missing; installing the chromium package"; \
		$(APT_GET) update && $(APT_GET) install -y chromium; \
	fi

# pip is never upgraded: chalice pins it below 26.3. The Lambda runtime's wheels are
# fetched here too, so that `make package` needs no network (scripts/lambda_wheels.py).
# The client (client/: backchat_client and the `backchat` command) is installed editable, so a
# `git pull` that changes its code needs no reinstall; one that changes client/pyproject.toml
# (its dependencies or commands) reinstalls, through the prerequisite.
$(VENV_STAMP): requirements.txt requirements-dev.txt client/pyproject.toml
	@if [ ! -x $(VENV_PYTHON) ]; then \
		$(PYTHON) -m venv $(VENV) || { \
			echo "$(PYTHON) -m venv failed; installing python3-venv"; \
			rm -rf $(VENV); \
			$(APT_GET) update && $(APT_GET) install -y python3-venv && $(PYTHON) -m venv $(VENV); \
		}; \
	fi
	$(VENV_PYTHON) -m pip install -r requirements-dev.txt -e ./client
	$(VENV_PYTHON) -m scripts.lambda_wheels
	touch $@

clean:
	rm -rf .pytest_cache test-artifacts build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also the virtualenv: the next target that needs it reinstalls every requirement.
distclean: clean
	rm -rf $(VENV)
