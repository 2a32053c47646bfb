#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""GPU proof of CUDA IPC between two hooked processes (run-ipc.sh runs it
with libvram.so preloaded and VRAM_CONTROL set, so each process has its own
control socket).

  ipc_check.py mp  [--mib N] [--cycles C]   torch.multiprocessing shares CUDA
                                             tensors with a child; both are
                                             offloaded and restored as one
                                             (gate both, copy both, restore
                                             both with gates held, open both)
  ipc_check.py raw [--mib N] [--cycles C]   cudaIpcGetMemHandle in the parent,
                                             cudaIpcOpenMemHandle in a child
                                             (vLLM's custom all-reduce pattern):
                                             without an offload, with the
                                             parent offloaded alone (the shared
                                             buffer stays and is reported), and
                                             with both offloaded as one

Each step checks that both processes compute the same results as before.
Prints one RESULT line.
"""
import argparse
import ctypes
import os
import socket
import sys

import torch
import torch.multiprocessing as mp


def ctl(cmd, pid=None):
    path = os.environ["VRAM_CONTROL"].replace("%p", str(pid or os.getpid()))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall((cmd + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    line = buf.decode().strip()
    if not line.startswith("ok "):
        sys.exit(f"{cmd} (pid {pid or os.getpid()}): {line}")
    fields = {}
    for tok in line.split(" text=")[0].split()[2:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    return fields


def group_cycle(pids):
    """Moves the processes as vramd moves a group."""
    moved = 0
    for p in pids:
        ctl("gate", p)
    for p in pids:
        moved += int(ctl("offload", p)["bytes"])
    for p in pids:
        ctl("restore hold", p)
    for p in pids:
        ctl("restore", p)
    return moved


def digest(t):
    return float(t.double().sum()), float((t.double() * torch.arange(t.numel(), device=t.device).double()
                                          .reshape(t.shape)).sum())


# ---- torch.multiprocessing


def mp_child(q_in, q_out):
    torch.cuda.init()
    while True:
        msg = q_in.get()
        if msg is None:
            return
        if msg == "pid":
            q_out.put(os.getpid())
            continue
        shared, w = msg
        y = shared @ w          # reads the parent's memory
        shared.add_(1.0)        # writes it
        torch.cuda.synchronize()
        q_out.put(digest(y))


def run_mp(mib, cycles):
    ctx = mp.get_context("spawn")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=mp_child, args=(q_in, q_out))
    child.start()
    q_in.put("pid")
    cpid = q_out.get(timeout=120)
    torch.manual_seed(0)
    rows = max(1, (mib << 20) // (4 * 1024))
    shared = torch.randn(rows, 1024, device="cuda")
    w = torch.randn(1024, 256, device="cuda")
    keep = shared.clone()

    def step():
        shared.copy_(keep)
        q_in.put((shared, w))
        got = q_out.get(timeout=300)
        torch.cuda.synchronize()
        return got, digest(shared)
    expected = step()
    moved = 0
    for c in range(cycles):
        moved = group_cycle([os.getpid(), cpid])
        got = step()
        if got != expected:
            sys.exit(f"cycle {c}: {got} != {expected}")
        print(f"cycle {c}: moved {moved} bytes from the parent, results identical", flush=True)
    q_in.put(None)
    child.join(60)
    print(f"RESULT mp cycles={cycles} parent_moved={moved} identical=1")


# ---- raw cudaIpc*


class IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * 64)]


def cudart():
    for name in ("libcudart.so.12", "libcudart.so.13", "libcudart.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    # torch's own copy
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    for f in sorted(os.listdir(libdir)):
        if f.startswith("libcudart"):
            return ctypes.CDLL(os.path.join(libdir, f))
    sys.exit("no libcudart")


def raw_child(hex_handle, nbytes, conn):
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    rt = cudart()
    h = IpcHandle()
    ctypes.memmove(ctypes.byref(h), bytes.fromhex(hex_handle), 64)
    ptr = ctypes.c_void_p()
    r = rt.cudaIpcOpenMemHandle(ctypes.byref(ptr), h, ctypes.c_uint(1))
    if r != 0:
        conn.send(("error", f"cudaIpcOpenMemHandle returned {r}"))
        return
    host = (ctypes.c_float * (nbytes // 4))()
    conn.send(("pid", os.getpid()))
    while True:
        cmd = conn.recv()
        if cmd == "quit":
            break
        # read the parent's bytes, answer their sum; then write 1.0 into the last element
        rt.cudaMemcpy(host, ptr, ctypes.c_size_t(nbytes), 2)  # DeviceToHost
        s = sum(host[i] for i in range(0, nbytes // 4, 997))
        one = ctypes.c_float(1.0)
        rt.cudaMemcpy(ctypes.c_void_p(ptr.value + nbytes - 4), ctypes.byref(one), ctypes.c_size_t(4), 1)
        rt.cudaDeviceSynchronize()
        conn.send(("sum", s))
    rt.cudaIpcCloseMemHandle(ptr)
    conn.send(("closed", 0))


def run_raw(mib, cycles):
    rt = cudart()
    torch.manual_seed(0)
    buf = torch.randn((mib << 20) // 4, device="cuda")
    torch.cuda.synchronize()
    keep = buf.clone()
    h = IpcHandle()
    r = rt.cudaIpcGetMemHandle(ctypes.byref(h), ctypes.c_void_p(buf.data_ptr()))
    if r != 0:
        sys.exit(f"cudaIpcGetMemHandle returned {r}")
    # an offload between the handle and the open: the buffer moves (nobody has it open)
    ctl("offload")
    ctl("restore")
    ctx = mp.get_context("spawn")
    parent, child_end = ctx.Pipe()
    child = ctx.Process(target=raw_child, args=(bytes(h.reserved).hex().ljust(128, "0"), buf.numel() * 4, child_end))
    child.start()
    kind, cpid = parent.recv()
    if kind != "pid":
        sys.exit(cpid)

    def step():
        buf.copy_(keep)
        torch.cuda.synchronize()
        parent.send("sum")
        kind, s = parent.recv()
        torch.cuda.synchronize()
        return round(s, 3), float(buf[-1])
    expected = step()
    if expected[1] != 1.0:
        sys.exit("the child's write did not reach the parent's buffer")
    # the parent alone: the shared buffer stays on the device and is reported
    off = ctl("offload")
    stayed = int(off["nonmovable"])
    if stayed < buf.numel() * 4:
        sys.exit(f"offload while shared left only {stayed} bytes on the device")
    ctl("restore")
    if step() != expected:
        sys.exit("results differ after an offload while shared")
    moved = 0
    for c in range(cycles):
        moved = group_cycle([os.getpid(), cpid])
        got = step()
        if got != expected:
            sys.exit(f"cycle {c}: {got} != {expected}")
        print(f"cycle {c}: moved {moved} bytes from the exporter, results identical", flush=True)
    parent.send("quit")
    parent.recv()
    child.join(60)
    print(f"RESULT raw cycles={cycles} stayed_when_alone={stayed} moved_in_group={moved} identical=1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["mp", "raw"])
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--cycles", type=int, default=5)
    a = ap.parse_args()
    (run_mp if a.what == "mp" else run_raw)(a.mib, a.cycles)


if __name__ == "__main__":
    main()
