# The README's two commands: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test deps system-deps lint typecheck unit bench soak clean wheelhouse

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

deps: $(VENV)/.installed

system-deps:
	scripts/install-system-deps

## run: sapd and madcapd in the foreground on embedded defaults (state in ./state)
run: deps
	scripts/run

## test: install everything (Debian packages too when root) and run every test
test: system-deps deps lint typecheck
	scripts/test

lint: deps
	$(PY) -m ruff check sapd madcap tests

typecheck: deps
	$(PY) -m mypy

unit: deps
	$(PY) -m pytest tests/unit

bench: deps
	@failed=""; for b in tests/bench/bench_*.py; do \
		name=$$(basename $$b .py); echo "== $$name"; \
		$(PY) -m tests.bench.$$name || failed="$$failed $$name"; \
	done; if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

## soak: the whole-path fuzz tests with 1,000,000 inputs each, by hand; they print figures
soak: deps
	FUZZ_INPUTS=1000000 $(PY) -m pytest tests/fuzz -s -q -p no:cacheprovider

## wheelhouse: wheelhouse/ with the sapd wheel, its dependencies and setuptools (what
## `pip install .` builds with), for an offline install (README: Running as a service)
wheelhouse: deps
	rm -rf wheelhouse
	$(PY) -m pip wheel --quiet -w wheelhouse . 'setuptools>=77'

clean:
	rm -rf $(VENV) state run wheelhouse .mypy_cache .ruff_cache .pytest_cache
