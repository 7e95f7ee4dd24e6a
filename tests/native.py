"""Containers of the project's image, run natively: the image's config, command lines, the oracle.

The compose and Kubernetes stack tests run each container built from docker/Dockerfile as a
plain child process: the ``wal_bridge`` console script of this virtual environment stands in
for the image's ``/opt/wal-bridge`` environment, and the container's command line and
environment are built the way a container runtime builds them, from the Dockerfile's final
stage (ENTRYPOINT, CMD, ENV, VOLUME, WORKDIR) and the service's or pod's own settings.

Rules taken from elsewhere:
- Compose: a service's ``command`` replaces the image's CMD; its ``entrypoint`` replaces the
  ENTRYPOINT and then also drops the CMD (compose-spec, services.entrypoint).
- Kubernetes: ``command`` replaces ENTRYPOINT (and the CMD is not used), ``args`` replace CMD;
  ``$(VAR)`` in command, args and env values expands to an earlier variable, ``$$`` is a
  literal ``$``, an unknown reference stays as written ("Define a Command and Arguments for a
  Container" and the EnvVar API reference).
- The container's environment is the image's ENV overlaid by the service's or pod's.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaException, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# The identity of a record in the landed rows (docs/schema.md).
IDENTITY = ("_kafka_topic", "_kafka_partition", "_kafka_offset")
Identity = tuple[str, int, int]


@dataclass(frozen=True)
class Image:
    """The runtime configuration of a Dockerfile's final stage.

    ``env`` holds the ENV values in order, ``$VAR``/``${VAR}`` expanded against earlier ENV
    lines and, for names the stage did not set (the base image's PATH), ``base_env``.
    """

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    volumes: list[str]
    workdir: str

    @classmethod
    def from_dockerfile(cls, path: Path = DOCKERFILE,
                        base_env: Mapping[str, str] | None = None) -> Image:
        """Parse ``path``; raises ValueError on an ENTRYPOINT or CMD not in exec (JSON) form."""
        base = dict(base_env or {})
        stage: dict[str, Any] = {}
        for instruction, rest in _instructions(path.read_text(encoding="utf-8")):
            if instruction == "FROM":
                stage = {"entrypoint": [], "cmd": [], "env": {}, "volumes": [], "workdir": "/"}
            elif instruction in ("ENTRYPOINT", "CMD"):
                if not rest.startswith("["):
                    raise ValueError(f"{instruction} {rest}: only the exec form is supported")
                stage[instruction.lower()] = json.loads(rest)
                if instruction == "ENTRYPOINT":  # Docker: a new ENTRYPOINT resets CMD
                    stage["cmd"] = []
            elif instruction == "ENV":
                stage["env"].update(_parse_env(rest, {**base, **stage["env"]}))
            elif instruction == "VOLUME":
                stage["volumes"] += json.loads(rest) if rest.startswith("[") else rest.split()
            elif instruction == "WORKDIR":
                stage["workdir"] = rest.strip()
        assert stage, f"{path}: no FROM"
        return cls(**stage)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            instruction, _, rest = full.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def _parse_env(rest: str, known: Mapping[str, str]) -> dict[str, str]:
    def expand(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                      lambda m: known.get(m.group(1) or m.group(2), ""), value)

    words = shlex.split(rest, posix=False)
    if "=" not in words[0]:  # legacy form: ENV NAME value with spaces
        name, _, value = rest.partition(" ")
        return {name: expand(value.strip())}
    out: dict[str, str] = {}
    for word in words:
        name, _, value = word.partition("=")
        out[name] = expand(value.strip('"'))
        known = {**known, name: out[name]}
    return out


def compose_argv(image: Image, service: Mapping[str, Any]) -> list[str]:
    """The process arguments of a compose service of ``image`` (compose-go's model)."""
    entrypoint = service.get("entrypoint")
    command = service.get("command")
    if entrypoint is not None:
        return [*entrypoint, *(command or [])]
    return [*image.entrypoint, *(command if command is not None else image.cmd)]


def k8s_expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of one command/args/env string."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
                  text)


def k8s_argv(image: Image, container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The process arguments of a Kubernetes container of ``image``, ``$(VAR)`` expanded."""
    command = container.get("command")
    args = container.get("args")
    if command is not None:
        argv = [*command, *(args or [])]
    else:
        argv = [*image.entrypoint, *(args if args is not None else image.cmd)]
    return [k8s_expand(a, env) for a in argv]


def native_executable(argv: Sequence[str]) -> list[str]:
    """``argv`` with its program looked up first in this virtual environment's bin directory,
    which plays the image's /opt/wal-bridge/bin (first on the image's PATH)."""
    venv_bin = Path(sys.prefix) / "bin"
    program = venv_bin / argv[0]
    assert program.is_file(), f"{argv[0]} is not a console script of {sys.prefix}"
    return [str(program), *argv[1:]]


def native_path() -> str:
    """PATH for a native container: this environment's bin first, as in the image."""
    return f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class NativeProcess:
    """One container, run as a child process with its own log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    metrics_port: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> NativeProcess:
        self.cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def terminate(self, timeout: float) -> int:
        """SIGTERM, as ``docker compose stop`` or the kubelet sends it; return the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """The sum of the samples of ``name`` on its /metrics (0 while it does not answer)."""
        if self.metrics_port is None:
            return 0.0
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return 0.0
        pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    def ready(self) -> bool:
        """True when its /readyz answers 200 (assigned partitions and moving data)."""
        if self.metrics_port is None:
            return False
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def describe(processes: Sequence[NativeProcess], tail: int = 25) -> str:
    """Exit codes and the last ``tail`` log lines of each process, for a failure message."""
    parts = []
    for process in processes:
        lines = process.log().splitlines()[-tail:]
        parts.append(f"--- {process.name} (exit {process.returncode()}):\n" + "\n".join(lines))
    return "\n".join(parts)


def wait_while_running(what: str, until: Any, processes: Sequence[NativeProcess],
                       timeout: float) -> None:
    """Poll ``until()`` while every process is alive; fail when one exits or on time-out."""
    deadline = time.monotonic() + timeout
    while not until():
        for process in processes:
            assert process.alive(), f"{process.name} exited early\n{describe(processes)}"
        assert time.monotonic() < deadline, (
            f"timed out after {timeout:.0f}s waiting for {what}\n{describe(processes)}"
        )
        time.sleep(0.5)


def topic_identities(bootstrap: str, topic: str, timeout: float = 60) -> Counter[Identity]:
    """(topic, partition, offset) of every record the topic holds, read from the beginning to
    the end offsets taken at the start."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"oracle-{topic}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        metadata = consumer.list_topics(topic, timeout=20).topics[topic]
        assert metadata.error is None, metadata.error
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)
                for p in metadata.partitions}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
        seen: Counter[Identity] = Counter()
        todo = {p for p, (low, high) in ends.items() if high > low}
        deadline = time.monotonic() + timeout
        while todo:
            assert time.monotonic() < deadline, f"could not read {topic} to its end: {todo}"
            for message in consumer.consume(1000, 1.0):
                assert message.error() is None, message.error()
                partition, offset = message.partition(), message.offset()
                seen[(topic, partition, offset)] += 1
                if offset + 1 >= ends[partition][1]:
                    todo.discard(partition)
        return seen
    finally:
        consumer.close()


class TopicWatch:
    """A consumer that answers how many records a topic holds; close it after use.

    Broker errors while a fresh topic's leaders are elected read as "not yet" (0 records)
    rather than failing the poll that asked.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{topic}",
                                   "enable.auto.commit": False})
        metadata = self._consumer.list_topics(topic, timeout=20).topics[topic]
        self._partitions = sorted(metadata.partitions)

    def size(self) -> int:
        """Records in the topic now (a topic here is never truncated, so end offsets add up)."""
        try:
            return sum(
                self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=20)[1]
                for p in self._partitions
            )
        except KafkaException:
            return 0

    def close(self) -> None:
        self._consumer.close()


def landed_objects(client: Any, bucket: str) -> list[str]:
    """Names of the Parquet objects in ``bucket``."""
    return sorted(b.name for b in client.list_blobs(bucket) if b.name.endswith(".parquet"))


def landed_identities(client: Any, bucket: str) -> Counter[Identity]:
    """(topic, partition, offset) of every row of every Parquet object in ``bucket``, data and
    dead-letter files alike, duplicates counted."""
    seen: Counter[Identity] = Counter()
    for name in landed_objects(client, bucket):
        table = pq.read_table(io.BytesIO(client.bucket(bucket).blob(name).download_as_bytes()),
                              columns=list(IDENTITY))
        seen.update(zip(*(table.column(c).to_pylist() for c in IDENTITY), strict=True))
    return seen
