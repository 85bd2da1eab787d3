"""Runs a celebgan command as root of a new user and mount namespace, as `unshare -rm` would, on
file systems mounted for it alone: a small tmpfs (a full disk) or a read-only view of a folder.
Nothing outside the process sees the mounts, and the machine's own are untouched.

    python -c "import mount_namespace; mount_namespace.main()" SPEC.json

SPEC: {"tmpfs": [[folder, "8k"], ...], "read_only": [folder, ...], "fill": [[file, bytes], ...],
"mkdir": [folder, ...], "module": "celebgan.train", "args": [...], "list": folder or null,
"epoch_of": checkpoint or null}. The mounts are made, the files filled and the folders made in that
order; then the module runs as `python -m MODULE ARGS` would. After it, inside the namespace, "list"
prints `ls -a` of a folder, and "epoch_of" the epoch stored in a checkpoint (`epoch N`). The exit
status is the command's. Exit status 77 and "no user namespaces" where the kernel refuses them.

A -c command, so the tests' fork server serves it: the namespace is the command's own process's."""
import ctypes
import errno
import json
import os
import runpy
import sys

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
# statvfs's ST_* flags that a bind remount inside a user namespace must keep (they have the MS_* values)
KEPT = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME | os.ST_RELATIME
NO_NAMESPACES = 77

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags: int, data) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def enter() -> None:
    """Become root of a new user and mount namespace whose mounts do not propagate out."""
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        print(f"no user namespaces: unshare: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        sys.exit(NO_NAMESPACES)
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    enter()
    for folder, size in spec.get("tmpfs", []):
        _mount("tmpfs", folder, "tmpfs", 0, f"size={size}")
    for folder in spec.get("read_only", []):
        _mount(folder, folder, None, MS_BIND | MS_REC, None)
        kept = os.statvfs(folder).f_flag & KEPT
        _mount(None, folder, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept, None)
    for path, size in spec.get("fill", []):  # as much of it as fits, as `head -c SIZE /dev/zero > FILE`
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, bytes(size))
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
    for folder in spec.get("mkdir", []):
        os.mkdir(folder)
    sys.argv = [spec["module"], *spec["args"]]
    try:
        runpy.run_module(spec["module"], run_name="__main__", alter_sys=True)  # as -m runs it
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if spec.get("list"):
            print("\n".join(sorted([".", "..", *os.listdir(spec["list"])])))
        if spec.get("epoch_of"):
            import torch

            print("epoch", torch.load(spec["epoch_of"], weights_only=True)["epoch"])
