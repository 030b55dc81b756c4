"""Child processes: the suite's own names for the binaries, and processes with their output in
a log file, registered so that cleanup can end them."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests

from .common import BIN

# The suite runs the binaries through symlinks of its own names (faultsuite-api, ...), so that
# someone stopping "saasllm-api" or "redis-server" processes by name on the same machine does not
# stop the suite's, and the suite's are easy to tell apart. Filled in by link_binaries().
EXE = {}


def link_binaries(tmp):
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    redis = shutil.which("redis-server")
    if not redis:
        raise RuntimeError("redis-server is not on PATH")
    for key, target in (("api", BIN / "saasllm-api"), ("worker", BIN / "saasllm-worker"),
                        ("llm", BIN / "fake-llm"), ("redis", Path(redis))):
        link = bin_dir / f"faultsuite-{key}"
        link.symlink_to(target.resolve())
        EXE[key] = link


def wait_http(url, proc, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return time.time()
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout} s:\n{proc.tail()}")


class Proc:
    """A child process with its output in a log file. Every one is registered so that cleanup
    (and the shell wrapper's trap, through the pid file) can end it."""

    registry = []
    pid_file = None

    def __init__(self, name, argv, env, log_path):
        self.name = name
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            [str(a) for a in argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the suite, not the children
        )
        self.started = time.time()
        Proc.registry.append(self)
        if Proc.pid_file:
            with open(Proc.pid_file, "a") as f:
                f.write(f"{self.popen.pid}\n")

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10):
        if self.alive():
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                self.wait(5)
        self._log.close()

    def memory(self):
        """VmHWM and VmRSS in MiB (while the process is alive)."""
        values = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0]) / 1024
        except OSError:
            pass
        return values

    def tail(self, lines=15):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all_processes():
    for proc in reversed(Proc.registry):
        try:
            proc.stop(timeout=5)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass
