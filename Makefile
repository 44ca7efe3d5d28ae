# Nebula: `make run` and `make test` are the two commands; both install
# what is missing first (Debian 12, as root).

SHELL      := /bin/bash
BUILD      := $(CURDIR)/build
MODULE     := $(BUILD)/nginx/objs/ngx_http_nebula_module.so
SOURCES    := config $(wildcard ngx_nebula_module/*.[ch])
UNIT_SRCS  := ngx_nebula_module/nebula_request.c ngx_nebula_module/nebula_stream.c
UNIT_TESTS := $(patsubst t/unit/%.c,$(BUILD)/unit/%,$(wildcard t/unit/test_*.c))
CFLAGS_UNIT := -std=c99 -D_POSIX_C_SOURCE=200809L -g -O1 -Wall -Wextra -Werror \
               -Ingx_nebula_module -It/unit
PROVE_JOBS ?= 2
# the stream scanner has a target per format
FUZZ_TARGETS := $(BUILD)/fuzz/fuzz_request $(BUILD)/fuzz/fuzz_reply \
                $(BUILD)/fuzz/fuzz_sse $(BUILD)/fuzz/fuzz_ndjson $(BUILD)/fuzz/fuzz_json
FUZZ_SECONDS ?= 600
CFLAGS_FUZZ := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
               -Ingx_nebula_module
UNIT_SRCS_ALL := $(UNIT_SRCS) ngx_nebula_module/nebula_reply.c ngx_nebula_module/nebula_siphash.c

.PHONY: all deps module unit fuzz-build fuzz test run bench bench-callgrind clean

all: module

deps:
	@tools/install-deps

module: deps $(MODULE)

$(MODULE): $(SOURCES) tools/build-module
	@tools/build-module

# every plain-C source, nebula_reply.c (over hiredis's reply type) too
$(BUILD)/unit/%: t/unit/%.c t/unit/tap.h t/fuzz/stream_ref.c $(UNIT_SRCS_ALL) $(wildcard ngx_nebula_module/nebula_*.h)
	@mkdir -p $(BUILD)/unit
	$(CC) $(CFLAGS_UNIT) -o $@ $< $(UNIT_SRCS_ALL) -lyajl -lhiredis -lm

unit: deps $(UNIT_TESTS)

$(BUILD)/fuzz/%: t/fuzz/%.c $(UNIT_SRCS_ALL) $(wildcard ngx_nebula_module/nebula_*.h)
	@mkdir -p $(BUILD)/fuzz
	clang $(CFLAGS_FUZZ) -o $@ $< $(UNIT_SRCS_ALL) -lyajl -lhiredis -lm

FUZZ_DEPS := t/fuzz/fuzz_stream.c $(UNIT_SRCS_ALL) $(wildcard ngx_nebula_module/nebula_*.h)

$(BUILD)/fuzz/fuzz_json: $(FUZZ_DEPS)
	@mkdir -p $(BUILD)/fuzz
	clang $(CFLAGS_FUZZ) -DNEBULA_FUZZ_FORMAT=0 -o $@ $< $(UNIT_SRCS_ALL) -lyajl -lhiredis -lm

$(BUILD)/fuzz/fuzz_ndjson: $(FUZZ_DEPS)
	@mkdir -p $(BUILD)/fuzz
	clang $(CFLAGS_FUZZ) -DNEBULA_FUZZ_FORMAT=1 -o $@ $< $(UNIT_SRCS_ALL) -lyajl -lhiredis -lm

$(BUILD)/fuzz/fuzz_sse: $(FUZZ_DEPS)
	@mkdir -p $(BUILD)/fuzz
	clang $(CFLAGS_FUZZ) -DNEBULA_FUZZ_FORMAT=2 -o $@ $< $(UNIT_SRCS_ALL) -lyajl -lhiredis -lm

fuzz-build: deps $(FUZZ_TARGETS)

# every target for FUZZ_SECONDS (600 by default) from the seed corpora in
# t/fuzz/corpus; what it learns goes to build/fuzz/corpus, not the repo
fuzz: fuzz-build
	@for f in $(FUZZ_TARGETS); do \
	    name=$$(basename $$f | sed 's/^fuzz_//'); \
	    mkdir -p $(BUILD)/fuzz/corpus/$$name; \
	    echo "== $$name: $(FUZZ_SECONDS) s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=$(BUILD)/fuzz/crash-$$name- \
	        $(BUILD)/fuzz/corpus/$$name t/fuzz/corpus/$$name || exit 1; \
	done

# the C unit tests and the end-to-end suite, in one prove run
test: module unit fuzz-build
	prove -j$(PROVE_JOBS) --timer $(UNIT_TESTS) t/

run: module
	@tools/run

# Nebula against a plain nginx proxy, side by side (bench/README.md);
# not part of make test, which only runs its setup once (t/40-bench-setup.t)
bench: module
	@bench/run

# instructions a request, under callgrind: repeatable where seconds are not
bench-callgrind: module
	@command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
	@BENCH_CALLGRIND=1 bench/run

clean:
	rm -rf $(BUILD)
