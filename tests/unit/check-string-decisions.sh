#!/bin/sh
# SPDX-License-Identifier: MIT
#
# No module decides by matching a workload state's name, a state change's
# reason sentence or an event's name as a string: inside vramd they are
# enums (enum vram_wl_state, enum vram_event_reason, enum vram_event_kind in
# daemon/manager.h), and text is made from them only where it leaves the
# process. A string compared against them would silently stop matching
# when a sentence is reworded (as metrics' eviction counter once did).
#
# Usage: check-string-decisions.sh SRC_DIR. Prints every match outside the
# exceptions below and fails if there is one.
set -u
src=${1:?usage: check-string-decisions.sh SRC_DIR}

# strcmp, strncmp, strcasecmp, strncasecmp or strstr against a state name,
# a reason's word or an event's name, or against vram_wl_state_name().
words='stopped|starting|ready|offloading|offloaded|restoring|stopping|failed|evicted|idle|asked|healthy|crash|state|reload'
pattern="(strn?(case)?cmp|strstr)\\([^;]*(\"($words)|vram_wl_state_name)"

# The exceptions, each a file where such text is the input of a parser of
# what comes from outside the daemon, with why:
#  - src/ctl/ctl.c: vramctl parses its command line ("reload") and reads
#    workload states from the daemon's JSON replies, its only source of them;
#  - src/ctl/table.c: vramctl's status table, from the same JSON.
allowed='^(src/ctl/ctl\.c|src/ctl/table\.c):'

cd "$src/.." || exit 2
found=$(grep -rnE "$pattern" src | grep -vE "$allowed")
if [ -n "$found" ]; then
	echo "A decision made by matching a state, reason or event name as a string" >&2
	echo "(use the enums of daemon/manager.h and core/workload.h):" >&2
	echo "$found" >&2
	exit 1
fi
echo "no decision matches a state, reason or event name as a string"
exit 0
