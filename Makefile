# The two README commands. Each sets up .venv itself on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases this machine's wheel store holds; see README.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo study test venv clean

venv: $(VENV)/.installed

# What the digits commands need (torch and the core); the tests add every extra on top.
$(VENV)/.installed-core: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.installed-core
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

demo: $(VENV)/.installed-core
	$(BENCH) teacher train --suite digits
	$(BENCH) sweep configs/digits-robustness.yaml --jobs 2 --results $(DEMO_RESULTS) $(if $(QUICK),--quick)
	$(BENCH) leaderboard $(DEMO_RESULTS)/digits --metric fid
	$(BENCH) report $(DEMO_RESULTS)/digits -o $(DEMO_REPORT)
	@echo "report: $(CURDIR)/$(DEMO_REPORT)"

# The full digits robustness study (configs/digits-study*.yaml; sizing in their comments), then its
# published results in docs/results/digits/. Re-running resumes: finished runs are skipped.
# `make study QUICK=1` runs the configs' quick variants into results/study-quick (a smoke test).
STUDY_RESULTS := results/study$(if $(QUICK),-quick)
STUDY_DOCS := $(if $(QUICK),$(STUDY_RESULTS)/published,docs/results/digits)

study: $(VENV)/.installed-core
	$(BENCH) teacher train --suite digits
	mkdir -p $(STUDY_RESULTS) $(STUDY_DOCS)
	test -f $(STUDY_RESULTS)/.started || { date +%s > $(STUDY_RESULTS)/.started; git rev-parse HEAD > $(STUDY_RESULTS)/.commit 2>/dev/null || echo unknown > $(STUDY_RESULTS)/.commit; }
	$(BENCH) sweep configs/digits-study.yaml --jobs 2 --results $(STUDY_RESULTS) $(if $(QUICK),--quick)
	$(BENCH) sweep configs/digits-study-sim.yaml --jobs 2 --results $(STUDY_RESULTS) $(if $(QUICK),--quick)
	test -f $(STUDY_RESULTS)/.finished || date +%s > $(STUDY_RESULTS)/.finished
	$(BENCH) results $(STUDY_RESULTS) -o $(STUDY_DOCS)/table.parquet
	$(BENCH) leaderboard $(STUDY_RESULTS) > $(STUDY_DOCS)/leaderboard.md
	$(BENCH) robustness $(STUDY_RESULTS) --pairwise > $(STUDY_DOCS)/robustness.md
	$(BENCH) plot robustness $(STUDY_RESULTS) --by-batch -o $(STUDY_DOCS)/robustness.png
	$(BENCH) plot robustness $(STUDY_RESULTS) --by-batch --x gflop -o $(STUDY_DOCS)/robustness-gflop.png
	$(BENCH) report $(STUDY_RESULTS) -o $(STUDY_DOCS)/index.html
	{ echo "# Provenance of these results"; echo; \
	  echo "- command: \`make study\` (configs/digits-study.yaml, configs/digits-study-sim.yaml)"; \
	  echo "- commit: runs trained at $$(cat $(STUDY_RESULTS)/.commit), published at $$(git rev-parse HEAD 2>/dev/null || echo unknown)"; \
	  echo "- machine: $$(uname -srm), $$(nproc) cores, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"; \
	  echo "- versions: $$($(PY) -c 'import sys, torch, numpy; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__}")')"; \
	  $(BENCH) teacher train --suite digits 2>&1 >/dev/null | sed -n 's/^\[digits\] \(teacher\|classifier\) /- \1: /p'; \
	  echo "- sweep wall time: $$(( $$(cat $(STUDY_RESULTS)/.finished) - $$(cat $(STUDY_RESULTS)/.started) )) s from first start to end (resumptions included)"; \
	  echo "- written: $$(date -u +%FT%TZ)"; } > $(STUDY_DOCS)/PROVENANCE.md
	@echo "published: $(CURDIR)/$(STUDY_DOCS)"

clean:
	rm -rf $(VENV) results/*/ reports/*/
