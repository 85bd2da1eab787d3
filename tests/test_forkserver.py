"""tests/forkserver.py: a command line forked from the server runs as it would as a new process,
and what the server cannot run faithfully starts as one."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TESTS_DIR, cli_env

import forkserver

PROBE = str(TESTS_DIR / "process_probe.py")


@pytest.fixture(autouse=True)
def _server_up(request):
    # Nothing to compare with every command a process, or on a machine where the server cannot start
    # (it stands down with a warning, and every command starts as a process).
    if request.node.get_closest_marker("integration") is None:
        return
    if forkserver.switched_off():
        pytest.skip("CELEBGAN_TEST_FORKSERVER=0: every command starts as a process")
    if not forkserver._start():
        pytest.skip(f"the fork server stood down: {forkserver._server.get('off')}")


FORMS = {"module": [sys.executable, "-m", "process_probe"], "script": [sys.executable, PROBE],
         "code": [sys.executable, "-c", "import runpy; runpy.run_module('process_probe', run_name='__main__')"]}


def both(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The command run as a new process, then served; the second is checked to be served."""
    kwargs = {"env": cli_env(), "capture_output": True, "text": True, "timeout": 120, **kwargs}
    with forkserver.real():
        started = subprocess.run(cmd, **kwargs)
    given = kwargs.get("input")
    launch = {k: v for k, v in kwargs.items() if k not in ("capture_output", "timeout", "input")}
    process = subprocess.Popen(cmd, **launch,
                               stdin=subprocess.PIPE if given is not None else None,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(given, timeout=kwargs["timeout"])
    assert forkserver.served(process), "the server did not run it: tests/forkserver.py stood down?"
    return started, subprocess.CompletedProcess(cmd, process.returncode, out, err)


@pytest.mark.integration
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("new_session", [False, True])
def test_a_served_command_sees_the_process_a_new_one_has(tmp_path, form, new_session):
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join(["relative", "", env["PYTHONPATH"]])  # as the interpreter reads them
    env["CELEBGAN_SOMETHING"] = "1"
    started, served = both([*FORMS[form], "exit:3"], cwd=tmp_path, env=env, start_new_session=new_session)
    assert started.returncode == served.returncode == 3
    assert started.stderr == served.stderr == ""
    seen = [json.loads(r.stdout.splitlines()[0]) for r in (started, served)]
    assert seen[0].pop("numpy") != seen[1].pop("numpy")  # NumPy's global generator seeded afresh
    for key in seen[0]:  # argv, sys.path, cwd, environment, signals, session, fds, streams, __main__, flags
        assert seen[0][key] == seen[1][key], key
    assert seen[1]["own_session"] == new_session
    # atexit functions and non-daemon threads run at its exit, after the program's last line
    assert started.stdout.splitlines()[1:] == served.stdout.splitlines()[1:] == ["thread joined", "atexit ran"]


@pytest.mark.integration
@pytest.mark.parametrize("action, status", [("raise", 1), ("interrupt", -signal.SIGINT), ("exit:0", 0)])
def test_a_served_command_ends_as_a_new_one_does(action, status):
    started, served = both([*FORMS["module"], action])
    assert started.returncode == served.returncode == status
    for result in (started, served):
        assert ("Traceback" in result.stderr) == (action != "exit:0")
        assert ("RuntimeError: probe" in result.stderr) == (action == "raise")
    started, served = both([*FORMS["module"], "echo"], input="through stdin\n")
    assert started.stdout == served.stdout == "through stdin\n"


@pytest.mark.integration
def test_a_served_command_is_signalled_killed_and_timed_out_like_a_child(tmp_path):
    for new_session, signal_it in ((False, lambda p: p.send_signal(signal.SIGTERM)),
                                   (True, lambda p: os.killpg(p.pid, signal.SIGTERM))):
        process = subprocess.Popen([*FORMS["module"], "sleep"], env=cli_env(), stdout=subprocess.PIPE, text=True,
                                   start_new_session=new_session)
        assert forkserver.served(process)
        assert int(process.stdout.readline()) == process.pid  # its own pid
        assert process.poll() is None
        signal_it(process)
        assert process.wait(timeout=60) == -signal.SIGTERM
        process.stdout.close()
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([*FORMS["module"], "sleep"], env=cli_env(), capture_output=True, timeout=2)
    assert time.monotonic() - start < 60  # killed at its timeout, and waited for


@pytest.mark.integration
def test_what_the_server_cannot_run_faithfully_starts_as_a_process(tmp_path):
    cases = {
        "interpreter option": ([sys.executable, "-X", "dev", "-m", "process_probe", "exit:0"], {}),
        "another module": ([sys.executable, "-m", "json.tool", "--help"], {}),
        "a thread setting": ([*FORMS["module"], "exit:0"], {"env": {**cli_env(), "OMP_NUM_THREADS": "2"}}),
        "preexec_fn": ([*FORMS["module"], "exit:0"], {"preexec_fn": lambda: None}),
        "relative script": ([sys.executable, os.path.relpath(PROBE), "exit:0"], {}),
        "a script outside": ([sys.executable, str(tmp_path / "x.py")], {}),
    }
    (tmp_path / "x.py").write_text("pass\n")
    for name, (cmd, kwargs) in cases.items():
        process = subprocess.Popen(cmd, **{"env": cli_env(), "stdout": subprocess.DEVNULL,
                                           "stderr": subprocess.DEVNULL, **kwargs})
        assert process.wait(timeout=120) == 0, name
        assert not forkserver.served(process), name
    process = subprocess.Popen([*FORMS["module"], "exit:0"], env=cli_env(), stdout=subprocess.DEVNULL)
    assert process.wait(timeout=120) == 0 and forkserver.served(process)


@pytest.mark.integration
def test_dash_c_and_pass_fds_are_served_as_a_new_process_has_them(tmp_path):
    code = "import os, sys; os.write(int(sys.argv[1]), b'through the passed fd'); print(sys.argv, sys.path[0] == '')"
    results = []
    for serve in (False, True):
        read, write = os.pipe()
        os.set_inheritable(write, False)  # pass_fds makes it the child's
        with forkserver.real() if not serve else open(os.devnull):
            process = subprocess.Popen([sys.executable, "-c", code, str(write)], env=cli_env(), pass_fds=(write,),
                                       stdout=subprocess.PIPE, text=True)
        os.close(write)
        out = process.communicate(timeout=120)[0]
        assert forkserver.served(process) == serve
        results.append((process.returncode, out, os.read(read, 100)))
        os.close(read)
    assert results[0] == results[1] == (0, f"['-c', '{write}'] True\n", b"through the passed fd")


def test_a_test_not_marked_integration_cannot_start_a_process_served_or_not():
    # conftest's guard patches whatever subprocess.Popen is: the served subclass included.
    assert subprocess.Popen is forkserver.Popen
    for cmd in ([sys.executable, "-m", "celebgan.train", "--help"], [sys.executable, "-c", "pass"], ["true"]):
        with pytest.raises(AssertionError, match="not marked @pytest.mark.integration"):
            subprocess.run(cmd, env=cli_env(), capture_output=True)
