"""A real single-node Elasticsearch for the tests and for development, no Docker needed.

tests/elasticsearch/ holds a small Maven project that starts Elastic's own server (from Maven Central) in a
plain JVM. This module builds it with Maven, picks a Java that the server version needs, starts it with a
bounded heap on 127.0.0.1 and waits for its "ready at URL" line.

    python -m tests.es_node                       # 8.x (the docker-compose.yml version) on port 9200
    python -m tests.es_node --version 9 --port 0  # the newest 9.x on a free port

The test suite starts one per session through `start()` (tests/conftest.py) when ES_URL is not set.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

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


def start(version: str = "8", *, port: int = 0, home: Path | None = None, settings: dict | None = None,
          heap: str = HEAP, timeout: float = 240, log: Path | None = None, jvm_options: tuple[str, ...] = ()) -> Node:
    """Build (if needed) and start a node; return once it is at least yellow. `home` keeps the data (a node
    started again on the same home and port finds its indices); without it the data is temporary.
    `jvm_options` go to the JVM before the class path (e.g. --add-modules=jdk.incubator.vector)."""
    version = full_version(version)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.es_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="8", help="8, 9 or a full version such as 8.19.21 (default: 8)")
    parser.add_argument("--port", type=int, default=9200, help="HTTP port; 0 takes a free one (default: 9200)")
    parser.add_argument("--home", type=Path, help="keep the data in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    try:
        node = start(args.version, port=args.port, home=args.home, log=None)
    except NodeUnavailable as exc:
        print(f"es_node: {exc}", file=sys.stderr)
        return 1
    print(f"Elasticsearch {node.version} at {node.url} (log {node.log}); Ctrl-C stops it.\n"
          f"  LOOKALIKE_STORE={node.url} .venv/bin/python -m indexer index PATH --tags-from-folders", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    try:
        node.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
