"""gpus.visible_devices: how a workload's CUDA_VISIBLE_DEVICES names its GPUs."""

import pytest

from conftest import pids_of, wait_for


def workload_env(d, name):
    pid = pids_of(d.workload(name))[0]
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x]
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.parametrize("naming", [None, "index", "uuid"])
def test_cuda_visible_devices_naming(daemon, naming):
    gpus = f"gpus:\n  visible_devices: {naming}\n" if naming else ""
    d = daemon(gpus + "workloads:\n  a:\n    cmd: [sleep, '100']\n    gpus: [1]\n"
               "    memory: 1GiB\n    start: eager\n    health: none\n")
    wait_for(lambda: pids_of(d.workload("a")), what="a's process")
    env = workload_env(d, "a")
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    if naming == "uuid":
        assert env["CUDA_VISIBLE_DEVICES"].startswith("GPU-sim-")
        assert "," not in env["CUDA_VISIBLE_DEVICES"]
    else:
        assert env["CUDA_VISIBLE_DEVICES"] == "1"
