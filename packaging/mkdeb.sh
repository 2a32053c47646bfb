#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds vramd_<version>_<arch>.deb: a /usr build in BUILD_DIR (set up on
# first use, without the tests), `meson install` staged under
# BUILD_DIR/deb-root, then dpkg-deb. The runtime dependencies are the
# packages that own the shared libraries the installed binaries load.
# Usage: packaging/mkdeb.sh [BUILD_DIR] [OUT_DIR]; prints the .deb's path last.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-deb}
out=${2:-.}
cd "$src"
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" --prefix /usr --sysconfdir /etc -Dtests=false -Dbuildtype=release >/dev/null
fi
ninja -C "$build" >/dev/null
stage="$build/deb-root"
rm -rf "$stage"
meson install -C "$build" --no-rebuild --destdir deb-root >/dev/null
mkdir -p "$stage/DEBIAN"

version=$("$build/src/daemon/bin/vramd" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
# libc6 and the libraries vramd, vramctl and the demo server link (libevent,
# jansson, libfyaml), as the dpkg database names their packages here
depends=$(for f in "$stage"/usr/bin/* "$stage"/usr/lib/vramd/*.so; do
		ldd "$f" | awk '$3 ~ /^\// {print $3}'
	done | sort -u | while read -r lib; do
		dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib"
	done | cut -d: -f1 | sort -u | while read -r pkg; do
		v=$(dpkg-query -W -f '${Version}' "$pkg" | sed 's/-[^-]*$//')
		printf '%s (>= %s), ' "$pkg" "$v"
	done | sed 's/, $//')
size=$(du -sk --exclude DEBIAN "$stage" | cut -f1)

cat >"$stage/DEBIAN/control" <<CONTROL
Package: vramd
Version: $version
Architecture: $arch
Maintainer: vramd developers <vramd@localhost>
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Homepage: https://github.com/vramd/vramd
Description: GPU memory manager for AI model services
 vramd runs many model services on a few NVIDIA GPUs: it places them by
 policy, caps their GPU memory, starts them on demand and parks idle ones
 in host RAM. Without an NVIDIA driver it runs on simulated GPUs.
CONTROL
echo /etc/vramd/vramd.yaml >"$stage/DEBIAN/conffiles"
# systemd learns of the unit; the service is not enabled on install
# (`systemctl enable --now vramd`), as the default config is a demo.
for script in postinst postrm; do
	cat >"$stage/DEBIAN/$script" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
SCRIPT
	chmod 0755 "$stage/DEBIAN/$script"
done
cat >"$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	systemctl stop vramd.service >/dev/null 2>&1 || true
fi
SCRIPT
chmod 0755 "$stage/DEBIAN/prerm"

mkdir -p "$out"
deb="$out/vramd_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
