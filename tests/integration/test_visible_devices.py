# SPDX-License-Identifier: MIT
"""gpus.visible_devices: how a workload's CUDA_VISIBLE_DEVICES names its GPUs."""

import os

import pytest

from conftest import BUILD, SOURCE, pids_of, wait_for

FAKE_MPS = os.path.join(SOURCE, "tests", "unit", "data", "mps-fake-control")


def workload_env(d, name):
    return environ_of(pids_of(d.workload(name))[0])


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


def environ_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x]
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.parametrize("naming", ["index", "uuid"])
def test_mps_keeps_uuids_and_clients_count_from_0(daemon, monkeypatch, naming):
    """The MPS daemon is started on UUIDs either way; its server renumbers the
    GPUs from 0, so a client under index naming gets 0, never the host's 1."""
    monkeypatch.setenv("VRAM_MPS_CONTROL", FAKE_MPS)
    d = daemon(f"gpus:\n  visible_devices: {naming}\n"
               "workloads:\n  a:\n    cmd: [sleep, '100']\n    gpus: [1]\n    memory: 1GiB\n"
               "    share: mps\n    start: eager\n    health: none\n")
    wait_for(lambda: pids_of(d.workload("a")), what="a's process")
    [dm] = d.status()["mps"]["daemons"]
    daemon_visible = environ_of(dm["control_pid"])["CUDA_VISIBLE_DEVICES"]
    assert daemon_visible.startswith("GPU-sim-") and "," not in daemon_visible
    client = environ_of(pids_of(d.workload("a"))[0])
    assert client["CUDA_MPS_PIPE_DIRECTORY"] == dm["pipe_dir"]
    assert client["CUDA_VISIBLE_DEVICES"] == ("0" if naming == "index" else daemon_visible)


FAKE_NVML = os.path.join(BUILD, "tests", "fakenvml", "libnvidia-ml.so.1")


@pytest.mark.parametrize("swapped", [False, True])
def test_start_warns_when_gpu_order_is_not_pci_order(daemon, monkeypatch, swapped):
    """Index naming is only right when the backend lists GPUs in PCI bus order."""
    monkeypatch.setenv("VRAM_NVML_LIBRARY", FAKE_NVML)
    monkeypatch.setenv("FAKENVML_BUS_SWAPPED", "1" if swapped else "0")
    d = daemon("gpus:\n  backend: nvml\nworkloads: {}\n", gpus=None)
    warned = "not in PCI bus order" in d.log_text()
    assert warned == swapped, d.log_text()
    if swapped:
        assert ("GPU 0 (00000000:65:00.0) comes before GPU 1 (00000000:17:00.0) but not in "
                "PCI bus order") in d.log_text()
