"""Runs celebgan command lines one after another in one process, each as `python -m MODULE ARGS`
would run it (its own argv, stdout and stderr, exit status), so that a table of command lines
costs one interpreter start. Usage: python cli_runner.py CASES.json RESULTS.json, where CASES is
a list of {"module", "args", "cwd"} (and "env": variables set, or unset by null, for that case alone) and RESULTS gets
{"code", "output", "seconds"} for each. Hydra composes each command's config as it would for that
command line, at less cost (tests/composing.py)."""
import contextlib
import io
import json
import logging
import os
import runpy
import sys
import time
import traceback

from hydra.core.global_hydra import GlobalHydra

from composing import answer_get_mode_where_nothing_sets_it, parse_shipped_config_files_once

answer_get_mode_where_nothing_sets_it()
parse_shipped_config_files_once()


def run(module: str, args: list[str], cwd: str, env: dict | None = None) -> dict:
    saved = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        return run_case(module, args, cwd)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_case(module: str, args: list[str], cwd: str) -> dict:
    os.chdir(cwd)
    sys.argv = [module, *args]
    root = logging.getLogger()
    for handler in root.handlers[:]:  # the previous command's, bound to its captured streams
        root.removeHandler(handler)
    output = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)  # sets argv[0] as -m does
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # what the interpreter prints for an uncaught exception
            traceback.print_exc()
            code = 1
    GlobalHydra.instance().clear()
    return {"code": code, "output": output.getvalue(), "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    cases_path, results_path = sys.argv[1:3]
    cases = json.loads(open(cases_path).read())
    results = [run(c["module"], c["args"], c["cwd"], c.get("env")) for c in cases]
    with open(results_path, "w") as f:
        json.dump(results, f)
