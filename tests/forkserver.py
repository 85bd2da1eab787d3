"""Command lines for the tests, forked from an interpreter that has already imported the libraries.

A test that runs `python -m celebgan.train ...` pays 4-5 CPU-s of imports (torch, then Lightning,
which imports torchmetrics, torchvision and torch._dynamo) before the command's own work: about half
of what make test cost. Each test process (an xdist worker) therefore starts one server, which
imports those libraries once and, for each such command, forks a process that becomes it: its own
pid, argv (sys.argv and sys.orig_argv), environment, working directory, sys.path (from its
PYTHONPATH, as the interpreter builds it), standard streams and pass_fds, signal dispositions,
session (start_new_session) and exit status, with atexit, thread joins and stream flushes as a
process that ends has them. subprocess.Popen drives it as any child: poll, wait, communicate,
timeouts, send_signal, kill, killpg. tests/test_forkserver.py compares the two.

Only what is the same either way is served: `python -c CODE`, `python -m celebgan.X`, or
`python /abs/path/script.py` inside the checkout; with an environment that differs from the
server's only in what is read as a command runs (PYTHONPATH, CELEBGAN_* settings, Lightning's seed,
TMPDIR, pytest's PYTEST_CURRENT_TEST: a library reads the rest as it is imported); and with no
preexec_fn, user, group, umask or shell. Anything else starts a real process, as does every command
inside `real()` or when CELEBGAN_TEST_FORKSERVER=0. CELEBGAN_TEST_FORKSERVER_LOG=FILE appends a
line for each command: served, or why it started as a process.

What differs from a new interpreter: sys.modules holds the libraries already (a test of what a
command imports starts a real process); the hash seed is the server's, not a new one per command;
an import-time line would be printed by the server alone (the server checks that its imports print
nothing and stands down otherwise); a traceback of an uncaught exception shows the server's frames
above the command's; and the process's parent is a supervisor, not the test.

The server runs `serve`; tests use `install`, which makes subprocess.Popen this module's Popen.
"""
import contextlib
import errno
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("celebgan.", "process_probe")  # what `-m` may name: the project's commands, tests/process_probe.py
PRELOAD = ("lightning.pytorch", "torchvision", "hydra", "omegaconf")  # ~4 of a command's ~4.3 CPU-s of imports
# The environment is read by the libraries as they are imported, and so frozen in the server: a
# command whose environment differs from the server's starts as a real process, unless the
# difference is in these (read as a command runs: Lightning's seed_everything leaves PL_GLOBAL_SEED
# and PL_SEED_WORKERS behind in the test process; TMPDIR, as the command's tempfile is made to
# look again) or in celebgan's own settings.
SAME_EITHER_WAY = ("PYTHONPATH", "PYTEST_CURRENT_TEST", "PL_GLOBAL_SEED", "PL_SEED_WORKERS", "TMPDIR")
SETTING_PREFIX = "CELEBGAN_"
READY = "forkserver ready"
_STATUS = struct.Struct("q")


# ---------------------------------------------------------------------------------------------
# The server: imports, then one supervisor per command, which forks the command and reports its pid
# and its wait status. The supervisor, not the server, waits, so the server never blocks.

def serve(path: str) -> None:
    import gc

    for name in PRELOAD:
        __import__(name)
    # The libraries' objects are nobody's garbage: out of the collector's sight, a command's
    # collections (and the one at its exit) neither walk nor copy the pages it shares with the server.
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    sys_path = _base_sys_path()
    tasks = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
    print(f"{READY} {tasks}", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing more for the test process to read
    os.dup2(devnull, 2)
    os.close(devnull)
    # No `with` or `finally` here: a command runs below this frame and leaves through it.
    while True:
        readable, _, _ = select.select([listener, 0], [], [], 1.0)
        _reap()
        if 0 in readable and not os.read(0, 1):
            return  # the test process has gone (it holds the other end of our stdin)
        if listener not in readable:
            continue
        conn, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 256)
        if message and len(fds) >= 3 and os.fork() == 0:
            listener.close()
            _supervise(conn, json.loads(message), fds, sys_path)
        conn.close()
        for fd in fds:
            os.close(fd)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _base_sys_path() -> list[str]:
    """sys.path without its first entry and without what the server's own PYTHONPATH added."""
    added = set(_python_path(os.environ.get("PYTHONPATH", ""), os.getcwd()))
    return [p for p in sys.path[1:] if p not in added]


def _python_path(value: str, cwd: str) -> list[str]:
    # As the interpreter reads PYTHONPATH: relative entries (an empty one is the current directory)
    # against the starting directory, normalised (sys.path drops repeats).
    entries = value.split(os.pathsep) if value else []
    return [os.path.normpath(os.path.join(cwd, e)) for e in entries]


def _supervise(conn: socket.socket, request: dict, fds: list[int], sys_path: list[str]) -> None:
    started_r, started_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        conn.close()
        os.close(started_r)
        _become(request, fds, sys_path, started_w)  # leaves by SystemExit (or an exception) to the top
    os.close(started_w)
    for fd in fds:
        os.close(fd)
    os.read(started_r, 1)  # EOF: the command has its session, streams and directory (as exec would)
    os.close(started_r)
    try:
        conn.send(_STATUS.pack(pid))
        _, status = os.waitpid(pid, 0)
        conn.send(_STATUS.pack(status))
    except OSError:
        pass  # the test process is gone
    os._exit(0)


def _become(request: dict, fds: list[int], sys_path: list[str], started_w: int) -> None:
    import signal

    if request["new_session"]:
        os.setsid()
    ignored = set(request["ignored"])
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        # A new interpreter: what its parent ignores stays ignored, the rest is reset by exec, and
        # Python itself ignores SIGPIPE and SIGXFSZ and handles SIGINT.
        if signum in ignored or signum in (signal.SIGPIPE, signal.SIGXFSZ):
            handler = signal.SIG_IGN
        elif signum == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        try:
            signal.signal(signum, handler)
        except (OSError, ValueError):
            pass
    import fcntl

    # Its standard streams and pass_fds at their numbers, and nothing else open (close_fds).
    # Moved out of the way first: a received copy may sit at a number that one of them takes.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in zip([0, 1, 2, *request["pass_fds"]], high):
        os.dup2(fd, target)
    for fd in high:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["code"] is not None:
        first = ""  # -c: the current directory, as it is whenever an import looks
    else:
        first = request["cwd"] if request["module"] else os.path.dirname(os.path.realpath(request["script"]))
    seen, path = set(), []
    for entry in [*_python_path(request["env"].get("PYTHONPATH", ""), request["cwd"]), *sys_path]:
        if entry not in seen:
            seen.add(entry)
            path.append(entry)
    sys.path[:] = [first, *path]
    sys.orig_argv = list(request["orig_argv"])
    sys.argv = ["-c" if request["code"] is not None else "-m" if request["module"] else request["script"],
                *request["args"]]
    _new_streams()
    import importlib
    import tempfile

    importlib.invalidate_caches()
    tempfile.tempdir = None  # found again from TMPDIR, as a new interpreter would
    if "numpy" in sys.modules:  # a new interpreter seeds NumPy's global generator afresh
        sys.modules["numpy"].random.seed()
    os.close(started_w)
    import runpy

    if request["code"] is not None:  # as `python -c` runs it: in a __main__ of its own
        import types

        main = types.ModuleType("__main__")
        main.__loader__ = sys.modules["__main__"].__loader__
        sys.modules["__main__"] = main
        exec(compile(request["code"], "<string>", "exec"), main.__dict__)
    elif request["module"]:
        runpy._run_module_as_main(request["module"], alter_argv=True)  # what `python -m` calls
    else:
        runpy.run_path(request["script"], run_name="__main__")
    sys.exit(0)


def _new_streams() -> None:
    import io

    buffered = not sys.__stdout__.write_through  # the interpreter's -u or PYTHONUNBUFFERED

    def stream(fd: int, mode: str, name: str, like, line_buffering: bool):
        # As the interpreter builds them: a TTY's output line by line, stderr's always; unbuffered
        # output written through.
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = name
        if mode == "rb":
            return io.TextIOWrapper(io.BufferedReader(raw), encoding=like.encoding, errors=like.errors)
        layer = io.BufferedWriter(raw) if buffered else raw
        return io.TextIOWrapper(layer, encoding=like.encoding, errors=like.errors, newline="\n",
                                line_buffering=buffered and line_buffering, write_through=not buffered)

    old = {id(sys.__stdout__): 1, id(sys.__stderr__): 2}
    sys.stdin = sys.__stdin__ = stream(0, "rb", "<stdin>", sys.__stdin__, False)
    sys.stdout = sys.__stdout__ = stream(1, "wb", "<stdout>", sys.__stdout__, os.isatty(1))
    sys.stderr = sys.__stderr__ = stream(2, "wb", "<stderr>", sys.__stderr__, True)
    # Log handlers made as the libraries were imported hold the streams of that time (Lightning's
    # console handler: sys.stderr), as they would in a new interpreter: these.
    import logging

    for ref in list(logging._handlerList):
        handler = ref()
        if isinstance(handler, logging.StreamHandler) and id(handler.stream) in old:
            handler.setStream(sys.stdout if old[id(handler.stream)] == 1 else sys.stderr)


# ---------------------------------------------------------------------------------------------
# The test side.

_RealPopen = subprocess.Popen
_server = {}  # "process", "path", "env", or "off": why commands start as real processes
_server_env = []  # install's env(): the environment the server imports under


def _start() -> bool:
    if "off" in _server or not _server_env:
        return False
    if "process" in _server:
        return _server["process"].poll() is None
    env = _server_env[0]()
    # A socket's path has at most 107 bytes: a short folder, whatever TMPDIR says.
    folder = tempfile.mkdtemp(prefix="celebgan-forkserver-", dir="/tmp" if os.path.isdir("/tmp") else None)
    path = os.path.join(folder, "socket")
    process = _RealPopen([sys.executable, "-c", f"import forkserver; forkserver.serve({path!r})"],
                         env={**env, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.abspath(__file__)),
                                                                    env.get("PYTHONPATH", "")])},
                         cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ready = select.select([process.stdout], [], [], 300)[0]
    said = process.stdout.readline().decode(errors="replace") if ready else ""
    if not said.startswith(READY):
        _server["off"] = f"the server did not start cleanly: {said[:500]!r}"
    elif said.split()[-1] not in ("1", "2", "3"):  # torch and Lightning start two at import
        _server["off"] = f"the server runs {said.split()[-1]} threads after its imports"
    if "off" in _server:
        warnings.warn(f"tests/forkserver.py: every command starts as a process ({_server['off']})")
        process.kill()
        process.communicate()
        shutil.rmtree(folder, ignore_errors=True)
        return False
    process.stdout.close()
    _server.update(process=process, path=path, env=_without_own(env))
    import atexit

    atexit.register(_stop)
    return True


def _stop() -> None:
    process = _server.pop("process", None)
    if process is not None:
        process.stdin.close()  # the server returns when it reads the end of its stdin
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(os.path.dirname(_server["path"]), ignore_errors=True)


def _without_own(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in SAME_EITHER_WAY and not k.startswith(SETTING_PREFIX)}


def _request(args, executable, preexec_fn, close_fds, pass_fds, cwd, env, shell, restore_signals,
             gid, gids, uid, umask, start_new_session, process_group) -> tuple[dict | None, str]:
    """What to ask the server to run, or None and why a real process is the faithful one."""
    if switched_off() or _real:
        return None, "asked for processes"
    if (shell or executable is not None or preexec_fn is not None or not close_fds or not restore_signals
            or gid is not None or gids is not None or uid is not None or umask >= 0 or process_group not in (-1, None)):
        return None, "a launch option a fork cannot honour (shell, executable, preexec_fn, user, group, ...)"
    if not isinstance(args, (list, tuple)) or len(args) < 2:
        return None, "not a Python command"
    args = [os.fspath(a) for a in args]
    if not all(isinstance(a, str) for a in args) or args[0] != sys.executable:
        return None, "not this Python"
    cwd = os.path.abspath(os.fspath(cwd)) if cwd is not None else os.getcwd()
    if not os.path.isdir(cwd):
        return None, "no such working directory"  # the real Popen raises what it should
    module = script = code = None
    if args[1] == "-c" and len(args) > 2:
        code, rest = args[2], args[3:]
    elif args[1] == "-m" and len(args) > 2 and args[2].startswith(MODULES):
        module, rest = args[2], args[3:]
    elif (args[1].endswith(".py") and os.path.isabs(args[1]) and os.path.isfile(args[1])
          and os.path.realpath(args[1]).startswith(REPO + os.sep)):
        script, rest = args[1], args[2:]
    else:
        return None, "not -c, a celebgan module, or a script of the checkout given by its absolute path"
    env = dict(os.environ if env is None else {os.fsdecode(k): os.fsdecode(v) for k, v in env.items()})
    if not _start():
        return None, _server.get("off", "the server has ended")
    differ = sorted(set(_without_own(env).items()) ^ set(_server["env"].items()))
    if differ:
        return None, "the environment differs from the server's in " + ", ".join(sorted({k for k, _ in differ}))
    import signal

    ignored = [int(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
               and signal.getsignal(s) is signal.SIG_IGN]
    return {"module": module, "script": script, "code": code, "args": rest, "orig_argv": args, "cwd": cwd,
            "env": env, "pass_fds": sorted(map(int, pass_fds)), "new_session": bool(start_new_session),
            "ignored": ignored}, "served"


def _log(args, how: str) -> None:
    if os.environ.get("CELEBGAN_TEST_FORKSERVER_LOG"):
        shown = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
        with open(os.environ["CELEBGAN_TEST_FORKSERVER_LOG"], "a") as f:
            f.write(f"{how}\t{shown[:200]}\t{os.environ.get('PYTEST_CURRENT_TEST', '')}\n")


class Popen(subprocess.Popen):
    """subprocess.Popen whose servable commands are forked by the server (see the module's docstring)."""

    _served = None  # the supervisor's socket while the command runs
    _was_served = False

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                       creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                       restore_signals, gid, gids, uid, umask, start_new_session, process_group):
        request, how = _request(args, executable, preexec_fn, close_fds, pass_fds, cwd, env, shell, restore_signals,
                                gid, gids, uid, umask, start_new_session, process_group)
        _log(args, how)
        if request is None:
            return super()._execute_child(args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                                          creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread,
                                          errwrite, restore_signals, gid, gids, uid, umask, start_new_session,
                                          process_group)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(_server["path"])
        streams = [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1,
                   errwrite if errwrite != -1 else 2, *request["pass_fds"]]
        socket.send_fds(sock, [json.dumps(request).encode()], streams)
        reply = sock.recv(_STATUS.size)
        if len(reply) != _STATUS.size:
            sock.close()
            raise subprocess.SubprocessError(f"tests/forkserver.py: no process for {request['orig_argv'][:3]}")
        self.pid = _STATUS.unpack(reply)[0]
        self._served = sock
        self._was_served = True
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _served_wait(self, pid, flags):
        """waitpid's answer for the served command: from its supervisor."""
        sock = self._served
        if sock is None:
            raise ChildProcessError(errno.ECHILD, "no status")
        if flags & os.WNOHANG and not select.select([sock], [], [], 0)[0]:
            return 0, 0
        reply = sock.recv(_STATUS.size)
        sock.close()
        self._served = None
        if len(reply) != _STATUS.size:  # the supervisor was killed: the command's status is lost
            raise ChildProcessError(errno.ECHILD, "the supervisor ended without the status")
        return pid, _STATUS.unpack(reply)[0]

    def _try_wait(self, wait_flags):
        if self._served is None:
            return super()._try_wait(wait_flags)
        try:
            return self._served_wait(self.pid, wait_flags)
        except ChildProcessError:
            return self.pid, 0

    def _internal_poll(self, _deadstate=None, _waitpid=os.waitpid, _WNOHANG=os.WNOHANG, _ECHILD=errno.ECHILD):
        if self._served is not None:
            _waitpid = self._served_wait
        return super()._internal_poll(_deadstate, _waitpid, _WNOHANG, _ECHILD)


_real = []  # inside real(): every command starts as a process


@contextlib.contextmanager
def real():
    """Inside: every command starts as a real process."""
    _real.append(True)
    try:
        yield
    finally:
        _real.pop()


def install(env) -> None:
    """subprocess.Popen (and so subprocess.run) becomes Popen, in this process; env() is the
    environment the server imports under (started at the first servable command)."""
    _server_env[:] = [env]
    subprocess.Popen = Popen


def served(process: subprocess.Popen) -> bool:
    """Whether the server forked this command (rather than a real process starting)."""
    return isinstance(process, Popen) and process._was_served


def switched_off() -> bool:
    """CELEBGAN_TEST_FORKSERVER=0: every command starts as a process."""
    return os.environ.get("CELEBGAN_TEST_FORKSERVER", "1") == "0"
