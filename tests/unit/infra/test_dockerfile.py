"""Structural checks of docker/Dockerfile and .dockerignore, without a Docker engine.

The Dockerfile is parsed into instructions (continuation lines joined, comments dropped, build
stages split at FROM) and the properties the deployment relies on are asserted: a multi-stage
build on a pinned slim Python 3.11, a non-root runtime user, the WAL as a volume, a health check
that needs no curl, and nothing credential-like copied in.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

WAL_DIR = "/var/lib/wal-bridge"
CREDENTIAL_PATTERNS = (
    "*.json",
    "*.pem",
    "*.key",
    "*.p12",
    ".env",
    ".env.*",
    "*secret*",
    "*credential*",
    "*id_rsa*",
    "*.tfstate",
    "*.tfvars",
)
SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE_KEY|APPLICATION_CREDENTIALS)", re.I)


@dataclass
class Instruction:
    """One Dockerfile instruction: its keyword and the rest of the (joined) line."""

    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction."""
        value = json.loads(self.args)
        assert isinstance(value, list)
        return [str(item) for item in value]


@dataclass
class Stage:
    """A build stage: its base image, its name and its instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Instructions of this stage with the given keyword."""
        return [i for i in self.instructions if i.keyword == keyword]


def _instructions(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining backslash continuations."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


def _stages(instructions: list[Instruction]) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the build stages with ${ARG} in FROM expanded."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: global_args[m.group(1) or m.group(2)],
                words[0],
            )
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            assert instruction.keyword == "ARG", "only ARG may precede the first FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


INSTRUCTIONS = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
GLOBAL_ARGS, STAGES = _stages(INSTRUCTIONS)
FINAL = STAGES[-1]


def _env(stage: Stage) -> dict[str, str]:
    """ENV values of a stage (KEY=VALUE pairs, as the Dockerfile writes them)."""
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", instruction.args):
            values[key] = value
    return values


def _copy_sources(instruction: Instruction) -> list[str]:
    words = [w for w in instruction.args.split() if not w.startswith("--")]
    return words[:-1]


def test_build_is_multi_stage() -> None:
    """A named builder stage installs the package; the runtime copies only its result."""
    assert len(STAGES) >= 2
    builder = STAGES[0]
    assert builder.name == "builder"
    assert any("pip install" in i.args for i in builder.all("RUN"))
    copies = FINAL.all("COPY")
    assert copies
    assert all("--from=builder" in i.args for i in copies), "runtime copies from the context"


def test_every_stage_uses_pinned_slim_python_311() -> None:
    """Each stage starts from python:3.11.<patch>-slim, pinned to a patch release."""
    for stage in STAGES:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", stage.base)
    assert len({stage.base for stage in STAGES}) == 1, "builder and runtime must share a base"


def test_runtime_runs_as_a_non_root_user() -> None:
    """The final stage creates uid 10001 and switches to it before the entrypoint."""
    users = FINAL.all("USER")
    assert users
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    assert user == "10001"
    assert any("--uid 10001" in i.args for i in FINAL.all("RUN"))
    keywords = [i.keyword for i in FINAL.instructions]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "RUN" not in keywords[keywords.index("USER") :], "nothing runs as root after USER"


def test_wal_directory_is_a_volume_owned_by_the_user() -> None:
    """WAL_DIR is /var/lib/wal-bridge, declared as a VOLUME and owned by uid 10001."""
    assert _env(FINAL)["WAL_DIR"] == WAL_DIR
    volumes = [
        json.loads(i.args) if i.args.startswith("[") else i.args for i in FINAL.all("VOLUME")
    ]
    assert [WAL_DIR] in volumes or WAL_DIR in volumes
    assert any("--owner 10001" in i.args and WAL_DIR in i.args for i in FINAL.all("RUN")), (
        "a new volume is seeded from the image's directory, so the directory needs the owner"
    )


def test_metrics_port_is_exposed() -> None:
    """Port 9464 (metrics, /healthz, /readyz) is exposed and is METRICS_PORT's default."""
    assert "9464" in " ".join(i.args for i in FINAL.all("EXPOSE")).split()
    assert _env(FINAL)["METRICS_PORT"] == "9464"


def test_health_check_asks_healthz_with_python() -> None:
    """HEALTHCHECK calls /healthz on loopback with urllib, since the slim image has no curl."""
    (healthcheck,) = FINAL.all("HEALTHCHECK")
    assert "--interval=" in healthcheck.args
    command = healthcheck.args[healthcheck.args.index("CMD") :]
    exec_args = json.loads(command.removeprefix("CMD").strip())
    assert exec_args[0] == "python"
    script = exec_args[-1]
    assert "urllib.request" in script
    assert "http://127.0.0.1:" in script
    assert "/healthz" in script
    assert "curl" not in command
    assert "wget" not in command


def test_entrypoint_is_the_cli_and_runs_the_service() -> None:
    """ENTRYPOINT is the wal_bridge console script and CMD is run, both in exec form."""
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    (cmd,) = FINAL.all("CMD")
    assert entrypoint.exec_form() == ["wal_bridge"]
    assert cmd.exec_form() == ["run"]


def test_no_credentials_enter_the_image() -> None:
    """No COPY or ADD brings credential-like files, ADD fetches nothing, no secret ENV or ARG."""
    for stage in STAGES:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            for source in _copy_sources(instruction):
                name = Path(source).name.lower()
                for pattern in CREDENTIAL_PATTERNS:
                    assert not fnmatch.fnmatch(name, pattern), f"{source} looks like a credential"
        assert not stage.all("ADD"), "use COPY: ADD can fetch URLs and unpack archives"
        for instruction in stage.all("ENV") + stage.all("ARG"):
            assert not SECRET_NAMES.search(instruction.args), instruction.args
    for key in GLOBAL_ARGS:
        assert not SECRET_NAMES.search(key)


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    """.dockerignore excludes everything, then re-admits exactly the files the builder copies."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source.rstrip("/")
        for instruction in STAGES[0].all("COPY")
        for source in _copy_sources(instruction)
    }
    assert admitted == copied == {"pyproject.toml", "README.md", "wal_bridge"}
    for name in (".env", "secrets", "infra", ".git"):
        assert name not in admitted
