# Newcomer entry points: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HW     ?=
N      ?= 20
DEMO   := out/demo

.PHONY: install demo test check lint goldens release-notebooks release bench audit clean

# torch==2.13.0 first: that release lies on local disk as a CPU build, and installing it before
# the rest keeps pip from resolving `torch` to a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,cluster,mark]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## grade the bundled example submissions, write the CSV, feedback, report, leaderboard
	$(BIN)/grader grade examples/submissions --jobs 2 --gradebook $(DEMO)/gradebook.sqlite \
		--csv $(DEMO)/gradebook.csv --feedback $(DEMO)/feedback
	@# written answers: the examples' marks (scripts/make_examples.py writes them once a homework
	@# asks written questions), then the CSV and the feedback again with them
	@if [ -f examples/marks.csv ]; then \
		$(BIN)/grader marks import examples/marks.csv --gradebook $(DEMO)/gradebook.sqlite \
			--marker "make demo" && \
		$(BIN)/grader export --gradebook $(DEMO)/gradebook.sqlite --csv $(DEMO)/gradebook.csv \
			--long $(DEMO)/gradebook_long.csv --feedback $(DEMO)/feedback; fi
	$(BIN)/grader report --gradebook $(DEMO)/gradebook.sqlite --out $(DEMO)/report.html
	$(BIN)/grader report --public --gradebook $(DEMO)/gradebook.sqlite --out $(DEMO)/leaderboard.html

# Four workers on two cores: most of a kernel test is waiting (kernel start-up, limits); a test
# file stays on one worker, so the live reference kernel of a homework's tests is shared.
TEST_WORKERS ?= 4
test: $(STAMP)  ## the whole test suite (kernel tests included), TEST_WORKERS=4 pytest-xdist workers
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

check: $(STAMP)  ## students: run the public checks on your notebooks (make check HW=hw1)
	@status=0; for nb in $(if $(HW),assignments/$(HW)/$(HW).ipynb,assignments/hw*/hw*.ipynb); do \
		$(BIN)/grader check $$nb || status=1; done; exit $$status

lint: $(STAMP)  ## ruff, and mypy (strict) on the engine and the course kit
	$(BIN)/ruff check .
	$(BIN)/mypy

goldens: $(STAMP)  ## rewrite the golden CSV files after an intended format change
	UPDATE_GOLDENS=1 $(BIN)/python -m pytest tests/test_tables.py -q

release-notebooks: $(STAMP)  ## regenerate assignments/*/*.ipynb from solutions/
	$(BIN)/grader release-notebooks

release: $(STAMP)  ## the student kit of every homework: out/kit/ and out/kit.zip
	$(BIN)/grader release out/kit --all --zip --force
audit: $(STAMP)  ## audit the hidden checks of every homework (make audit HW=hw1 AUDIT_ARGS="--mutants 60")
	$(BIN)/grader audit $(HW) --jobs 2 $(AUDIT_ARGS)

# nbgrader and otter-grader, the graders `make bench` compares with (neither pulls torch)
$(VENV)/.bench-installed: $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

bench: $(VENV)/.bench-installed  ## throughput vs nbgrader, otter, bare nbclient (N=20); overhead per homework
	$(BIN)/python -m bench --n $(N) --json out/bench.json

clean:
	rm -rf out grades
