# transporter: GNU Makefile.  Builds out of tree in $(BUILD)/.
#
#   make            build both daemons
#   make check      build and run every test (unit + integration)
#   make demo       set up, mint certificates, back up and restore a sample disk
#   make bench      benchmark against zstd, borg and restic
#   make bench-connections  1, 2 or 4 connections per job over an emulated WAN
#   make asan       the test suite under AddressSanitizer + UBSan
#   make soak       long tests (load.sh with 256 sessions, a 600-point chain)
#   make fuzz       build the libFuzzer harnesses (clang)
#   make install    PREFIX=/usr/local DESTDIR=

CC		?= cc
PKG_CONFIG	?= pkg-config
PREFIX		?= /usr/local
BINDIR		?= $(PREFIX)/bin
SBINDIR		?= $(PREFIX)/sbin
MANDIR		?= $(PREFIX)/share/man
SYSCONFDIR	?= /etc
BUILD		?= build
PROTOC_C	?= protoc-c

CFLAGS		?= -O2 -g
WARNFLAGS	:= -std=c17 -Wall -Wextra -Werror -Wshadow -Wpointer-arith \
		   -Wmissing-prototypes -Wstrict-prototypes -Wno-unused-parameter
HARDEN		:= -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
PKGS		:= libssl libcrypto libevent libevent_openssl libevent_pthreads \
		   libzstd libprotobuf-c libargon2 libnbd libsystemd libxxhash
PKG_CFLAGS	:= $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS	:= $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)

CPPFLAGS	+= -D_GNU_SOURCE -Icommon -I$(BUILD)/proto
ALL_CFLAGS	 = $(WARNFLAGS) $(HARDEN) $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS		+= -pie -Wl,-z,relro,-z,now
LDLIBS		+= $(PKG_LIBS) -lpthread

ifeq ($(V),1)
Q :=
else
Q := @
endif

PROTO_C		:= $(BUILD)/proto/transporter.pb-c.c
PROTO_H		:= $(BUILD)/proto/transporter.pb-c.h
PROTO_O		:= $(BUILD)/proto/transporter.pb-c.o

COMMON_SRCS	:= $(sort $(wildcard common/*.c))
SOURCE_SRCS	:= $(sort $(wildcard source-transporter/*.c))
TARGET_SRCS	:= $(sort $(wildcard target-transporter/*.c))
UNIT_SRCS	:= $(sort $(wildcard tests/unit/test_*.c))
TOOL_SRCS	:= $(sort $(wildcard tests/tools/*.c))

objs		 = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_OBJS	:= $(call objs,$(COMMON_SRCS)) $(PROTO_O)
SOURCE_OBJS	:= $(call objs,$(SOURCE_SRCS))
TARGET_OBJS	:= $(call objs,$(TARGET_SRCS))
SOURCE_MAIN	:= $(BUILD)/obj/source-transporter/source.o
TARGET_MAIN	:= $(BUILD)/obj/target-transporter/target.o

LIBCOMMON	:= $(BUILD)/libcommon.a
LIBSOURCE	:= $(BUILD)/libsource.a
LIBTARGET	:= $(BUILD)/libtarget.a

SOURCE_BIN	:= $(BUILD)/source-transporter
TARGET_BIN	:= $(BUILD)/target-transporter
UNIT_BINS	:= $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
TOOL_BINS	:= $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(TOOL_SRCS))
# A test-only LD_PRELOAD shim (tests/tools/faultinject/), never in a daemon.
SHIM		:= $(BUILD)/tests/tools/faultinject.so
BADZSTD		:= $(BUILD)/tests/tools/badzstd.so

# Keep objects of pattern-built programs for the dependency files.
.SECONDARY:

.PHONY: all check run-tests unit demo run-demo bench bench-connections asan fuzz install clean deps soak
all: $(SOURCE_BIN) $(TARGET_BIN)

$(PROTO_C) $(PROTO_H): proto/transporter.proto
	@mkdir -p $(BUILD)/proto
	@echo "  PROTOC  $<"
	$(Q)$(PROTOC_C) --proto_path=proto --c_out=$(BUILD)/proto $<

$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# Unit tests include the daemons' headers.
$(BUILD)/obj/tests/%.o: CPPFLAGS += -Itarget-transporter -Isource-transporter

# protobuf-c's generated code is not ours to keep -Wextra clean.
$(PROTO_O): $(PROTO_C)
	@echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(PKG_CFLAGS) $(HARDEN) $(CFLAGS) -c -o $@ $<

$(LIBCOMMON): $(COMMON_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^
$(LIBSOURCE): $(filter-out $(SOURCE_MAIN),$(SOURCE_OBJS))
	$(Q)rm -f $@ && ar rcs $@ $^
$(LIBTARGET): $(filter-out $(TARGET_MAIN),$(TARGET_OBJS))
	$(Q)rm -f $@ && ar rcs $@ $^

$(SOURCE_BIN): $(SOURCE_MAIN) $(LIBSOURCE) $(LIBCOMMON)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(TARGET_BIN): $(TARGET_MAIN) $(LIBTARGET) $(LIBCOMMON)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIBTARGET) $(LIBSOURCE) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka
$(BUILD)/tests/tools/%: $(BUILD)/obj/tests/tools/%.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Without the sanitizers even in make asan: a preloaded shim cannot carry
# its own ASan runtime (the daemons' comes first).
$(SHIM): tests/tools/faultinject/faultinject.c
	@mkdir -p $(dir $@)
	@echo "  SHLIB   $@"
	$(Q)$(CC) -D_GNU_SOURCE $(WARNFLAGS) -O2 -g -fPIC -shared -o $@ $< -ldl
$(BADZSTD): tests/tools/faultinject/badzstd.c
	@mkdir -p $(dir $@)
	@echo "  SHLIB   $@"
	$(Q)$(CC) -D_GNU_SOURCE $(WARNFLAGS) -O2 -g -fPIC -shared -o $@ $< -ldl

# Installs missing Debian packages when run as root (CI, demo).
deps:
	$(Q)sh tests/deps.sh

unit: $(UNIT_BINS)

# check and demo install missing packages first, then build in a fresh
# make, so pkg-config runs after the -dev packages are there.
check: deps
	$(Q)$(MAKE) --no-print-directory run-tests
run-tests: all $(UNIT_BINS) $(TOOL_BINS) $(SHIM) $(BADZSTD)
	$(Q)BUILD=$(abspath $(BUILD)) sh tests/run.sh $(TESTS)

# Heavier variants of the load tests, too long for make check.
soak: all $(TOOL_BINS)
	$(Q)BUILD=$(abspath $(BUILD)) LOAD_SESSIONS=256 SRC_TIMEOUT=900 \
	    bash tests/integration/load.sh
	$(Q)BUILD=$(abspath $(BUILD)) LONGCHAIN_POINTS=600 \
	    bash tests/integration/longchain.sh

demo: deps
	$(Q)$(MAKE) --no-print-directory run-demo
run-demo: all $(TOOL_BINS)
	$(Q)BUILD=$(abspath $(BUILD)) sh tests/demo.sh

# make install: the daemons, the systemd units (their /usr/sbin/ paths
# rewritten to $(SBINDIR)), the sysusers.d file, the man pages, the PKI
# script and the example configurations, which never replace a file that
# exists (a copy always goes to $(DOCDIR)/examples/).  A distribution
# package uses PREFIX=/usr SYSTEMDUNITDIR=/lib/systemd/system.
SYSTEMDUNITDIR	?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR	?= $(PREFIX)/lib/sysusers.d
DOCDIR		?= $(PREFIX)/share/doc/transporter
INSTALL_UNITS	 = $(wildcard deploy/systemd/*.service deploy/systemd/*.timer)

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSTEMDUNITDIR) \
	    $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR)/examples \
	    $(DESTDIR)$(SYSCONFDIR)/transporter
	install -m 0755 $(SOURCE_BIN) $(TARGET_BIN) $(DESTDIR)$(SBINDIR)/
	install -m 0755 deploy/pki/mint-pki.sh $(DESTDIR)$(DOCDIR)/
	$(Q)for u in $(INSTALL_UNITS); do \
		sed 's|/usr/sbin/|$(SBINDIR)/|g' $$u \
		    >$(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/} && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${u##*/} || exit 1; \
	done
	install -m 0644 deploy/systemd/transporter.sysusers \
	    $(DESTDIR)$(SYSUSERSDIR)/transporter.conf
	install -m 0644 docs/man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 docs/man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 deploy/examples/*.conf $(DESTDIR)$(DOCDIR)/examples/
	$(Q)for f in deploy/examples/*.conf; do \
		dst=$(DESTDIR)$(SYSCONFDIR)/transporter/$${f##*/}; \
		if [ -e "$$dst" ]; then \
			echo "  keeping $$dst"; \
		else \
			install -m 0644 $$f "$$dst" || exit 1; \
		fi; \
	done

clean:
	rm -rf $(BUILD) build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# --- make fuzz: libFuzzer harnesses (tests/fuzz/), built with clang in
# $(FUZZ_BUILD)/ from the project's sources compiled with the fuzzer's
# instrumentation, ASan and UBSan.  Run one with its seed corpus:
#	build-fuzz/fuzz_frame -max_total_time=60 NEW-DIR tests/fuzz/corpus/frame
# (tests/integration/fuzz.sh runs them all for a bounded time).
# build-fuzz/mkcorpus tests/fuzz/corpus rewrites the binary seeds.
FUZZ_BUILD	?= build-fuzz
FUZZ_CC		?= clang
FUZZ_CFLAGS	?= -O1 -g
FUZZ_SAN	:= -fsanitize=address,undefined -fno-sanitize-recover=undefined \
		   -fno-omit-frame-pointer
FUZZ_NAMES	:= frame conf decompress aead ttlv repo
FUZZ_BINS	:= $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_NAMES))
FUZZ_CPPFLAGS	:= -D_GNU_SOURCE -Icommon -Itarget-transporter \
		   -Isource-transporter -I$(FUZZ_BUILD)/proto -Itests/fuzz
# Others' sources: warnings shown, not fatal (clang warns differently).
FUZZ_SRC_FLAGS	 = $(filter-out -Werror,$(WARNFLAGS)) $(PKG_CFLAGS) \
		   $(FUZZ_SAN) -fsanitize=fuzzer-no-link $(FUZZ_CFLAGS)
FUZZ_LIB_SRCS	:= $(COMMON_SRCS) target-transporter/repo.c \
		   target-transporter/config.c source-transporter/config.c
FUZZ_LIB_OBJS	:= $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(FUZZ_LIB_SRCS)) \
		   $(FUZZ_BUILD)/proto/transporter.pb-c.o
FUZZ_LIB	:= $(FUZZ_BUILD)/libfuzzlib.a

fuzz: $(FUZZ_BINS) $(FUZZ_BUILD)/mkcorpus

$(FUZZ_BUILD)/proto/transporter.pb-c.c $(FUZZ_BUILD)/proto/transporter.pb-c.h &: \
    proto/transporter.proto
	@mkdir -p $(FUZZ_BUILD)/proto
	@echo "  PROTOC  $< (fuzz)"
	$(Q)$(PROTOC_C) --proto_path=proto --c_out=$(FUZZ_BUILD)/proto $<

$(FUZZ_BUILD)/proto/transporter.pb-c.o: $(FUZZ_BUILD)/proto/transporter.pb-c.c
	@echo "  FUZZCC  $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(PKG_CFLAGS) $(FUZZ_SAN) \
	    -fsanitize=fuzzer-no-link $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/obj/%.o: %.c | $(FUZZ_BUILD)/proto/transporter.pb-c.h
	@mkdir -p $(dir $@)
	@echo "  FUZZCC  $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_SRC_FLAGS) -MMD -MP -c -o $@ $<

# The harnesses themselves are ours: -Werror.
$(FUZZ_BUILD)/obj/tests/fuzz/%.o: tests/fuzz/%.c \
    | $(FUZZ_BUILD)/proto/transporter.pb-c.h
	@mkdir -p $(dir $@)
	@echo "  FUZZCC  $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(WARNFLAGS) $(PKG_CFLAGS) $(FUZZ_SAN) \
	    -fsanitize=fuzzer-no-link $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	@echo "  FUZZLD  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS) \
	    -lpthread

$(FUZZ_BUILD)/mkcorpus: $(FUZZ_BUILD)/obj/tests/fuzz/mkcorpus.o $(FUZZ_LIB)
	@echo "  FUZZLD  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -o $@ $^ \
	    $(PKG_LIBS) -lpthread

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)

# --- make asan: the whole project and its test suite under AddressSanitizer
# (leaks included) and UBSan, in $(ASAN_BUILD)/, with clang when there is one
# (gcc's UBSan ignores log_path).  The sanitizers write their reports to
# $(ASAN_BUILD)/sanitizer/report.PID instead of stderr, since the daemons' logs
# live in temporary directories that the tests remove; any report fails the
# run.  A small quarantine keeps the memory limits of the tests meaningful.
# ASAN_CFLAGS reach the link line through CFLAGS.
ASAN_BUILD	?= build-asan
ASAN_CC		?= $(if $(shell command -v clang 2>/dev/null),clang,$(CC))
ASAN_CFLAGS	?= -O2 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
		   -fno-sanitize-recover=undefined -U_FORTIFY_SOURCE
ASAN_REPORTS	 = $(abspath $(ASAN_BUILD))/sanitizer
# LeakSanitizer's note when a thread exits while it stops the world: not
# a finding (the leak check still runs); a file with only such lines passes.
ASAN_BENIGN	 = ^==[0-9]*==Unable to get registers from thread [0-9]*\.$$

asan: deps
	$(Q)rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS)
	$(Q)ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=16:log_path=$(ASAN_REPORTS)/report \
	    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(ASAN_REPORTS)/report \
	    TRANSPORTER_ASAN=1 \
	    $(MAKE) --no-print-directory BUILD=$(ASAN_BUILD) CC=$(ASAN_CC) \
	    CFLAGS="$(ASAN_CFLAGS)" run-tests; rc=$$?; \
	    reports=$$(grep -lv "$(ASAN_BENIGN)" $(ASAN_REPORTS)/* 2>/dev/null); \
	    if [ -n "$$reports" ]; then \
		echo "asan: sanitizer reports in $(ASAN_REPORTS):"; \
		head -n 40 $$reports; rc=1; \
	    fi; exit $$rc

# A benchmark, not a test: reports figures, never fails on a slow one.
bench: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(abspath $(BUILD)) bash tests/bench/bench.sh

# How many connections a job should use, through the WAN emulator.
bench-connections: all $(TOOL_BINS)
	$(Q)BUILD=$(abspath $(BUILD)) bash tests/bench/connections.sh
