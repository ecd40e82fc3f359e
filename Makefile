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
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	# ImageReward cannot be an extra: its wheel pins old timm/fairscale (see README).
	$(PY) -m pip install -q 'setuptools<81'
	$(PY) -m pip install -q --no-build-isolation fairscale==0.4.13
	$(PY) -m pip install -q --no-deps image-reward==1.5
	touch $@

test: venv
	$(PY) -m pytest -q

# The digits robustness benchmark: teacher and classifier (cached), the sweep, the report.
# `make demo QUICK=1` runs the config's quick variant.
BENCH := $(VENV)/bin/bench
DEMO_RESULTS := results
DEMO_REPORT := reports/digits-robustness/index.html

demo: venv
	$(BENCH) teacher train --suite digits
	$(BENCH) sweep configs/digits-robustness.yaml --jobs 2 --results $(DEMO_RESULTS) $(if $(QUICK),--quick)
	$(BENCH) leaderboard $(DEMO_RESULTS)/digits --metric fid
	$(BENCH) report $(DEMO_RESULTS)/digits -o $(DEMO_REPORT)
	@echo "report: $(CURDIR)/$(DEMO_REPORT)"

clean:
	rm -rf $(VENV) results/*/ reports/*/
