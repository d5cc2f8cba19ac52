"""A warm process for the jobs of a local Snakemake run: it imports torch, pandas, pyarrow and
(between its first jobs) matplotlib once, and forks a child for each `python -m nnstudy ...` of
a job, which so starts in milliseconds instead of re-importing them (2-4 s of CPU per job on a
2-core machine: on a study of small runs, the largest part of what the jobs spend outside
training).

Snakemake starts it for a run on this machine (workflow/rules/common.smk, `onstart`) and names
its socket in NNSTUDY_WARM. `python -m nnstudy ARGS` in a job (`client`: training, analyses
and the other steps, `nnstudy step RULE`) then hands its command, working directory,
environment, sys.path and standard streams to it and waits: the child runs the command as the
job's own process would have, and the job exits as the child did (its exit code, or the same
signal). SIGINT, SIGTERM and SIGHUP sent to the client are passed on to the
child; a client that dies (SIGKILL) has its child SIGKILLed. Without NNSTUDY_WARM, or when the
warm process does not answer or runs another Python or another nnstudy, the client runs the
command itself: a job behaves the same either way, only its start-up differs. The warm process
ends when its workflow does (`stop`, from onsuccess/onerror), at the latest with the Snakemake
process that started it.

One warm process serves one user: its socket lies in a folder only its owner can enter.
Linux only (os.pidfd_open); elsewhere, and under a cluster executor, jobs start as before.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ENV = "NNSTUDY_WARM"
# What a training job uses, imported before the first job is served; then, while no job is
# waiting, what the workflow's steps use besides (a job forked before that imports what it lacks).
PRELOAD = ("torch", "pandas", "pyarrow.parquet", "scipy.linalg.blas", "nnstudy.cli", "nnstudy.study",
           "nnstudy.training.run", "nnstudy.data", "nnstudy.analyses")
LATER = ("matplotlib.pyplot", "nnstudy.plots", "nnstudy.steps",
         "nnstudy.aggregate", "nnstudy.report")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HEADER = struct.Struct("!I")   # the request's length, sent with the three standard streams' descriptors
STATUS = struct.Struct("!i")   # the child's exit code, or minus the signal that ended it


def available() -> bool:
    """Whether this platform can run jobs in a warm process (Linux: pidfd_open, fd passing)."""
    return hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


_started: list[subprocess.Popen] = []


def start(log: Path, study: str | None = None) -> str:
    """Start a warm process for this (Snakemake) process; return its socket's path. It imports
    in the background: jobs that connect meanwhile wait for it. Then, while no job waits, it
    plans the study of snapshot `study` (nnstudy.steps.plan), if given. It ends at `stop`, or at
    the latest with this process."""
    remove_stale()
    folder = tempfile.mkdtemp(prefix="nnstudy-warm-")  # mode 0700: this user's jobs only
    path = os.path.join(folder, "socket")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        _started.append(subprocess.Popen([sys.executable, "-m", "nnstudy.warm", path, str(os.getpid()), *([study] if study else [])],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True))
    for _ in range(500):  # the socket exists once the process listens (before its imports)
        if os.path.exists(path):
            break
        time.sleep(0.01)
    return path


def remove_stale() -> None:
    """Remove the folders of warm processes that were SIGKILLed (with their Snakemake's process
    group): a socket older than a minute that refuses connections. Other users' are left alone."""
    for folder in Path(tempfile.gettempdir()).glob("nnstudy-warm-*"):
        path = folder / "socket"
        try:
            if time.time() - path.stat().st_mtime < 60:
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(str(path))
        except ConnectionRefusedError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # not ours, or not a warm process's socket yet
            pass


def stop() -> None:
    """End the warm processes this process started (when its workflow has ended: a Snakemake
    run through the API in a long-lived process would otherwise leave them until it exits)."""
    while _started:
        proc = _started.pop()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    os.environ.pop(ENV, None)


def identity() -> dict:
    """What must match between a client and the warm process: the same Python and nnstudy."""
    import nnstudy

    return {"prefix": sys.prefix, "version": sys.version, "nnstudy": nnstudy.__file__}


# --- the client: `python -m nnstudy ...` in a job ------------------------------------------------

def client(argv: list[str]) -> int | None:
    """Run nnstudy's command line `argv` in the warm process, with this process's directory,
    environment, sys.path and standard streams; pass signals on while the child runs; return
    its exit code or end this process by its signal. None if no warm process (of this Python
    and nnstudy) takes it."""
    path = os.environ.get(ENV)
    if not path or not available():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
                              **identity()}).encode()
        socket.send_fds(sock, [HEADER.pack(len(request))], [0, 1, 2])
        sock.sendall(request)
        accepted = _recv_exactly(sock, 1)
    except OSError:
        sock.close()
        return None
    if accepted != b"1":  # another Python or nnstudy: run here
        sock.close()
        return None

    def forward(signum, frame):
        try:
            sock.sendall(STATUS.pack(signum))
        except OSError:  # the child has just ended: its status follows
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    status = _recv_exactly(sock, STATUS.size)
    if len(status) < STATUS.size:
        print("nnstudy: error: the warm process ended without this job's exit status", file=sys.stderr)
        return 1
    (code,) = STATUS.unpack(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)  # a signal that does not end a process by default (none of the children's)
        return 128 - code
    return code


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


# --- the warm process --------------------------------------------------------------------------

def serve(path: str, parent: int, study: str | None = None) -> None:
    """Listen on `path`, import PRELOAD, then fork a handler per connection (importing LATER and
    planning `study` while none waits) until `parent` ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the jobs through their clients
    server = os.getpid()

    def end(signum, frame):  # `stop` waits for this: Python's own exit, with torch and matplotlib loaded, takes ~1 s
        if os.getpid() == server:  # not in a connection's fork, which inherits this handler
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            os._exit(0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, end)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(socket.SOMAXCONN)
    try:
        import importlib

        for name in PRELOAD:
            importlib.import_module(name)
        me = identity()
        later = [functools.partial(importlib.import_module, name) for name in LATER]
        if study:
            later.append(functools.partial(_plan, study))
        listener.settimeout(0.5)
        while os.getppid() == parent:
            if sys.modules["torch"].cuda.is_initialized():  # a fork could not use the GPU: serve no more
                raise SystemExit("nnstudy.warm: CUDA was initialised while importing; jobs start afresh")
            if later and not select.select([listener], [], [], 0)[0]:
                later.pop(0)()
                continue
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                _reap()
                continue
            if os.fork() == 0:
                listener.close()
                _handle(conn, me)  # never returns
            conn.close()
            _reap()
    finally:
        listener.close()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _plan(study: str) -> None:
    try:
        from .steps import plan

        plan(study)
    except Exception:  # noqa: BLE001 (the steps plan it themselves, and report what fails)
        traceback.print_exc()


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _handle(conn: socket.socket, me: dict) -> None:
    """In a fork of the warm process: read the request, fork the job's child, pass signals on
    to it, and report how it ended; SIGKILL it if the client goes."""
    try:
        conn.settimeout(None)
        os.setpgid(0, 0)  # off the warm process's group: a SIGKILL of Snakemake's group leaves this to kill the child
        head, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        if len(head) < HEADER.size:  # no request: another warm process's remove_stale probing this one
            os._exit(0)
        request = json.loads(_recv_exactly(conn, HEADER.unpack(head)[0]))
        if len(fds) != 3 or any(request[k] != v for k, v in me.items()):
            conn.sendall(b"0")
            os._exit(0)
        conn.sendall(b"1")
        started, child = time.monotonic(), os.fork()
        if child == 0:
            _child(request, fds, conn)  # never returns
        for fd in fds:
            os.close(fd)
        code, cpu = _watch(conn, child)
        argv = request["argv"]
        what = f"step {argv[1]}" if argv[:1] == ["step"] and len(argv) > 1 else " ".join(["nnstudy", *argv[:1]])
        print(f"{time.strftime('%H:%M:%S')} {what} (pid {child}): exit {code} after "
              f"{time.monotonic() - started:.1f} s, {cpu:.1f} s of CPU", file=sys.stderr, flush=True)
        conn.sendall(STATUS.pack(code))
    except BaseException:  # noqa: BLE001 (nothing may escape into the warm process's loop)
        traceback.print_exc()
    finally:
        os._exit(0)


def _watch(conn: socket.socket, child: int) -> tuple[int, float]:
    """Wait for the child; a signal number from the client is sent on to it, and the client's
    end (its connection closed) kills it. Returns its exit code or minus its signal, and the
    CPU seconds it used."""
    pidfd = os.pidfd_open(child)
    while True:
        ready, _, _ = select.select([conn, pidfd], [], [])
        if pidfd in ready:
            _, status, usage = os.wait4(child, 0)
            return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
        message = conn.recv(STATUS.size)
        if len(message) < STATUS.size:  # the client is gone
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            os._exit(0)
        os.kill(child, STATUS.unpack(message)[0])


def _child(request: dict, fds: list[int], conn: socket.socket) -> None:
    """The job's process: the client's streams, directory, environment and sys.path, then its
    command: nnstudy's command line as `python -m nnstudy` would run it."""
    code = 1
    try:
        conn.close()
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["path"]
        sys.argv = [sys.argv[0], *request["argv"]]
        from .cli import main

        code = main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001 (as Python reports an uncaught exception)
        traceback.print_exc()
    finally:  # whatever happened above, this process ends here, never in the warm process's loop
        try:
            atexit._run_exitfuncs()
            _flush()
        finally:
            os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
