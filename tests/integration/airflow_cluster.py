"""Real Airflow 3 components for integration tests: api-server, scheduler, dag-processor and triggerer.

They run on SQLite in their own AIRFLOW_HOME, bound to 127.0.0.1, in one new process group that is
stopped as a whole (TERM, then KILL), with every descendant that left the group stopped too. Their logs
are kept under ``test-artifacts/`` when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
#: The example DAGs as the wheel ships them (``example_dags/`` at the top is a link to them).
EXAMPLES = ROOT / "airflow_provider_hitpaw" / "example_dags"
ARTIFACTS = ROOT / "test-artifacts"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_env(home: Path, dags: Path, port: int, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Fewer worker slots than the DAGs have images: deferral must free them.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # Airflow's own defaults otherwise (no [workers] min_heartbeat_interval tuned down): users run
            # them, and the race of an early trigger event with a deferring try's exit must not hit them.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **extra,
        }
    )
    return env


#: Airflow's own defaults for the heartbeats :func:`airflow_env` otherwise speeds up: where Airflow's race of
#: an early trigger event against a deferring try's exit is measured, it must be measured as users run it.
AIRFLOW_DEFAULT_HEARTBEATS: dict[str, str] = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
}


@dataclass(frozen=True)
class Component:
    """A component beside the api-server, scheduler and dag-processor: a triggerer, a Celery worker.

    ``label`` names its log and pid files (two triggerers need two labels); ``env`` is its own.
    """

    label: str
    name: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class AirflowCluster:
    """A running set of components, and a small client of their REST API."""

    home: Path
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None
    token: str = ""
    started_pids: set[int] = field(default_factory=set)
    #: When True, the process-group leader stays available to launch components again after
    #: :meth:`kill_component` (see :meth:`start_component`); otherwise it only waits for the four.
    restartable: bool = False
    #: Extra command-line arguments per component. By default the scheduler and the triggerer serve no
    #: logs: their log servers would listen on every interface, on fixed ports (8793, 8794), where only
    #: loopback is allowed and two clusters would collide. The api-server reads the log files directly.
    component_args: dict[str, list[str]] = field(
        default_factory=lambda: {"scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}
    )
    #: Triggerers and workers of their own (then no default triggerer is started).
    extra_components: list[Component] = field(default_factory=list)
    #: Core components started again, two seconds after they exit, as systemd's ``Restart=always`` or a
    #: Kubernetes Deployment would: Airflow's scheduler exits when it loses its database, by design.
    supervised: frozenset[str] = frozenset()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2"

    def airflow(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{output}")
        return result.stdout

    def start(self) -> None:
        self.airflow("db", "migrate", timeout=300)
        logs = self.home / "component-logs"
        logs.mkdir(exist_ok=True)
        (self.home / "pids").mkdir(exist_ok=True)
        airflow = f"{sys.executable} -m airflow"
        lines = [
            self._launch("api-server", f"{airflow} api-server --host 127.0.0.1 --port {self.port}", logs),
            self._launch("scheduler", f"{airflow} scheduler", logs),
            self._launch("dag-processor", f"{airflow} dag-processor", logs),
        ]
        if not self.extra_components:
            lines.append(f"{airflow} triggerer{self._args('triggerer')} > {logs}/triggerer.log 2>&1 &")
        for component in self.extra_components:
            settings = " ".join(f"{key}={shlex.quote(value)}" for key, value in component.env.items())
            words = " ".join(shlex.quote(word) for word in [*component.name.split(), *component.args])
            lines.append(
                f"env {settings} {airflow} {words} > {logs}/{component.label}.log 2>&1 & "
                f"echo $! > {self.home}/pids/{component.label}"
            )
        script = "\n".join([*lines, *(self._launcher_loop() if self.restartable else ["wait"])])
        # One new session, hence one new process group, for all four: stopped together.
        self.process = subprocess.Popen(["bash", "-c", script], env=self.env, start_new_session=True)
        self.wait_healthy()
        self.token = self.login()

    def _launch(self, name: str, command: str, logs: Path) -> str:
        command = f"{command}{self._args(name)}"
        if name in self.supervised:
            command = f"while :; do {command}; echo '(exited; started again)'; sleep 2; done"
            return f"( {command} ) > {logs}/{name}.log 2>&1 &"
        return f"{command} > {logs}/{name}.log 2>&1 &"

    def component_processes_of(self, root: int) -> set[int]:
        """A process and every process below it."""
        children: dict[int, list[int]] = {}
        for pid in self.descendants():
            parent = self._parent(pid)
            if parent is not None:
                children.setdefault(parent, []).append(pid)
        found, todo = {root}, [root]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        self.started_pids |= found
        return found

    def pid_of(self, label: str) -> int:
        """The process of an extra component, by its label."""
        return int((self.home / "pids" / label).read_text().strip())

    def _args(self, name: str) -> str:
        return "".join(f" {shlex.quote(arg)}" for arg in self.component_args.get(name, []))

    @property
    def control_fifo(self) -> Path:
        return self.home / "component-control.fifo"

    def _launcher_loop(self) -> list[str]:
        """Shell lines that keep the group leader reading launch commands from a FIFO.

        A process can only join a process group of its own session, and the components run in a session
        of their own: a component started again later must therefore be started by a process inside that
        session, this loop. Opened read-write, the FIFO never reports end-of-file.
        """
        fifo = self.control_fifo
        if fifo.exists():
            fifo.unlink()
        os.mkfifo(fifo)
        return [f"exec 3<>{shlex.quote(str(fifo))}", 'while IFS= read -r line <&3; do bash -c "$line" & done']

    def component_command(self, name: str) -> list[str]:
        """The command line that starts component ``name`` (one of :data:`COMPONENTS`)."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; expected one of {COMPONENTS}")
        extra = ["--host", "127.0.0.1", "--port", str(self.port)] if name == "api-server" else []
        return [sys.executable, "-m", "airflow", name, *extra, *self.component_args.get(name, [])]

    def component_pids(self, name: str) -> set[int]:
        """The live processes started as component ``name`` (``... airflow <name>``), not their forks."""
        found: set[int] = set()
        for pid in self.descendants():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            # setproctitle rewrites some titles into one padded string ("airflow api_server -- host:...").
            words = b" ".join(argv).decode(errors="replace").split()
            names = {name, name.replace("-", "_")}
            if any(words[i] == "airflow" and words[i + 1] in names for i in range(len(words) - 1)):
                found.add(pid)
        # A component's own forks (a supervisor's runner, an executor's workers) carry the same command
        # line: keep only the topmost processes.
        parents = {pid: self._parent(pid) for pid in found}
        return {pid for pid in found if parents[pid] not in found}

    @staticmethod
    def _parent(pid: int) -> int | None:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None

    def component_processes(self, name: str) -> set[int]:
        """Component ``name``'s processes and every process below them (its runners, workers, log servers)."""
        roots = self.component_pids(name)
        children: dict[int, list[int]] = {}
        for pid in self.descendants():
            parent = self._parent(pid)
            if parent is not None:
                children.setdefault(parent, []).append(pid)
        found = set(roots)
        todo = list(roots)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def kill_component(
        self, name: str, sig: int = signal.SIGKILL, *, with_children: bool = False, timeout: float = 30
    ) -> set[int]:
        """Send ``sig`` to component ``name`` (its topmost process, or with its children); return pids hit.

        Only that component is hit: the other components and the group leader keep running. With SIGKILL,
        waits until the processes signalled are gone.
        """
        victims = self.component_processes(name) if with_children else self.component_pids(name)
        if not victims:
            raise RuntimeError(f"no running {name} to kill")
        self.started_pids |= self.component_processes(name)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self.wait_gone(victims, timeout)
        return victims

    def wait_gone(self, pids: set[int], timeout: float = 30) -> None:
        """Wait until none of ``pids`` is alive (zombies count as gone)."""
        deadline = time.monotonic() + timeout
        while any(self._is_live(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"still alive after {timeout} s: {sorted(p for p in pids if self._is_live(p))}"
                )
            time.sleep(0.1)

    def start_component(self, name: str, timeout: float = 60) -> int:
        """Start component ``name`` again, inside the components' process group; return its pid.

        Needs ``restartable=True``. Its output is appended to ``component-logs/<name>.log``.
        """
        if self.process is None or not self.restartable:
            raise RuntimeError("start_component needs a cluster started with restartable=True")
        before = self.component_pids(name)
        log = self.home / "component-logs" / f"{name}.log"
        command = " ".join(shlex.quote(word) for word in self.component_command(name))
        line = f"exec {command} >> {shlex.quote(str(log))} 2>&1\n"
        # Non-blocking: with the leader gone there is no reader, and this fails (ENXIO) instead of hanging.
        fd = os.open(self.control_fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.component_pids(name) - before
            if new:
                self.started_pids |= self.descendants()
                return min(new)
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not start")

    @staticmethod
    def _is_live(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.started_pids |= self.descendants()
            try:
                last = requests.get(f"{self.api}/monitor/health", timeout=5).json()
                if all(
                    last.get(name, {}).get("status") == "healthy"
                    for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ):
                    return
            except (requests.RequestException, ValueError):
                pass
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(1)
        raise RuntimeError(f"Airflow components did not become healthy: {last}")

    def login(self) -> str:
        passwords = json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())
        username, password = next(iter(passwords.items()))
        answer = requests.post(
            f"http://127.0.0.1:{self.port}/auth/token",
            json={"username": username, "password": password},
            timeout=30,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        answer = requests.request(method, f"{self.api}{path}", headers=headers, timeout=30, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.request("GET", f"/dags/{dag_id}")
                return
            except requests.HTTPError:
                time.sleep(1)
        raise RuntimeError(f"the dag-processor never parsed {dag_id}")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run = self.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> list[tuple[str, int, str | None]]:
        """Every task instance of the run, page by page (the API hands out 100 at most per call)."""
        states: list[tuple[str, int, str | None]] = []
        while True:
            answer = self.request(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(states)},
            )
            page = answer["task_instances"]
            states += [(ti["task_id"], ti["map_index"], ti["state"]) for ti in page]
            if not page or len(states) >= answer["total_entries"]:
                return states

    def descendants(self) -> set[int]:
        """Every live process below the wrapper, found through /proc (api-server workers leave the group)."""
        if self.process is None:
            return set()
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
        found: set[int] = set()
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def stop(self) -> None:
        if self.process is None:
            return
        self.started_pids |= self.descendants()
        pgid = self.process.pid
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            for pid in self.started_pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (self.process.poll() is None or self._alive()):
                time.sleep(0.2)
            if self.process.poll() is not None and not self._alive():
                break
        self.process = None

    def _alive(self) -> bool:
        alive = False
        for pid in self.started_pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                alive = True
        return alive

    def keep_logs(self, name: str) -> Path:
        target = ARTIFACTS / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.home / "component-logs", target / "component-logs", dirs_exist_ok=True)
        if (self.home / "logs").exists():
            shutil.copytree(self.home / "logs", target / "task-logs", dirs_exist_ok=True)
        return target


def emulator_connection(emulator: Any) -> str:
    """``AIRFLOW_CONN_HITPAW_DEFAULT`` for a running emulator, in Airflow's JSON form."""
    return json.dumps({"conn_type": "hitpaw", "host": emulator.base_url, "password": emulator.api_key})


@contextlib.contextmanager
def running_cluster(
    emulator: Any,
    home: Path,
    dag_files: list[Path],
    *,
    extra_env: dict[str, str] | None = None,
    keep_logs_as: str | None = None,
    keep_logs_if: Any = lambda: False,
    **cluster_options: Any,
) -> Iterator[AirflowCluster]:
    """Components on SQLite in ``home``, parsing ``dag_files``, with ``hitpaw_default`` on the emulator.

    Stopped on the way out, whatever happened; their logs are copied to ``test-artifacts/<keep_logs_as>``
    when ``keep_logs_if()`` says so (a test failed).
    """
    dags = home / "dags"
    dags.mkdir(exist_ok=True)
    for dag_file in dag_files:
        shutil.copy(dag_file, dags)
    port = free_port()
    extra = {"AIRFLOW_CONN_HITPAW_DEFAULT": emulator_connection(emulator), **(extra_env or {})}
    env = airflow_env(home, dags, port, extra)
    cluster = AirflowCluster(home=home, env=env, port=port, **cluster_options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if keep_logs_as and keep_logs_if():
            print(f"\nAirflow component logs kept in {cluster.keep_logs(keep_logs_as)}")


def dags_test(dag_id: str, emulator: Any, home: Path, extra_env: dict[str, str] | None = None) -> Any:
    """An example DAG under ``airflow dags test`` in a throw-away AIRFLOW_HOME, on the emulator, through the
    helper the package ships for its users (:func:`airflow_provider_hitpaw.testing.run_dag`)."""
    from airflow_provider_hitpaw.testing import run_dag

    env = {"HITPAW_EXAMPLE_SAMPLE_BASE_URL": f"{emulator.base_url}/samples", **(extra_env or {})}
    return run_dag(
        EXAMPLES, dag_id, base_url=emulator.base_url, api_key=emulator.api_key, env=env, airflow_home=home
    )
