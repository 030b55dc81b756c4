"""The private PostgreSQL and Redis every scenario shares."""

import os
import shutil
import signal
import socket
import subprocess
import time

from .common import PG_BIN, free_port, say
from .processes import EXE, Proc


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.pg_home = tmp / "postgres"
        self.pg_data = self.pg_home / "data"
        self.pg_log = self.pg_home / "postgres.log"
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.redis_dir = tmp / "redis"
        self.redis = None
        # initdb and postgres refuse to run as root.
        self.as_pg_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    # PostgreSQL -------------------------------------------------------------------------
    def start(self):
        self.pg_home.mkdir()
        if self.as_pg_user:
            os.chmod(self.tmp, 0o755)
            shutil.chown(self.pg_home, "postgres", "postgres")
        self._run_pg([PG_BIN / "initdb", "-D", self.pg_data, "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync"])
        with open(self.pg_data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.pg_port}\n"
                f"unix_socket_directories = '{self.pg_home}'\nmax_connections = 400\n"
                # Durability against the host crashing is not under test; against PostgreSQL
                # crashing it stays intact (the WAL reaches the OS on every commit).
                "fsync = off\nfull_page_writes = off\nshared_buffers = 64MB\n"
                "log_min_messages = warning\n"
            )
        self.pg_ctl("start", "-w", "-t", "60")
        self.redis_dir.mkdir()
        self.start_redis()
        say(f"private PostgreSQL on 127.0.0.1:{self.pg_port}, Redis on 127.0.0.1:{self.redis_port}")

    def _run_pg(self, argv, check=True, timeout=120):
        result = subprocess.run(self.as_pg_user + [str(a) for a in argv], capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}\n{result.stderr}")
        return result

    def pg_ctl(self, *args, check=True):
        return self._run_pg([PG_BIN / "pg_ctl", "-D", self.pg_data, "-l", self.pg_log, *args],
                            check=check)

    def stop_pg(self):
        if (self.pg_data / "postmaster.pid").exists():
            self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "30", check=False)

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.pg_port}/{database}"

    def psql(self, database, sql, timeout=30):
        result = subprocess.run(
            ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.pg_port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}\n{sql}")
        return [line.split("\t") for line in result.stdout.splitlines() if line != ""]

    def pg_ready(self):
        try:
            self.psql("postgres", "select 1", timeout=5)
            return True
        except Exception:  # noqa: BLE001
            return False

    # Redis ------------------------------------------------------------------------------
    def start_redis(self):
        self.redis = Proc(
            "redis",
            [EXE["redis"], "--port", self.redis_port, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.redis_dir, "--protected-mode", "no"],
            os.environ.copy(), self.tmp / "redis.log",
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.redis_ping():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def kill_redis(self):
        self.redis.signal(signal.SIGKILL)
        self.redis.wait(10)

    def redis_queue_length(self, namespace):
        """Call ids waiting over all teams' lists of the queue."""
        script = (
            "local t = 0 for _, team in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
            "t = t + redis.call('LLEN', ARGV[1] .. team) end return t"
        )
        args = [b"EVAL", script.encode(), b"1", f"{namespace}:calls:active".encode(),
                f"{namespace}:calls:team:".encode()]
        command = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(command)
                reply = s.recv(64)
                if reply.startswith(b":"):
                    return int(reply[1:].split(b"\r\n")[0])
        except (OSError, ValueError):
            pass
        return None

    def redis_ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def ensure_up(self):
        if not self.pg_ready():
            self.pg_ctl("start", "-w", "-t", "60", check=False)
        if self.redis is None or not self.redis.alive():
            self.start_redis()
