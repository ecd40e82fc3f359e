# The two README commands. Each sets up .venv itself on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases this machine's wheel store holds; see README.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: venv
	$(PY) -m pytest -q

demo: venv
	$(VENV)/bin/bench demo

clean:
	rm -rf $(VENV) results/*/ reports/*/
