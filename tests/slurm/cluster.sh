#!/bin/sh
# SPDX-License-Identifier: MIT
# A two-node Slurm cluster on loopback with a vramd per node, for
# tests/slurm/test_slurm.py (see docs/scale-out.md "The test").
#
#   cluster.sh deps              install slurmd, slurmctld, slurm-client, munge,
#                                libslurm-dev with apt-get (root; skipped when
#                                installed)
#   cluster.sh start DIR BUILD   munged, slurmctld, slurmd -N n1 and -N n2, a vramd
#                                per node on one simulated 1 GiB GPU, all under DIR;
#                                the plugins from the build BUILD; libvram.so, the
#                                fake driver and fc-server copied to DIR/lib, DIR/bin
#   cluster.sh vramd DIR BUILD N (re)starts node N's vramd on its state directory
#   cluster.sh stop DIR          ends every process it started (their pids are in
#                                DIR/pids), by pid
#
# Every node has one GPU (a device-file stand-in, DIR/dev/nvidia0) cut into
# 16 shards of 64 MiB; the gres lines come from `vramctl slurm-gres`.
set -eu

SHARD_SIZE=64MiB
CTLD_PORT=${VRAM_SLURM_PORT:-16817}

deps() {
	missing=
	for p in slurmd slurmctld slurm-client munge libslurm-dev; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

# Runs "$@" in the background with its output in LOG; its pid goes to DIR/pids.
bg() {
	log=$1; shift
	setsid "$@" >"$log" 2>&1 </dev/null &
	echo $! >>"$DIR/pids"
}

vramd_start() {
	n=$1
	port=$((CTLD_PORT + 10 + ${n#n}))
	mkdir -p "$DIR/vramd-$n"
	chmod 0755 "$DIR/vramd-$n"
	cat >"$DIR/vramd-$n.yaml" <<EOC
daemon:
  listen: 127.0.0.1:$port
  state_dir: $DIR/vramd-$n
  socket: $DIR/vramd-$n/vramd.sock
  log_level: debug
gpus:
  backend: sim
  sim: 1x1GiB
  reserve: 0
host:
  reserve: 256MiB
workloads: {}
EOC
	bg "$DIR/vramd-$n.log" "$BUILD/src/daemon/bin/vramd" --config "$DIR/vramd-$n.yaml"
	tail -n1 "$DIR/pids" >"$DIR/vramd-$n.pid"
	i=0
	# the socket of a vramd that was killed is still there: wait for an answer
	until "$BUILD/src/ctl/bin/vramctl" --url "$DIR/vramd-$n/vramd.sock" status >/dev/null 2>&1; do
		i=$((i + 1)); [ $i -lt 200 ] || { echo "vramd $n did not start" >&2; cat "$DIR/vramd-$n.log" >&2; exit 1; }
		sleep 0.1
	done
}

# Where Debian's Slurm keeps its own plugins (task/vramd is added after it).
plugin_dir() {
	dirname "$(dpkg -L slurm-wlm-basic-plugins 2>/dev/null | grep '/proctrack_linuxproc.so$' | head -n1)"
}

start() {
	mkdir -p "$DIR/state" "$DIR/dev" "$DIR/munge"
	chmod 0755 "$DIR" "$DIR/dev"
	chmod 0755 "$DIR/munge" # jobs of other users reach the socket; the key stays 0400
	: >"$DIR/pids"
	host=$(hostname -s)
	# munged of our own: its own key and socket (slurm.conf AuthInfo names it)
	[ -f "$DIR/munge/munge.key" ] || dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge/munge.key" 2>/dev/null
	chmod 0400 "$DIR/munge/munge.key"
	bg "$DIR/munged.out" munged --foreground --force --key-file="$DIR/munge/munge.key" \
		--socket="$DIR/munge/munge.sock" --pid-file="$DIR/munge/munged.pid" \
		--log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
	: >"$DIR/dev/nvidia0"
	# what the jobs load, where users other than root reach it (the build may be in /root)
	mkdir -p "$DIR/lib" "$DIR/bin"
	cp "$BUILD/src/hook/libvram.so" "$BUILD/tests/fakecuda/libcuda.so.1" "$DIR/lib/"
	cp "$BUILD/tests/fakecuda/fc-server" "$DIR/bin/"
	chmod 0755 "$DIR/lib" "$DIR/bin"
	for n in n1 n2; do vramd_start $n; done
	# the gres lines of each node as vramd sees its GPUs (both nodes alike here)
	"$BUILD/src/ctl/bin/vramctl" --url "$DIR/vramd-n1/vramd.sock" slurm-gres \
		--memory $SHARD_SIZE --name 'n[1-2]' "$DIR/dev" >"$DIR/gres.lines"
	grep -v '^#' "$DIR/gres.lines" | grep '^NodeName=.*Name=' >"$DIR/gres.conf"
	node_gres=$(sed -n 's/^NodeName=[^ ]* Gres=\([^ ]*\).*/\1/p' "$DIR/gres.lines")
	cat >"$DIR/cgroup.conf" <<EOC
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOC
	cat >"$DIR/plugstack.conf" <<EOC
optional $BUILD/src/spank/spank_vramd.so socket=$DIR/vramd-%n/vramd.sock hook=$DIR/lib/libvram.so shard_size=$SHARD_SIZE
EOC
	cat >"$DIR/slurm.conf" <<EOC
ClusterName=vramt
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.sock
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
SlurmdDebug=debug
PlugStackConfig=$DIR/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/vramd
PluginDir=$(plugin_dir):$BUILD/src/spank
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
GresTypes=gpu,shard
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((CTLD_PORT + 1)) CPUs=2 RealMemory=10000 Gres=$node_gres
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((CTLD_PORT + 2)) CPUs=2 RealMemory=10000 Gres=$node_gres
PartitionName=main Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOC
	export SLURM_CONF="$DIR/slurm.conf"
	i=0
	until [ -S "$DIR/munge/munge.sock" ]; do
		i=$((i + 1)); [ $i -lt 100 ] || { echo "munged did not start" >&2; cat "$DIR/munged.out" >&2; exit 1; }
		sleep 0.1
	done
	bg "$DIR/slurmctld.out" slurmctld -D -i
	# task/vramd finds each node's vramd here (%n: the node's name)
	for n in n1 n2; do
		VRAM_SLURM_SOCKET="$DIR/vramd-%n/vramd.sock" bg "$DIR/slurmd-$n.out" slurmd -D -N $n
	done
	i=0
	until [ "$(sinfo -h -o '%T' 2>/dev/null | sort -u | tr -d '\n')" = idle ] && \
	      [ "$(sinfo -h -N -o '%N' 2>/dev/null | sort -u | wc -l)" = 2 ]; do
		i=$((i + 1))
		[ $i -lt 600 ] || { echo "the nodes did not come up" >&2; sinfo -N >&2 || true; tail -20 "$DIR"/slurm*.log >&2; exit 1; }
		sleep 0.1
	done
}

stop() {
	[ -f "$DIR/pids" ] || return 0
	for pid in $(cat "$DIR/pids"); do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in $(cat "$DIR/pids"); do
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	rm -f "$DIR/pids"
}

cmd=${1:-}
case "$cmd" in
deps) deps ;;
start) DIR=$2; BUILD=$3; start ;;
vramd) DIR=$2; BUILD=$3; vramd_start "$4" ;;
stop) DIR=$2; stop ;;
*) echo "usage: $0 deps | start DIR BUILD | vramd DIR BUILD NODE | stop DIR" >&2; exit 2 ;;
esac
