# The quick start is `make demo` and `make test`; both install what they need first, and only
# ever what the locks in requirements/ say (README, "Dependencies").
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCKS  := requirements/build.lock requirements/runtime.lock requirements/dev.lock
LOCKFILE := $(PYTHON) requirements/lockfile.py
UV     := .tools/uv/bin/uv
# `uv pip compile` for the locks' one target: CPython 3.11 (markers narrow it to Linux).
COMPILE := $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--no-header --no-annotate
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes

.PHONY: install lock-check lock upgrade lock-platforms demo test test-fast lint typecheck pytest bench clean

install: $(STAMP)

# The venv holds exactly the locked set: pip refuses any file whose hash the lock does not list,
# and the last step refuses anything more or less than the lock.
$(STAMP): pyproject.toml $(LOCKS)
	@$(LOCKFILE) check $(LOCKS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements/build.lock
	$(PIP_INSTALL) -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@# The wheel ships the runtime packages only; the dev venv also sees the checkout's tooling
	@# packages (sandbox/, bench/, tests/), so `integration-worker demo` finds the sandbox.
	@$(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))' \
		| xargs -I{} sh -c 'echo "$(CURDIR)" > {}/integration_worker_checkout.pth'
	$(BIN)/python requirements/lockfile.py installed --python $(BIN)/python requirements/dev.lock
	@touch $(STAMP)

lock-check:
	@$(LOCKFILE) check $(LOCKS)

$(UV): requirements/tools.lock
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --require-hashes --upgrade \
		--target .tools/uv -r requirements/tools.lock
	@touch $(UV)

# Re-resolve after editing pyproject.toml's dependencies; pins that still fit are kept.
# `make upgrade` takes the newest release of everything. Either is its own commit, after
# `make test` passed on it.
lock: $(UV)
	$(COMPILE) $(UPGRADE) pyproject.toml --extra sandbox --group pyproject.toml:dev \
		--group pyproject.toml:build -o requirements/dev.lock
	$(COMPILE) pyproject.toml -c requirements/dev.lock -o requirements/runtime.lock
	$(COMPILE) --group pyproject.toml:build -c requirements/dev.lock -o requirements/build.lock
	$(LOCKFILE) stamp $(LOCKS)
	$(MAKE) lock-platforms

upgrade:
	$(MAKE) lock UPGRADE=--upgrade

# Every locked distribution has a file, with a locked hash, for each target platform.
lock-platforms: install
	$(BIN)/python requirements/lockfile.py platforms $(LOCKS)

demo: install
	$(BIN)/integration-worker demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lock-check lint typecheck pytest

# tests/unit: pure code, no server, no event loop (tests/unit/conftest.py refuses both).
test-fast: install
	$(BIN)/pytest -q tests/unit

bench: install
	$(BIN)/python -m bench.actors
	$(BIN)/python -m bench.sync
	$(BIN)/python -m bench.failover

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache
