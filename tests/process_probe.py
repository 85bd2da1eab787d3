"""What a command sees of its process, printed as JSON, for tests/test_forkserver.py. Run as
`python -m process_probe [ACTION]`, `python /abs/path/process_probe.py [ACTION]` or from `python -c`; ACTION ends it:
exit:N, raise, interrupt, sleep, or echo (stdin to stdout)."""
import atexit
import json
import os
import signal
import sys
import threading
import time

import __main__


def handler_name(signum: int) -> str:
    handler = signal.getsignal(signum)
    names = {signal.SIG_IGN: "ignore", signal.SIG_DFL: "default", signal.default_int_handler: "KeyboardInterrupt"}
    return names.get(handler, "a handler")


def stream(s) -> dict:
    return {"name": s.name, "fileno": s.fileno(), "encoding": s.encoding, "errors": s.errors,
            "line_buffering": s.line_buffering, "isatty": s.isatty()}


def report() -> dict:
    import numpy as np

    return {
        "argv": sys.argv, "orig_argv": sys.orig_argv, "path": sys.path, "cwd": os.getcwd(), "env": dict(os.environ),
        "signals": {str(s): handler_name(s) for s in sorted(signal.valid_signals())
                    if s not in (signal.SIGKILL, signal.SIGSTOP)},
        "own_session": os.getsid(0) == os.getpid(), "own_group": os.getpgrp() == os.getpid(),
        "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
        "streams": [stream(s) for s in (sys.stdin, sys.stdout, sys.stderr)],
        "main": [__main__.__name__, getattr(__main__, "__file__", None), getattr(__main__.__spec__, "name", None)],
        "flags": str(sys.flags), "threads": threading.active_count(), "numpy": float(np.random.random()),
    }


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action == "echo":
        sys.stdout.write(sys.stdin.read())
        sys.exit(0)
    if action == "sleep":
        print(os.getpid(), flush=True)
        time.sleep(300)
    atexit.register(lambda: print("atexit ran", flush=True))
    # A non-daemon thread that prints after the report, whatever the report costs on a loaded machine
    reported = threading.Event()
    done = threading.Thread(target=lambda: (reported.wait(), time.sleep(0.3), print("thread joined")))
    done.start()
    print(json.dumps(report()))
    reported.set()
    if action.startswith("exit:"):
        sys.exit(int(action[5:]))
    if action == "raise":
        raise RuntimeError("probe")
    if action == "interrupt":
        raise KeyboardInterrupt
