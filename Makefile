# Each target builds its own virtual environment, so a fresh clone needs only Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fuzz clean
FUZZ_SECONDS ?= 60

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned, so no dependency can pull a newer (CUDA) build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lpimg demo

test: $(STAMP)
	$(BIN)/ruff check lpimg tests examples fuzz
	$(BIN)/python -m pytest -q -p no:cacheprovider

fuzz: $(STAMP)
	cd fuzz && for h in fuzz_*.py; do echo "== $$h ($(FUZZ_SECONDS) s)"; \
		FUZZ_SECONDS=$(FUZZ_SECONDS) ../$(BIN)/python $$h || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check lpimg tests examples fuzz

clean:
	rm -rf $(VENV) build *.egg-info
