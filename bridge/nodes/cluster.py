"""Installing, starting and stopping local engine nodes on loopback.

Layout (``run_dir()``): ``installs/<engine>-<version>/`` holds the unpacked engine with its
plugins; ``clusters/<engine>-<port>/node-<i>/{config,data,logs}`` holds each node, and
``state.json`` beside them records pids and ports. Engines refuse to run as root, so
when the bridge runs as root the nodes run as the system user ``bridge``.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bridge.nodes.distribution import DEFAULT_PORTS, Distribution, distribution
from bridge.nodes.jdk import Java, find_java
from bridge.nodes.maven import fetch

ENGINE_USER = "bridge"

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """A local engine could not be installed, started or stopped."""


def bridge_home() -> Path:
    return Path(os.environ.get("BRIDGE_HOME") or Path.home() / ".cache" / "bridge")


def run_dir() -> Path:
    """Where installs and node data live (readable by the engine user when root)."""
    if os.environ.get("BRIDGE_RUN_DIR"):
        return Path(os.environ["BRIDGE_RUN_DIR"])
    return Path("/var/lib/bridge") if os.geteuid() == 0 else bridge_home() / "run"


def _engine_user() -> str | None:
    """The user nodes run as: ``bridge`` (created if needed) when we are root, else us."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(ENGINE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--shell", "/usr/sbin/nologin", ENGINE_USER],
            check=True, capture_output=True,
        )  # fmt: skip
    return ENGINE_USER


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _unzip(archive: Path, dest: Path) -> None:
    """Extract keeping file modes, dropping the archive's single top-level folder."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = Path(info.filename).parts[1:]
            if not parts:
                continue
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)


def _java_env(dist: Distribution, java: Java, heap: str | None = None) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        dist.java_home_var: str(java.home),
    }
    if heap:
        env[dist.java_opts_var] = f"-Xms{heap} -Xmx{heap}"
    return env


def install(dist: Distribution, progress: bool = True, require_checksum: bool = False) -> Path:
    """Download (once) and unpack the engine with its plugins; returns its home."""
    home = run_dir() / "installs" / dist.home_name
    if (home / ".complete").exists():
        return home
    cache = bridge_home() / "downloads"
    core = fetch(dist.core, cache, progress=progress, require_checksum=require_checksum)
    plugins = [
        fetch(p, cache, progress=progress, require_checksum=require_checksum) for p in dist.plugins
    ]
    java = find_java(dist.java_min, dist.java_max)
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _unzip(core, staging)
    for plugin in plugins:
        result = subprocess.run(
            [str(staging / "bin" / dist.plugin_tool), "install", "--batch", plugin.as_uri()],
            env=_java_env(dist, java),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise EngineError(
                f"installing plugin {plugin.name} into {dist.home_name} failed "
                f"(exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
            )
    (staging / ".complete").write_text(json.dumps({"java": str(java)}))
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    return home


@dataclass
class NodeState:
    name: str
    pid: int
    http_port: int
    transport_port: int
    dir: str


@dataclass
class ClusterState:
    engine: str
    version: str
    url: str
    java: str
    heap: str
    nodes: list[NodeState]

    @property
    def dir(self) -> Path:
        return Path(self.nodes[0].dir).parent

    def save(self) -> None:
        (self.dir / "state.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        raw = json.loads(path.read_text())
        raw["nodes"] = [NodeState(**n) for n in raw["nodes"]]
        return cls(**raw)


def cluster_dir(engine: str, port: int) -> Path:
    return run_dir() / "clusters" / f"{engine}-{port}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _yaml(settings: dict[str, object]) -> str:
    lines = []
    for key, value in settings.items():
        lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def log_tail(node_dir: Path, lines: int = 40) -> str:
    """The last lines of a node's logs (its main log, else its stdout)."""
    logs = node_dir / "logs"
    candidates = (
        sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime) if logs.exists() else []
    )
    main = [p for p in candidates if not p.name.startswith(("gc", "stdout"))]
    for path in (main[-1:] or []) + [logs / "stdout.log"]:
        if path.exists():
            text = path.read_text(errors="replace").splitlines()
            return f"--- {path} ---\n" + "\n".join(text[-lines:])
    return f"(no logs in {logs})"


def start(
    engine: str,
    version: str | None = None,
    port: int | None = None,
    heap: str = "1g",
    nodes: int = 1,
    fresh: bool = False,
    timeout: float = 240.0,
    progress: bool = True,
    require_checksum: bool = False,
    settings: dict | None = None,
    plugin: bool = True,
) -> ClusterState:
    """Start ``nodes`` nodes on loopback and wait until the cluster is green.

    ``settings`` go into every node's configuration file (e.g. a tiny write queue)."""
    extra = dict(settings or {})
    dist = distribution(engine, version)
    port = port or DEFAULT_PORTS[engine]
    existing = status(engine, port)
    if existing is not None:
        raise EngineError(
            f"{engine} is already running on port {port} ({existing.url}); "
            f"stop it first: bridge engine stop {engine} --port {port}"
        )
    home = install(dist, progress=progress, require_checksum=require_checksum)
    java = find_java(dist.java_min, dist.java_max)
    if engine == "elasticsearch":
        from bridge.plugin.install import sync_plugin  # the ingest plugin that calls the bridge

        sync_plugin(home, dist.version, _java_env(dist, java), wanted=plugin)
        if plugin:
            extra.setdefault("bridge.root_handler", True)  # GET / (no rest-root module here)
    user = _engine_user()
    root = cluster_dir(engine, port)
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
    names = [f"node-{i}" for i in range(nodes)]
    transport = [port + 100 + i for i in range(nodes)]
    states = []
    for i, name in enumerate(names):
        node_dir = root / name
        conf = node_dir / "config"
        shutil.rmtree(conf, ignore_errors=True)
        shutil.copytree(home / "config", conf)
        (node_dir / "data").mkdir(parents=True, exist_ok=True)
        (node_dir / "logs").mkdir(parents=True, exist_ok=True)
        node_settings = {
            "cluster.name": f"bridge-{engine}-{port}",
            "node.name": name,
            "http.port": port + i,
            "transport.port": transport[i],
            "path.data": str(node_dir / "data"),
            "path.logs": str(node_dir / "logs"),
            **dist.settings(),
            **extra,
        }
        if nodes == 1:
            node_settings["discovery.type"] = "single-node"
        else:
            node_settings["discovery.seed_hosts"] = [f"127.0.0.1:{p}" for p in transport]
            node_settings[dist.initial_managers_key] = names
        (conf / dist.config_file).write_text(_yaml(node_settings))
        states.append(NodeState(name, 0, port + i, transport[i], str(node_dir)))
    _chown_tree(root, user)
    _chown_tree(home, user)

    procs = [_launch(dist, home, java, node, heap) for node in states]
    state = ClusterState(engine, dist.version, f"http://127.0.0.1:{port}", str(java), heap, states)
    state.save()
    try:
        _wait_green(state, procs, timeout)
    except EngineError:
        stop(engine, port)
        raise
    return state


def _launch(
    dist: Distribution, home: Path, java: Java, node: NodeState, heap: str
) -> subprocess.Popen:
    """Start one node in its own session (it outlives this process) and record its pid."""
    user = _engine_user()
    env = {**_java_env(dist, java, heap), dist.conf_var: str(Path(node.dir) / "config")}
    with (Path(node.dir) / "logs" / "stdout.log").open("ab") as stdout:
        proc = subprocess.Popen(
            [str(home / "bin" / dist.launcher)],
            cwd=node.dir,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    node.pid = proc.pid
    return proc


def _wait_green(
    state: ClusterState,
    procs: list[subprocess.Popen],
    timeout: float,
    nodes: list[NodeState] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    want = len(state.nodes)
    # One node can never hold replicas: an index asking for one stays yellow, and that is
    # as healthy as a single node gets (`bridge setup` gives such clusters 0 replicas).
    wanted = {"green", "yellow"} if want == 1 else {"green"}
    status = "yellow" if want == 1 else "green"
    url = f"{state.url}/_cluster/health?wait_for_nodes={want}&wait_for_status={status}&timeout=1s"
    while time.monotonic() < deadline:
        for proc, node in zip(procs, nodes or state.nodes, strict=True):
            if proc.poll() is not None:
                raise EngineError(
                    f"{state.engine} {node.name} exited with code {proc.returncode} "
                    f"during start-up\n{log_tail(Path(node.dir))}"
                )
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code == 200 and r.json().get("status") in wanted:
                if r.json()["status"] == "yellow":
                    log.warning(
                        "%s is yellow: an index asks for replicas that one node cannot hold "
                        "(set its number_of_replicas to 0)",
                        state.engine,
                    )
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise EngineError(
        f"{state.engine} did not turn green within {timeout:.0f}s\n"
        f"{log_tail(Path(state.nodes[0].dir))}"
    )


def status(engine: str, port: int) -> ClusterState | None:
    """The running cluster on that port, or None (stale state is removed)."""
    path = cluster_dir(engine, port) / "state.json"
    if not path.exists():
        return None
    state = ClusterState.load(path)
    if not any(_alive(n.pid) for n in state.nodes if n.pid):
        path.unlink(missing_ok=True)
        return None
    return state


def all_clusters() -> list[ClusterState]:
    root = run_dir() / "clusters"
    found = []
    for path in sorted(root.glob("*/state.json")) if root.exists() else []:
        engine, _, port = path.parent.name.rpartition("-")
        state = status(engine, int(port))
        if state is not None:
            found.append(state)
    return found


def ports_of(engine: str, running: bool = True) -> list[int]:
    """HTTP ports of ``engine``'s local clusters: the running ones, or every one with a
    directory (to read the logs of a node that is no longer running)."""
    if running:
        return [int(s.url.rsplit(":", 1)[1]) for s in all_clusters() if s.engine == engine]
    root = run_dir() / "clusters"
    names = sorted(root.glob(f"{engine}-*")) if root.exists() else []
    return [int(p.name.rpartition("-")[2]) for p in names if p.name.rpartition("-")[2].isdigit()]


def stop_node(node: NodeState, timeout: float = 60.0) -> None:
    """SIGTERM a node, then SIGKILL if it has not exited in time."""
    if not node.pid or not _alive(node.pid):
        return
    os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(node.pid):
        time.sleep(0.2)
    if _alive(node.pid):
        os.kill(node.pid, signal.SIGKILL)


def stop(engine: str, port: int | None = None, wipe: bool = False) -> bool:
    """Stop every node of the cluster; True if one was running."""
    port = port or DEFAULT_PORTS[engine]
    root = cluster_dir(engine, port)
    path = root / "state.json"
    running = False
    if path.exists():
        state = ClusterState.load(path)
        for node in state.nodes:
            running |= bool(node.pid) and _alive(node.pid)
            stop_node(node)
        path.unlink(missing_ok=True)
    if wipe:
        shutil.rmtree(root, ignore_errors=True)
    return running


def restart_node(state: ClusterState, index: int, timeout: float = 240.0) -> None:
    """Start one stopped node of a running cluster again and wait for green (fault tests)."""
    dist = distribution(state.engine, state.version)
    home = run_dir() / "installs" / dist.home_name
    java = find_java(dist.java_min, dist.java_max)
    proc = _launch(dist, home, java, state.nodes[index], state.heap)
    state.save()
    _wait_green(state, [proc], timeout, nodes=[state.nodes[index]])
