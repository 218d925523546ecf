# Makefile — the two commands of the README (and a few more) on top of CMake presets.
#   make demo    set up, build, run the examples
#   make test    set up, build, run every test with ctest
PRESET ?= dev
BUILD_DIR := build/$(PRESET)
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 60

.PHONY: all setup configure build demo test test-asan test-tsan bench bench-quick fuzz format clean chaos

all: build

setup:
	@bash scripts/setup

configure: setup
	@cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build --preset $(PRESET) -j $(JOBS)

demo: build
	@for example in hello_process pool_map process_per_number; do \
	  echo "== examples/$$example"; \
	  ./$(BUILD_DIR)/examples/$$example || exit 1; \
	done

test: build
	@ctest --preset $(PRESET) -j 2

test-asan:
	@$(MAKE) --no-print-directory test PRESET=asan

test-tsan:
	@$(MAKE) --no-print-directory test PRESET=tsan

bench: setup
	@bash scripts/bench

bench-quick: setup
	@bash scripts/bench --quick

fuzz: setup
	@cmake --preset fuzz >/dev/null && cmake --build --preset fuzz -j $(JOBS)
	@bash scripts/run_fuzzers build/fuzz $(FUZZ_SECONDS)

# The chaos program for CHAOS_SECONDS (default 300) of rounds; CHAOS_SEED replays a run.
chaos: configure
	@cmake --build --preset $(PRESET) -j $(JOBS) --target mproc_chaos
	@./$(BUILD_DIR)/tests/chaos/mproc_chaos --seconds $${CHAOS_SECONDS:-300} --quiet

format:
	@clang-format -i $$(git ls-files '*.hpp' '*.cpp')

clean:
	@rm -rf build
