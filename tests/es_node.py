"""A real Elasticsearch for the tests and for development, one node or a cluster, no Docker needed.

tests/elasticsearch/ holds a small Maven project that starts Elastic's own server (from Maven Central) in a
plain JVM. This module builds it with Maven, picks a Java that the server version needs, starts it with a
bounded heap on 127.0.0.1 and waits for its "ready at URL" line.

    python -m tests.es_node                       # 8.x (the docker-compose.yml version) on port 9200
    python -m tests.es_node --version 9 --port 0  # the newest 9.x on a free port
    python -m tests.es_node --nodes 3             # a three-node 8.x cluster on ports 9200-9202 (make es-cluster)

The test suite starts one node per session through `start()` (tests/conftest.py) when ES_URL is not set,
and a three-node cluster through `start_cluster()` when a test asks for one:

    cluster = start_cluster("8", nodes=3)         # -> Cluster: .urls, .master(), .wait_for(), .close()
    cluster.nodes[1].kill(); cluster.nodes[1].start()     # also .stop(), .pause(), .resume()
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PROJECT = Path(__file__).resolve().parent / "elasticsearch"
# 8.x: the same version as the image in docker-compose.yml; 9.x: the newest on Maven Central when written.
VERSIONS = {"8": "8.19.21", "9": "9.5.3"}
JAVA_NEEDED = {"8": 17, "9": 21}
HEAP = "512m"
_READY = re.compile(r"^elasticsearch (\S+) ready at (http://\S+)$", re.M)


class NodeUnavailable(RuntimeError):
    """The node could not be built or did not start; the message says why."""


class ToolMissing(NodeUnavailable):
    """No Java new enough, or no Maven, on this machine."""


def full_version(version: str) -> str:
    return VERSIONS.get(version, version)


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 else major


@functools.cache   # each candidate's `java -version` starts a JVM: once per process is enough
def find_java(version: str) -> str:
    """A java binary new enough for this server version: JAVA_HOME, then PATH, then the newest in /usr/lib/jvm."""
    need = JAVA_NEEDED[full_version(version).split(".")[0]]
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(shutil.which("java"))
    candidates += sorted((str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java")),
                         key=lambda java: _java_major(java) or 0, reverse=True)
    for java in candidates:
        major = _java_major(java)
        if major is not None and major >= need:
            return java
    raise ToolMissing(f"Elasticsearch {full_version(version)} needs Java {need} or newer; none found "
                          f"(looked at JAVA_HOME, PATH and /usr/lib/jvm)")


def build(version: str) -> tuple[str, str]:
    """Compile the launcher against this server version (once; Maven's cache in ~/.m2 is reused).
    Returns (java binary, class path)."""
    version = full_version(version)
    java = find_java(version)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolMissing("Maven (mvn) is not installed: it fetches Elasticsearch from Maven Central")
    target = PROJECT / "target" / version
    classpath_file, classes = target / "classpath.txt", target / "classes"
    sources = [PROJECT / "pom.xml", *PROJECT.glob("src/**/*.java")]
    if not classpath_file.is_file() or classpath_file.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        java_home = str(Path(java).resolve().parent.parent)
        release = JAVA_NEEDED[version.split(".")[0]]
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(PROJECT / "pom.xml"), f"-Des.version={version}",
             f"-Dmaven.compiler.release={release}", "package"],
            env={**os.environ, "JAVA_HOME": java_home}, capture_output=True, text=True, timeout=1800)
        if result.returncode != 0 or not classpath_file.is_file():
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise NodeUnavailable(f"building the Elasticsearch {version} launcher failed:\n" + "\n".join(tail))
    return java, f"{classes}{os.pathsep}{classpath_file.read_text().strip()}"


@dataclass
class Node:
    """A running node: its URL, process and log file."""
    version: str
    url: str
    process: subprocess.Popen
    log: Path
    home: Path | None
    command: list[str] = field(repr=False)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM and wait: the node closes and removes its temporary data folder."""
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM killer does."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: a stalled cluster that accepts connections and answers nothing."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(version: str, *, port: int, home: Path | None, settings: dict | None, heap: str, log: Path | None,
           jvm_options: tuple[str, ...]) -> tuple[subprocess.Popen, Path, int, list[str]]:
    """Build (if needed) and launch a node without waiting for it: (process, log, log offset, command)."""
    java, classpath = build(version)
    command = [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseSerialGC", *jvm_options, "-cp", classpath,
               "org.elasticsearch.node.TestNode", "--port", str(port),
               "--owner", str(os.getpid())]   # the node stops by itself if this process dies
    if home is not None:
        command += ["--home", str(home)]
    command += [f"-E{k}={v}" for k, v in (settings or {}).items()]
    if log is None:
        log = Path(tempfile.mkstemp(prefix=f"es-{version}-", suffix=".log")[1])
    offset = log.stat().st_size if log.exists() else 0   # a restart appends to the same log
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return process, log, offset, command


def _await_ready(version: str, process: subprocess.Popen, log: Path, offset: int, command: list[str],
                 home: Path | None, timeout: float) -> Node:
    """The Node once its "ready at URL" line is in the log (the cluster is at least yellow)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_bytes()[offset:].decode(errors="replace")
        match = _READY.search(text)
        if match:
            return Node(match.group(1), match.group(2), process, log, home, command)
        if process.poll() is not None:
            raise NodeUnavailable(f"Elasticsearch {version} exited with status {process.returncode}:\n"
                                  + "\n".join(text.splitlines()[-20:]))
        time.sleep(0.25)
    process.kill()
    raise NodeUnavailable(f"Elasticsearch {version} was not ready after {timeout:g} s (log: {log})")


def start(version: str = "8", *, port: int = 0, home: Path | None = None, settings: dict | None = None,
          heap: str = HEAP, timeout: float = 240, log: Path | None = None, jvm_options: tuple[str, ...] = ()) -> Node:
    """Build (if needed) and start a node; return once it is at least yellow. `home` keeps the data (a node
    started again on the same home and port finds its indices); without it the data is temporary.
    `jvm_options` go to the JVM before the class path (e.g. --add-modules=jdk.incubator.vector)."""
    version = full_version(version)
    process, log, offset, command = _spawn(version, port=port, home=home, settings=settings, heap=heap, log=log,
                                           jvm_options=jvm_options)
    return _await_ready(version, process, log, offset, command, home, timeout)


# -- several nodes ---------------------------------------------------------------------------------

def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class ClusterNode:
    """One node of a Cluster: fixed name, ports and data folder, so it can be stopped, killed and started
    again as the same member with the same data at the same URL."""
    name: str
    version: str
    http_port: int
    home: Path
    settings: dict
    heap: str
    log: Path
    node: Node | None = None
    jvm_options: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.node is not None and self.node.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.node.process.pid if self.node else None

    def _spawn(self) -> tuple[subprocess.Popen, Path, int, list[str]]:
        if self.running:
            raise NodeUnavailable(f"{self.name} is already running")
        return _spawn(self.version, port=self.http_port, home=self.home, settings=self.settings, heap=self.heap,
                      log=self.log, jvm_options=self.jvm_options)

    def _ready(self, spawned: tuple, timeout: float) -> None:
        self.node = _await_ready(self.version, *spawned, home=self.home, timeout=timeout)

    def start(self, timeout: float = 240) -> None:
        """Start it again on its data (it rejoins the cluster); returns once the cluster is at least yellow."""
        self._ready(self._spawn(), timeout)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM: a clean shutdown, as for a rolling restart."""
        if self.node:
            self.node.stop(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.node:
            self.node.kill()

    def pause(self) -> None:
        """SIGSTOP: the JVM stalls; its connections stay open and nothing answers."""
        if self.node:
            self.node.pause()

    def resume(self) -> None:
        if self.node:
            self.node.resume()

    def tail(self, lines: int = 20) -> str:
        return self.node.tail(lines) if self.node else ""


class Cluster:
    """N nodes of one cluster on 127.0.0.1, every one master-eligible and data (start_cluster)."""

    def __init__(self, nodes: list[ClusterNode], root: Path, temporary: bool):
        self.nodes, self.root, self._temporary = nodes, root, temporary

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def version(self) -> str:
        return self.nodes[0].version

    def request(self, path: str, timeout: float = 10) -> dict | list:
        """GET `path` as JSON from the first running node that answers (for the tests' own checks)."""
        errors = []
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with urllib.request.urlopen(node.url + path, timeout=timeout) as response:
                    return json.load(response)
            except OSError as exc:     # URLError, a timeout, a reset: try the next node
                errors.append(f"{node.name}: {exc}")
        raise NodeUnavailable(f"no node answered {path}: " + "; ".join(errors or ["none is running"]))

    def _poll(self, answer: Callable[[], Any], timeout: float, failure: str) -> Any:
        """answer() again every 0.5 s (a node not answering counts as no answer) until it is not None."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = answer()
                if found is not None:
                    return found
            except NodeUnavailable:
                pass
            if time.monotonic() > deadline:
                raise NodeUnavailable(f"{failure} after {timeout:g} s")
            time.sleep(0.5)

    def master(self, timeout: float = 60) -> ClusterNode:
        """The elected master, waiting (up to `timeout` s) for an election when there is none right now."""
        def elected() -> ClusterNode | None:
            rows = self.request("/_cat/master?format=json", timeout=5)
            names = {row.get("node") for row in rows if isinstance(row, dict)}
            return next((node for node in self.nodes if node.name in names and node.running), None)
        return self._poll(elected, timeout, "no master elected")

    def wait_for(self, status: str = "green", nodes: int | None = None, timeout: float = 120) -> dict:
        """Wait until the cluster health is `status` (or better) with `nodes` members (default: all)."""
        nodes = len(self.nodes) if nodes is None else nodes

        def reached() -> dict | None:
            health = self.request(f"/_cluster/health?wait_for_status={status}&wait_for_nodes={nodes}&timeout=10s",
                                  timeout=15)
            return health if isinstance(health, dict) and not health.get("timed_out") else None
        return self._poll(reached, timeout, f"the cluster is not {status} with {nodes} nodes")

    def wait_all(self) -> None:
        """Block until every node has exited."""
        while any(node.running for node in self.nodes):
            time.sleep(1)

    def close(self) -> None:
        """Stop every node; remove the data unless it was given (start_cluster's `home`)."""
        for node in self.nodes:
            node.resume()
        for node in self.nodes:
            node.stop()
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_cluster(version: str = "8", nodes: int = 3, *, port: int = 0, home: Path | None = None,
                  settings: dict | None = None, heap: str = HEAP, timeout: float = 300,
                  jvm_options: tuple[str, ...] = ()) -> Cluster:
    """Start `nodes` nodes as one cluster and return once all have joined and it is green.

    HTTP on `port`, `port + 1`, ... (0: free ports), transport on free ports; every node master-eligible
    and data, joined by discovery.seed_hosts and cluster.initial_master_nodes. Each node's data lives in
    `home`/node-I (kept), or in a temporary folder removed by close(): either way it survives kill() and
    start(), so a killed node comes back on its data. `settings` and `jvm_options` go to every node."""
    version = full_version(version)
    build(version)                  # once, before any node starts: errors come out here
    temporary = home is None
    root = Path(tempfile.mkdtemp(prefix="lookalike-es-cluster-")) if home is None else Path(home)
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * nodes) if port == 0 else [port + i for i in range(nodes)] + free_ports(nodes)
    http, transport = ports[:nodes], ports[-nodes:]
    names = [f"node-{i}" for i in range(nodes)]
    common = {"cluster.name": f"lookalike-cluster-{os.getpid()}-{http[0]}",
              "discovery.seed_hosts": ",".join(f"127.0.0.1:{p}" for p in transport),
              "cluster.initial_master_nodes": ",".join(names), **(settings or {})}
    members = [ClusterNode(name, version, http[i], root / name,
                           {**common, "node.name": name, "transport.port": transport[i]}, heap,
                           root / f"{name}.log", jvm_options=jvm_options) for i, name in enumerate(names)]
    cluster = Cluster(members, root, temporary)
    spawned: list[tuple] = []
    try:
        # all at once: none is ready (yellow) before a majority has joined and elected a master
        spawned = [member._spawn() for member in members]
        for member, launched in zip(members, spawned):
            member._ready(launched, timeout)
        cluster.wait_for("green", timeout=timeout)
    except BaseException:
        for member, launched in zip(members, spawned):
            if member.node is None:
                launched[0].kill()
        cluster.close()
        raise
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.es_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="8", help="8, 9 or a full version such as 8.19.21 (default: 8)")
    parser.add_argument("--port", type=int, default=9200,
                        help="HTTP port (of the first node; the others take the next ones); 0 takes free ones "
                             "(default: 9200)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes in the cluster (default: 1)")
    parser.add_argument("--home", type=Path, help="keep the data in this folder (default: a temporary one)")
    parser.add_argument("--heap", default=HEAP,
                        help=f"each node's JVM heap, e.g. 1g as docker-compose.yml gives it (default: {HEAP})")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    try:
        if args.nodes == 1:
            node = start(args.version, port=args.port, home=args.home, heap=args.heap, log=None)
            urls, stop, wait = [node.url], node.stop, node.process.wait
            print(f"Elasticsearch {node.version} at {node.url} (log {node.log}); Ctrl-C stops it.")
        else:
            cluster = start_cluster(args.version, args.nodes, port=args.port, home=args.home, heap=args.heap)
            urls, stop, wait = cluster.urls, cluster.close, cluster.wait_all
            print(f"Elasticsearch {cluster.version}, {args.nodes} nodes (logs and data in {cluster.root}); "
                  "Ctrl-C stops them.")
            for member in cluster.nodes:
                print(f"  {member.name} at {member.url} (pid {member.pid})")
    except NodeUnavailable as exc:
        print(f"es_node: {exc}", file=sys.stderr)
        return 1
    print(f"  LOOKALIKE_STORE={','.join(urls)} .venv/bin/python -m indexer index PATH --tags-from-folders",
          flush=True)
    def terminated(*_) -> None:
        # stop in `finally` below, not here: the handler runs inside wait(), which holds the process's wait lock,
        # and stopping from here waited on that lock for ever (a launcher that a SIGTERM could not end)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    try:
        wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
