"""Real Ray nodes for the cluster tests: ``ray start`` processes on this machine, each in its own
process group (``ray stop`` would stop every Ray on the machine), token authentication on with a
token of the test's own (no ``~/.ray/auth_token`` is needed or touched)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def token_env(tmp: Path) -> dict[str, str]:
    """This process's environment for the nodes and their clients: a fresh token in a file of
    ``tmp`` (``RAY_AUTH_TOKEN_PATH``), token mode on, this venv first on ``PATH``."""
    token = tmp / "ray-token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")  # a job's `python` is this venv's
    return env


def start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``ray start --block ARGS`` in a process group of its own, its output in ``log``."""
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_node(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
    """Stop a node: SIGTERM, then after ``grace_s`` everything of it killed (:func:`kill_node`).
    A test's node holds nothing worth a graceful shutdown, which takes ``ray start --block``
    about 17 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        kill_node(proc)


def node_processes(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The processes of a node: ``ray start`` and its descendants (raylet, workers, agents)."""
    try:
        return [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        return []


def kill_node(proc: subprocess.Popen[bytes]) -> None:
    """Kill a node as a lost machine goes: its raylet, its workers and everything else of it at
    once, with SIGKILL (nothing drains, nothing tells the head)."""
    for p in node_processes(proc):
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def node_count(gcs_port: int, env: dict[str, str]) -> int:
    """Nodes that ``ray status`` lists as active (0 while the head does not answer)."""
    out = subprocess.run([str(BIN / "ray"), "status", f"--address=127.0.0.1:{gcs_port}"], capture_output=True,
                         text=True, env=env, timeout=60)
    if out.returncode != 0:
        return 0
    active = out.stdout.split("Pending:")[0]
    return active.count("node_")


def wait_for(ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], logs: Path,
             timeout: float = 120) -> None:
    """Wait until ``ready()``; fail with the nodes' logs when one exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        for proc in procs:
            assert proc.poll() is None, "\n".join(p.read_text() for p in logs.glob("*.log"))
        time.sleep(1)
    raise AssertionError("the cluster did not come up:\n" + "\n".join(p.read_text() for p in logs.glob("*.log")))


def head_args(gcs: int, ports: list[int], cpus: int, dashboard: bool = True) -> list[str]:
    """Arguments of a head node on port ``gcs`` (with the dashboard and its Jobs API on
    ``ports[0]``); ``ports`` holds 7 free ports."""
    dash, client, *agent = ports
    args = ["--head", f"--port={gcs}", f"--num-cpus={cpus}", f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent[0]}", f"--dashboard-agent-grpc-port={agent[1]}",
            f"--metrics-export-port={agent[2]}", f"--runtime-env-agent-port={agent[3]}"]
    if dashboard:
        args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
    else:
        args += ["--include-dashboard=false"]
    return args


def worker_args(gcs: int, ports: list[int], cpus: int) -> list[str]:
    """Arguments of a node joining the head on port ``gcs``; ``ports`` holds 4 free ports."""
    return [f"--address=127.0.0.1:{gcs}", f"--num-cpus={cpus}", f"--dashboard-agent-listen-port={ports[0]}",
            f"--dashboard-agent-grpc-port={ports[1]}", f"--metrics-export-port={ports[2]}",
            f"--runtime-env-agent-port={ports[3]}"]


class Cluster:
    """A head node and worker nodes on this machine (token auth on), all stopped on exit.

    ``with Cluster(tmp, head_cpus=1) as c: c.add_worker(cpus=1)``; ``c.address`` is the GCS
    address for ``--address``, ``c.dashboard`` the Jobs API's URL (with ``dashboard=True``).
    """

    def __init__(self, tmp: Path, head_cpus: int, dashboard: bool = False) -> None:
        self.tmp, self.env = tmp, token_env(tmp)
        self.gcs, *self._head_ports = free_ports(8)
        self._head_cpus, self._with_dashboard = head_cpus, dashboard
        self.nodes: list[subprocess.Popen[bytes]] = []
        self._alive = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self._head_ports[0]}"

    def __enter__(self) -> Cluster:
        try:
            self._start(head_args(self.gcs, self._head_ports, self._head_cpus, self._with_dashboard), "head")
        except BaseException:
            self.__exit__()
            raise
        return self

    def add_worker(self, cpus: int) -> subprocess.Popen[bytes]:
        """Start a node that joins the head; returns once the head lists it."""
        return self._start(worker_args(self.gcs, free_ports(4), cpus), f"node{len(self.nodes) + 1}")

    def kill(self, node: subprocess.Popen[bytes]) -> None:
        """Kill ``node`` as a lost machine goes (see :func:`kill_node`)."""
        kill_node(node)
        self._alive -= 1

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        node = start_node(args, self.tmp / f"{name}.log", self.env)
        self.nodes.append(node)
        self._alive += 1
        wait_for(lambda: node_count(self.gcs, self.env) >= self._alive,
                 [n for n in self.nodes if n.returncode is None], self.tmp)
        return node

    def __exit__(self, *_: object) -> None:
        for node in reversed(self.nodes):
            stop_node(node)
