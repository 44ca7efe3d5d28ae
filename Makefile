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

.PHONY: all deps module unit test run clean

all: module

deps:
	@tools/install-deps

module: deps $(MODULE)

$(MODULE): $(SOURCES) tools/build-module
	@tools/build-module

$(BUILD)/unit/%: t/unit/%.c t/unit/tap.h $(UNIT_SRCS) $(wildcard ngx_nebula_module/nebula_*.h)
	@mkdir -p $(BUILD)/unit
	$(CC) $(CFLAGS_UNIT) -o $@ $< $(UNIT_SRCS) -lyajl -lm

unit: deps $(UNIT_TESTS)

# the C unit tests and the end-to-end suite, in one prove run
test: module unit
	prove -j$(PROVE_JOBS) --timer $(UNIT_TESTS) t/

run: module
	@tools/run

clean:
	rm -rf $(BUILD)
