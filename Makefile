# Two commands do everything on a fresh machine with only Python 3.10+:
#   make demo   - create .venv, install the kit with all extras, run `c2seg demo`
#   make test   - create .venv, install the kit with all extras and test tools, run the tests
#   make wheel-smoke - build the sdist and the wheel, install the wheel into fresh venvs (light,
#                 [baseline], [server], light and [server] at the lowest declared versions),
#                 smoke-test each
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned: 2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test lint venv bench clean wheel-smoke

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[all,dev]" "$(TORCH_PIN)"
	# timm (the tests' reference HRNet) without its torchvision, which does not import beside the
	# pinned CPU torch: see tests/timm_shim.py.
	$(BIN)/python -m pip install -q --no-deps "timm>=1.0"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/c2seg demo

lint: venv
	$(BIN)/ruff check .

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected: failing" >&2; exit 1; fi; exit $$rc

# The install a user makes, not the editable one: see scripts/wheel-smoke.sh (needs no .venv).
wheel-smoke:
	PYTHON="$(PYTHON)" TORCH_PIN="$(TORCH_PIN)" bash scripts/wheel-smoke.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
