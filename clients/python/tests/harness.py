"""Real ``consort up`` daemons on loopback for the client's tests (the fixtures are in
``conftest.py``).

The binary is ``$CONSORT_BIN`` (set by the Rust wrapper test), else ``target/debug/consort`` of
this repository (``cargo build -p consort-cli``). Daemons run without mDNS, on ports the OS
picks, joined through seeds, sharing one secret file, each in its own temporary data dir; every
process started here is killed when its fixture ends, and at exit whatever happens.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[3]

#: Variables that would change what the daemon does besides its flags.
_FOREIGN_ENV = ("XDG_DATA_HOME", "RUST_LOG")

#: Every process started by the tests, killed at exit in case a fixture could not.
_STARTED: List[subprocess.Popen] = []

T = TypeVar("T")


def _kill_all() -> None:
    for process in _STARTED:
        if process.poll() is None:
            process.kill()
            process.wait()


atexit.register(_kill_all)


def consort_binary() -> Path:
    """The ``consort`` binary to run."""
    given = os.environ.get("CONSORT_BIN")
    path = Path(given) if given else REPO / "target" / "debug" / "consort"
    if not path.is_file():
        pytest.fail(f"no consort binary at {path}: run 'cargo build -p consort-cli' or set CONSORT_BIN")
    return path


def clean_env() -> dict:
    """The environment without ``CONSORT_*`` and the variables the daemon reads."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("CONSORT_") and k not in _FOREIGN_ENV
    }


def poll(timeout: float, probe: Callable[[], Optional[T]], every: float = 0.02) -> Optional[T]:
    """Asks ``probe`` until it returns something other than ``None`` or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(every)


def wait_for(timeout: float, check: Callable[[], bool], what: str) -> float:
    """Polls ``check`` until it holds; returns the seconds it took, fails the test past
    ``timeout``."""
    start = time.monotonic()
    if poll(timeout, lambda: True if check() else None) is None:
        pytest.fail(f"not within {timeout} s: {what}")
    return time.monotonic() - start


def http_json(url: str, token: Optional[str] = None) -> Any:
    """``GET url``, parsed (for checks independent of the client under test)."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=2) as response:
        return json.loads(response.read())


class Daemon:
    """A ``consort up`` process with its own data dir."""

    def __init__(self, binary: Path, workdir: Path, name: str, args: List[str]) -> None:
        self.name = name
        self.data_dir = workdir / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.command = [str(binary), "up", "--no-mdns", "--data-dir", str(self.data_dir),
                        "--name", name] + args
        self.process: Optional[subprocess.Popen] = None
        self.token = args[args.index("--api-token") + 1] if "--api-token" in args else None
        self.id = ""
        self.api_port = 0
        self.group_port = 0

    def start(self) -> "Daemon":
        """Starts the process and waits until its API answers."""
        (self.data_dir / "ports.json").unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=clean_env()
            )
        _STARTED.append(self.process)
        status = poll(10, self._ready)
        if status is None:
            self.kill9()
            pytest.fail(f"{self.name} did not start: {self.log()}")
        self.id = status["node"]["id"]
        return self

    def _ready(self) -> Optional[dict]:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}: {self.log()}")
        try:
            ports = json.loads((self.data_dir / "ports.json").read_text())
            self.api_port, self.group_port = ports["api"], ports["group"]
            status: dict = http_json(f"{self.api}/v1/status", self.token)
            return status
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def api(self) -> str:
        """The API base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def seed(self) -> str:
        """The group address others join through."""
        return f"127.0.0.1:{self.group_port}"

    def restart(self) -> "Daemon":
        """Starts the process again on the same data dir and the same ports (after
        :meth:`kill9`): the same node, at the same API address."""
        self.kill9()
        for flag, port in (("--bind", self.group_port), ("--api", self.api_port)):
            at = self.command.index(flag) + 1
            self.command[at] = f"127.0.0.1:{port}"
        return self.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def live_peers(self) -> int:
        """How many members it sees alive, itself included (-1 if it does not answer)."""
        try:
            return sum(1 for p in http_json(f"{self.api}/v1/peers") if p["state"] == "alive")
        except (OSError, ValueError):
            return -1

    def leader_id(self) -> Optional[str]:
        try:
            entry = http_json(f"{self.api}/v1/leader")["leader"]
        except (OSError, ValueError):
            return None
        return entry["id"] if entry else None


class Cluster:
    """Daemons joined into one group."""

    def __init__(self, binary: Path, workdir: Path, tag: str) -> None:
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.secret = workdir / "group.secret"
        secret = subprocess.run(
            [str(binary), "keygen"], check=True, capture_output=True, text=True, env=clean_env()
        ).stdout.strip()
        self.secret.write_text(secret + "\n")
        self.group = f"py-{tag}-{os.getpid()}"
        self.daemons: List[Daemon] = []

    def add(self, name: str, *extra: str) -> Daemon:
        """Starts a daemon joined through the first one."""
        args = ["--group", self.group, "--secret-file", str(self.secret),
                "--bind", "127.0.0.1:0", "--api", "127.0.0.1:0"] + list(extra)
        if self.daemons:
            args += ["--seed", self.daemons[0].seed]
        daemon = Daemon(self.binary, self.workdir, name, args).start()
        self.daemons.append(daemon)
        return daemon

    def wait_converged(self, timeout: float = 15) -> str:
        """Waits until every daemon sees all of them alive and they agree on a leader; returns
        the leader's id."""
        n = len(self.daemons)

        def agreed() -> Optional[str]:
            if any(d.live_peers() != n for d in self.daemons):
                return None
            leaders = {d.leader_id() for d in self.daemons}
            return leaders.pop() if len(leaders) == 1 and None not in leaders else None

        leader = poll(timeout, agreed, every=0.05)
        if leader is None:
            logs = "\n".join(f"--- {d.name}\n{d.log()}" for d in self.daemons)
            pytest.fail(f"the cluster did not converge within {timeout} s\n{logs}")
        return leader

    def by_id(self, node_id: str) -> Daemon:
        return next(d for d in self.daemons if d.id == node_id)

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.kill9()
