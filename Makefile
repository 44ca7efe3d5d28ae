# Nebula: `make run` and `make test` are the two commands; both install
# what is missing first (Debian 12, as root).

SHELL      := /bin/bash
BUILD      := $(CURDIR)/build
MODULE     := $(BUILD)/nginx/objs/ngx_http_nebula_module.so
SOURCES    := config $(wildcard ngx_nebula_module/*.[ch])
UNIT_SRCS  := ngx_nebula_module/nebula_request.c ngx_nebula_module/nebula_request_fields.c \
              ngx_nebula_module/nebula_request_images.c ngx_nebula_module/nebula_request_inputs.c \
              ngx_nebula_module/nebula_body.c ngx_nebula_module/nebula_arena.c \
              ngx_nebula_module/nebula_estimate.c \
              ngx_nebula_module/nebula_stream.c ngx_nebula_module/nebula_stream_memo.c
UNIT_TESTS := $(patsubst t/unit/%.c,$(BUILD)/unit/%,$(wildcard t/unit/test_*.c))
CFLAGS_UNIT := -std=c99 -D_POSIX_C_SOURCE=200809L -g -O1 -Wall -Wextra -Werror \
               -Ingx_nebula_module -It/unit
PROVE_JOBS ?= 2
# the stream scanner has a target per format
FUZZ_TARGETS := $(BUILD)/fuzz/fuzz_request $(BUILD)/fuzz/fuzz_image $(BUILD)/fuzz/fuzz_reply \
                $(BUILD)/fuzz/fuzz_sse $(BUILD)/fuzz/fuzz_ndjson $(BUILD)/fuzz/fuzz_json \
                $(BUILD)/fuzz/fuzz_show $(BUILD)/fuzz/fuzz_ps $(BUILD)/fuzz/fuzz_usage \
                $(BUILD)/fuzz/fuzz_cluster
FUZZ_SECONDS ?= 600
CFLAGS_FUZZ := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
               -Ingx_nebula_module
UNIT_SRCS_ALL := $(UNIT_SRCS) ngx_nebula_module/nebula_reply.c ngx_nebula_module/nebula_siphash.c \
                 ngx_nebula_module/nebula_show.c ngx_nebula_module/nebula_ps.c \
                 ngx_nebula_module/nebula_usage.c ngx_nebula_module/nebula_cluster.c

.PHONY: all deps module unit fuzz-build clients cli deb test-deb fuzz test test-valgrind test-asan run bench bench-slow bench-callgrind bench-redis faults clean install

all: module cli

deps:
	@tools/install-deps

module: deps $(MODULE)

$(MODULE): $(SOURCES) tools/build-module
	@tools/build-module

# every plain-C source, nebula_reply.c (over hiredis's reply type) too
$(BUILD)/unit/%: t/unit/%.c $(wildcard t/unit/*.h) t/fuzz/stream_ref.c $(UNIT_SRCS_ALL) $(wildcard ngx_nebula_module/nebula_*.h)
	@mkdir -p $(BUILD)/unit
	$(CC) $(CFLAGS_UNIT) -o $@ $< $(UNIT_SRCS_ALL) -lyajl -lhiredis -lm

# The JSON writer is no plain C: it is built against nginx's headers, those
# of the module's build tree (hence $(MODULE)), and the test stands in for
# the few nginx functions it calls, ngx_pnalloc() one that fails when told
NGX_INCS := $(addprefix -I$(BUILD)/nginx/,src/core src/event \
              src/event/modules src/os/unix objs src/http src/http/modules \
              src/http/v2)
CFLAGS_UNIT_NGX := -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter \
                   $(NGX_INCS) -Ingx_nebula_module -It/unit
UNIT_JSON := t/unit/test_json.c ngx_nebula_module/ngx_nebula_json.c

$(BUILD)/unit/test_json: $(UNIT_JSON) t/unit/tap.h ngx_nebula_module/ngx_nebula_json.h $(MODULE)
	@mkdir -p $(BUILD)/unit
	$(CC) $(CFLAGS_UNIT_NGX) -o $@ $(UNIT_JSON)

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

# the client SDKs t/60-clients.t drives, from npm (t/clients/package.json)
CLIENTS := $(BUILD)/clients/.installed

$(CLIENTS): t/clients/package.json
	@mkdir -p $(BUILD)/clients
	cp t/clients/package.json $(BUILD)/clients/package.json
	cd $(BUILD)/clients && npm install --no-audit --no-fund --loglevel=error
	@touch $@

clients: deps $(CLIENTS)

# nebulactl: the admin API from a terminal (libcurl and yajl; never inside
# nginx)
NEBULACTL := $(BUILD)/cli/nebulactl
CLI_SRCS  := cli/nebulactl.c cli/nebulactl_watch.c cli/nebulactl_http.c cli/nebulactl_json.c

$(NEBULACTL): $(CLI_SRCS) cli/nebulactl.h
	@mkdir -p $(BUILD)/cli
	$(CC) -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -g -Wall -Wextra -Werror -Icli \
	    -o $@ $(CLI_SRCS) -lcurl -lyajl

cli: deps $(NEBULACTL)

# libnginx-mod-http-nebula, as Debian's libnginx-mod-* are (tools/build-deb)
deb: module cli
	@tools/build-deb $(BUILD)/deb

# the package installed with apt into a fresh Debian 12 root (debootstrap),
# nginx started there, requests answered; not part of make test
test-deb: deb
	@tools/test-deb $$(ls -t $(BUILD)/deb/*.deb | head -1)

# The module where Debian's nginx looks for modules, and the dashboard
# where examples/nebula.conf serves it from (its alias); DESTDIR stages
# them (a package), PREFIX moves them (then change the alias and
# load_module to match)
PREFIX ?= /usr
install: module cli
	install -D -m 0644 $(MODULE) $(DESTDIR)$(PREFIX)/lib/nginx/modules/ngx_http_nebula_module.so
	install -D -m 0755 $(NEBULACTL) $(DESTDIR)$(PREFIX)/bin/nebulactl
	install -D -m 0644 cli/nebulactl.1 $(DESTDIR)$(PREFIX)/share/man/man1/nebulactl.1
	install -D -m 0644 cli/nebulactl.bash-completion $(DESTDIR)$(PREFIX)/share/bash-completion/completions/nebulactl
	for f in $$(cd dashboard && find . -type f); do \
	    install -D -m 0644 dashboard/$$f $(DESTDIR)$(PREFIX)/share/nebula/dashboard/$$f || exit 1; \
	done
	for f in examples/*.conf; do \
	    install -D -m 0644 $$f $(DESTDIR)$(PREFIX)/share/nebula/examples/$$(basename $$f) || exit 1; \
	done

# the C unit tests and the end-to-end suite, in one prove run
test: module unit fuzz-build clients cli
	prove -j$(PROVE_JOBS) --timer $(UNIT_TESTS) t/

# The unit tests, then the t/ suite with nginx under valgrind memcheck:
# no error, and nothing definitely lost (docs/testing.md).  Every nginx
# process is checked: nginx forks its workers (and, on a reload, new ones)
# without an exec, and valgrind follows a fork by itself, so
# --trace-children is not needed; the nginx -t runs of t/05-conf.t go
# under valgrind too.  Each process writes logs/valgrind.<pid>.log in its
# test's directory (a worker opens its log at the fork, before it becomes
# nobody); the harness fails the file on an error, a definite leak or a
# log cut short (check_valgrind in t/lib/Nebula/Test.pm), and stops nginx
# with QUIT first, as nginx's TERM SIGKILLs workers still writing their
# reports.  --keep-debuginfo: nginx unloads the module before the leak
# check, whose stacks would lose its names.  t/valgrind.supp holds what
# nginx 1.22 itself leaves allocated, each entry with its reason.  Nginx
# runs 10-50 times slower (a start or a reload parses the CA bundle three
# times, some 5 s of CPU): the harness and the tests multiply their waits and
# timeouts by NEBULA_TIME_SCALE (VALGRIND_TIME_SCALE), not what they
# assert.  VALGRIND_OPTS=--track-origins=yes says where an uninitialised
# value came from (slower); VALGRIND_OPTS=-s lists the suppressions used.
# Not run here, and said so: t/30-fuzz-smoke.t runs libFuzzer binaries
# built with ASan, which valgrind cannot run (the parsers they fuzz run
# under valgrind as the unit tests); t/40-bench-setup.t and
# t/41-make-run.t start nginx through bench/run and tools/run, not through
# the harness, so not under valgrind: they would check nothing make test
# does not.  (t/42-faults-under-load.t skips itself under a wrapper.)
VALGRIND := valgrind --tool=memcheck --error-exitcode=99 --num-callers=30 \
            --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
            --keep-debuginfo=yes --suppressions=$(CURDIR)/t/valgrind.supp
VALGRIND_TIME_SCALE ?= 10
VALGRIND_SKIP := t/30-fuzz-smoke.t t/40-bench-setup.t t/41-make-run.t
VALGRIND_T := $(filter-out $(VALGRIND_SKIP),$(wildcard t/*.t))

test-valgrind: module unit clients
	@echo "test-valgrind: not run: t/30-fuzz-smoke.t (libFuzzer+ASan binaries: valgrind cannot run them; their parsers run under valgrind as the unit tests)"
	@echo "test-valgrind: not run: t/40-bench-setup.t, t/41-make-run.t (bench/run and tools/run start nginx themselves, not under valgrind)"
	prove -j$(PROVE_JOBS) --timer --exec '$(VALGRIND) -q' $(UNIT_TESTS); rc=$$?; \
	NEBULA_TIME_SCALE=$(VALGRIND_TIME_SCALE) \
	NEBULA_NGINX_WRAP='$(VALGRIND) --log-file=%q{NEBULA_TEST_DIR}/logs/valgrind.%p.log' \
	    prove -j$(PROVE_JOBS) --timer $(VALGRIND_T) || exit 1; exit $$rc

# The unit tests and the whole t/ suite with AddressSanitizer and
# UndefinedBehaviorSanitizer (docs/testing.md, "make test-asan"):
# tools/build-asan builds Debian's nginx from its source package, with the
# arguments nginx -V shows plus the sanitizers and NGX_DEBUG_PALLOC, and
# the module with it, into build/asan/.  Reports go to files, not to
# stderr (a worker's is its error log): build/asan/reports, and for each
# test file its own directory, where the harness fails the file on any
# report (check_sanitizer in t/lib/Nebula/Test.pm); one left in
# build/asan/reports (the unit tests, an nginx -t outside any test
# object) fails the target after prove.
#   LeakSanitizer: on for the unit tests; for t/ detect_leaks=0 with
#     NEBULA_LSAN=1, so the harness turns it on in the nginx it starts,
#     master and workers, and not in nginx -t or nginx -s, which return
#     from main() with all they parsed, by design.  build/asan/lsan.supp
#     has the rest of nginx's own: what is left is what a worker
#     allocated and lost while it ran.  ASAN_LEAKS=0 turns it off.
#   UBSan reports and goes on (halt_on_error=0): a run shows every
#     finding, once a place a process; build/asan/ubsan.supp has nginx's
#     own.  ASan stops a process at its first error.
#   detect_stack_use_after_return stays off: its fake stacks grow a
#     worker's resident memory through a long stream, which
#     t/20-stream-metering.t's flat-memory check would then measure.
# t/30-fuzz-smoke.t runs the libFuzzer targets, ASan and UBSan already;
# t/40-bench-setup.t and t/41-make-run.t run Debian's nginx through
# bench/run and tools/run, the product's scripts as a user runs them:
# they stay so (they check the scripts; the code they run is all run
# under the sanitizers by the other files).
ASAN_BUILD   := $(BUILD)/asan
ASAN_REPORTS := $(ASAN_BUILD)/reports
ASAN_UNIT    := $(patsubst t/unit/%.c,$(ASAN_BUILD)/unit/%,$(wildcard t/unit/test_*.c))
ASAN_LEAKS   ?= 1
ASAN_OPTS := log_path=$(ASAN_REPORTS)/asan
ASAN_ENV := NEBULA_LSAN=$(filter-out 0,$(ASAN_LEAKS)) \
            LSAN_OPTIONS=suppressions=$(ASAN_BUILD)/lsan.supp:print_suppressions=0 \
            UBSAN_OPTIONS=suppressions=$(ASAN_BUILD)/ubsan.supp:print_stacktrace=1:halt_on_error=0

$(ASAN_BUILD)/unit/%: t/unit/%.c $(wildcard t/unit/*.h) t/fuzz/stream_ref.c $(UNIT_SRCS_ALL) $(wildcard ngx_nebula_module/nebula_*.h)
	@mkdir -p $(ASAN_BUILD)/unit
	$(CC) $(CFLAGS_UNIT) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -fno-omit-frame-pointer -o $@ $< $(UNIT_SRCS_ALL) -lyajl -lhiredis -lm

$(ASAN_BUILD)/unit/test_json: $(UNIT_JSON) t/unit/tap.h ngx_nebula_module/ngx_nebula_json.h $(MODULE)
	@mkdir -p $(ASAN_BUILD)/unit
	$(CC) $(CFLAGS_UNIT_NGX) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -fno-omit-frame-pointer -o $@ $(UNIT_JSON)

test-asan: module fuzz-build clients $(ASAN_UNIT)
	@tools/build-asan
	@rm -rf $(ASAN_REPORTS) && mkdir -p -m 1777 $(ASAN_REPORTS)
	@$(ASAN_ENV) ASAN_OPTIONS=$(ASAN_OPTS):detect_leaks=$(ASAN_LEAKS) \
	    prove --timer $(ASAN_UNIT) && \
	$(ASAN_ENV) ASAN_OPTIONS=$(ASAN_OPTS):detect_leaks=0 \
	    NEBULA_NGINX=$(ASAN_BUILD)/nginx/objs/nginx \
	    NEBULA_MODULE=$(ASAN_BUILD)/nginx/objs/ngx_http_nebula_module.so \
	    prove -j$(PROVE_JOBS) --timer t/; rc=$$?; \
	if [ -n "$$(ls -A $(ASAN_REPORTS))" ]; then \
	    echo "test-asan: sanitizer reports in $(ASAN_REPORTS):"; \
	    for f in $(ASAN_REPORTS)/*; do echo "== $$f"; head -30 "$$f"; done; \
	    exit 1; \
	fi; exit $$rc

run: module
	@tools/run

# Nebula as shipped against a plain nginx proxy and the same gateway in
# OpenResty's Lua, side by side, then 2,000 slow streams through plain and
# Nebula (bench/README.md); not part of make test, which only runs its
# setup once (t/40-bench-setup.t)
bench: module
	@bench/run

# the slow streams alone: memory and CPU a stream, errors
bench-slow: module
	@BENCH_SLOW=1 bench/run

# instructions a request, under callgrind: repeatable where seconds are not
bench-callgrind: module
	@command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
	@BENCH_CALLGRIND=1 bench/run

# Redis's capacity: nebula alone, on one Redis (leases on, and off), on a
# 3-master Redis Cluster, and on 3 masters with replicas without and with
# nebula_redis_wait 1: Redis's CPU a request, per shard, what one core
# carries (bench/README.md); about 3 minutes
bench-redis: module
	@BENCH_REDIS=all bench/run

# faults under load (bench/faults, docs/reliability.md): Redis killed and
# blocked, the pool killed mid-stream, nginx reloaded and upgraded, while
# wrk runs; every served request's usage recorded; about 4 minutes.
# make test runs the short version (t/42-faults-under-load.t)
faults: module
	@bench/faults

clean:
	rm -rf $(BUILD)
