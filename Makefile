# SPDX-License-Identifier: MIT
# Thin wrapper over Meson/Ninja. `make deps` installs the Debian packages
# (as root); `make run` builds and runs vramd on the demo config; `make test`
# runs every test: unit, fake-driver, fuzz corpus and integration tests in a
# normal build, all of them again under ASan+UBSan, and the unit tests under
# valgrind. `make install` installs under PREFIX (default /usr/local; DESTDIR
# honoured); `make deb` builds a Debian package into DEB_OUT.

BUILD      ?= build
ASAN_BUILD ?= build-asan
CONFIG     ?= examples/demo.yaml
MESON_OPTS ?=
PREFIX     ?= /usr/local
DEB_BUILD  ?= build-deb
DEB_OUT    ?= .

DEB_PACKAGES = build-essential pkg-config meson ninja-build \
	libevent-dev libjansson-dev libfyaml-dev libcmocka-dev \
	python3 python3-pytest python3-requests valgrind wrk curl liburing-dev
# The dashboard's browser tests (tests/browser): Playwright drives this Chromium.
DEB_PACKAGES += chromium
# the container test runs podman (with runc: crun fails on some hosts) on an image of busybox
DEB_PACKAGES += podman runc busybox-static
# vramctl top draws with ncurses; its test drives it in tmux
DEB_PACKAGES += libncurses-dev tmux
# the two-node Slurm test (tests/slurm) runs Debian's slurmd, slurmctld and munge
DEB_PACKAGES += slurmd slurmctld slurm-client munge libslurm-dev

.PHONY: all build deps bench-deps test-clients run install deb test test-normal test-asan test-valgrind bench clean

all: build

deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make deps installs Debian packages: run it as root" >&2; exit 1; fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)
	@# Node.js for the npm clients of the integration tests, unless one is there.
	command -v node >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
	$(MAKE) test-clients

# The npm clients the integration tests drive vramd with (the MCP SDK and the
# openai package), pinned by tests/integration/js/package-lock.json;
# playwright-core for the dashboard's browser tests, which uses the system
# Chromium (no browser download); and the official MCP conformance suite
# with the Node 22 it runs on, pinned by tests/conformance/package-lock.json.
test-clients:
	npm ci --no-audit --no-fund --prefix tests/integration/js
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --prefix tests/browser
	npm ci --no-audit --no-fund --prefix tests/conformance

$(BUILD)/build.ninja:
	meson setup $(BUILD) --prefix $(PREFIX) $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug $(MESON_OPTS)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

# The examples name their commands (vram-demo-server) as an install has them,
# on PATH: the build tree's are put first.
run: build
	PATH="$(CURDIR)/$(BUILD)/src/demo:$(CURDIR)/$(BUILD)/src/ctl/bin:$$PATH" \
		./$(BUILD)/src/daemon/bin/vramd --config $(CONFIG)

# The prefix is compiled in (the default config, libvram.so), so the build
# directory takes PREFIX before it builds. DESTDIR stages the install.
install: $(BUILD)/build.ninja
	meson configure $(BUILD) -Dprefix=$(PREFIX)
	ninja -C $(BUILD)
	meson install -C $(BUILD) --no-rebuild $(if $(DESTDIR),--destdir "$(DESTDIR)")

# A .deb of a /usr install, by dpkg-deb over a staged `meson install`
# (packaging/mkdeb.sh); its own build directory, without the tests.
deb:
	packaging/mkdeb.sh $(DEB_BUILD) $(DEB_OUT)

test: test-normal test-asan test-valgrind
	@echo "all test suites passed"

test-normal: build
	meson test -C $(BUILD) --print-errorlogs --num-processes 2

test-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		meson test -C $(ASAN_BUILD) --print-errorlogs --num-processes 2

test-valgrind: build
	meson test -C $(BUILD) --suite unit --print-errorlogs --num-processes 2 \
		--wrapper 'valgrind --quiet --child-silent-after-fork=yes --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=1'

# What the gateway benchmark compares against: nginx as a reverse proxy
# (without it, its rows are left out). The package's own service, which it
# starts where services may start, is stopped and disabled again: the
# benchmark runs an nginx of its own on loopback.
bench-deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make bench-deps installs Debian packages: run it as root" >&2; exit 1; fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light
	-systemctl disable --now nginx 2>/dev/null || service nginx stop 2>/dev/null || true

bench: build
	./bench/run-all.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(DEB_BUILD)
