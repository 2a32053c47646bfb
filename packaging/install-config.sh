#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the default config as $1/vramd.yaml (under $DESTDIR) unless a
# config is already there. $2: the default config in the source tree.
set -eu
dest="${DESTDIR:-}$1/vramd.yaml"
if [ -e "$dest" ]; then
	echo "Keeping the existing $dest"
	exit 0
fi
install -D -m 0644 "$2" "$dest"
echo "Installing the default config to $dest"
