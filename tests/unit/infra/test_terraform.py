"""The Terraform configuration in infra/, checked by the terraform CLI and the real provider.

What runs, in this order:

1. ``terraform fmt -check -recursive`` on infra/ itself (needs no provider).
2. ``terraform init -backend=false`` in a temporary copy of infra/ that holds only the ``*.tf``
   files and ``tests/``: no ``terraform.tfvars`` a developer keeps there (``terraform test``
   would load it), no state, no ``.terraform/`` and no lock file.
3. ``terraform validate`` there: the configuration against hashicorp/google's own schema and
   validation.
4. ``terraform test`` there: ``infra/tests/*.tftest.hcl``, with a mock provider (no project, no
   credentials, nothing created), asserting the plan and that every variable validation
   rejects bad values and accepts valid ones. The count of passed runs must equal the count of
   ``run`` blocks, so a test file that stops being read does not pass unnoticed.

Where the provider comes from is an explicit choice, in this order:

- ``../shared/terraform/setup`` (relative to the repository root) exists: it unpacks one real
  build of hashicorp/google (7.45.0) into a filesystem mirror and prints
  ``export TF_CLI_CONFIG_FILE=...``; ``init`` installs the provider from that mirror only.
  The machines this project is built and tested on cannot reach the Terraform registry.
- Otherwise, outside CI: a plain ``terraform init``, which downloads hashicorp/google from the
  Terraform registry (a developer's machine with network access).
- Otherwise, when ``CI=true``: the tests fail, naming what is missing. CI exists to check the
  configuration against the real provider; a skip there would hide that nothing was checked.

The terraform CLI missing from PATH is likewise a failure under ``CI=true`` and a skip
elsewhere. No lock file is used: one made against the registry does not match the local
build's hash, and the temporary copy's lock file is thrown away.

Speed: ``TF_PLUGIN_CACHE_DIR`` is ``$WAL_BRIDGE_CACHE/terraform-plugins`` (default
``~/.cache/wal-bridge``), with ``TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE`` set because
there is no lock file to keep consistent, so a registry download happens once per provider
version; ``init`` runs once per session.

Alongside, a few structural checks that the CLI does not make (parsed with python-hcl2): IAM is
additive and never a basic role, every variable is described, typed and used, free-form
variables are validated.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
TF_FILES = sorted(INFRA.glob("*.tf"))
TEST_FILES = sorted((INFRA / "tests").glob("*.tftest.hcl"))
PROVIDER_SETUP = ROOT.parent / "shared" / "terraform" / "setup"

_META_KEYS = {"__comments__", "__is_block__", "__start_line__", "__end_line__"}
BASIC_ROLES = ("roles/owner", "roles/editor", "roles/viewer")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing(what: str) -> NoReturn:
    """Fail under CI=true, skip elsewhere: `what` says what is missing and how to get it."""
    if _in_ci():
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


def _cache_dir() -> Path:
    configured = os.environ.get("WAL_BRIDGE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "wal-bridge"


def _terraform() -> str:
    path = shutil.which("terraform")
    if path is None:
        _missing("the terraform CLI (1.8 or later) is not on PATH")
    return path


@dataclass(frozen=True)
class Workdir:
    """A temporary copy of infra/, initialised, and how to run terraform in it."""

    terraform: str
    path: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `terraform -chdir=<copy> args...`, returning its output (never raising on rc)."""
        return subprocess.run(
            [self.terraform, f"-chdir={self.path}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )


def _provider_env() -> dict[str, str]:
    """Environment for terraform: the offline mirror when ../shared/terraform/setup exists."""
    plugins = _cache_dir() / "terraform-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        "TF_PLUGIN_CACHE_DIR": str(plugins),
        "TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE": "true",
    }
    if not PROVIDER_SETUP.exists():
        if _in_ci():
            pytest.fail(
                f"CI=true but ../{PROVIDER_SETUP.relative_to(ROOT.parent)} (beside the repository) "
                "is missing: CI checks infra/ against the real hashicorp/google build it provides",
                pytrace=False,
            )
        return env  # a plain `terraform init` from the registry
    result = subprocess.run(
        ["bash", str(PROVIDER_SETUP)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{PROVIDER_SETUP.name} failed:\n{result.stderr}"
    match = re.fullmatch(r"export TF_CLI_CONFIG_FILE=(\S+)\s*", result.stdout)
    assert match, f"unexpected output from {PROVIDER_SETUP.name}: {result.stdout!r}"
    return env | {"TF_CLI_CONFIG_FILE": match.group(1)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    """infra/'s *.tf files and tests/ copied to a temporary directory and `terraform init`ed."""
    terraform = _terraform()
    env = _provider_env()
    path = tmp_path_factory.mktemp("infra")
    for source in TF_FILES:
        shutil.copy2(source, path / source.name)
    shutil.copytree(INFRA / "tests", path / "tests")
    work = Workdir(terraform=terraform, path=path, env=env)
    result = work.run("init", "-backend=false", "-input=false", "-no-color")
    assert result.returncode == 0, f"terraform init failed:\n{result.stdout}\n{result.stderr}"
    return work


def test_terraform_fmt_check_passes() -> None:
    """terraform fmt -check -recursive reports no unformatted file in infra/ (tests included)."""
    result = subprocess.run(
        [_terraform(), "fmt", "-check", "-recursive", "-diff", "-no-color", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"run terraform fmt -recursive infra:\n{result.stdout}"


def test_terraform_validate_passes(workdir: Workdir) -> None:
    """terraform validate accepts the configuration against the real provider schema."""
    result = workdir.run("validate", "-no-color")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success! The configuration is valid." in result.stdout


def test_terraform_test_passes_every_run(workdir: Workdir) -> None:
    """terraform test runs every run block of infra/tests/*.tftest.hcl, and each one passes."""
    assert TEST_FILES, "no infra/tests/*.tftest.hcl"
    expected = sum(
        len(re.findall(r'^run "', path.read_text(encoding="utf-8"), re.MULTILINE))
        for path in TEST_FILES
    )
    result = workdir.run("test", "-no-color", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = re.search(r"Success! (\d+) passed, 0 failed\.", output)
    assert summary, output
    assert int(summary.group(1)) == expected, output


# --- Structural checks the CLI does not make ------------------------------------------------


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _clean(node: Any) -> Any:
    """Drop python-hcl2's metadata keys and the quotes it keeps around strings and labels."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if k not in _META_KEYS}
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


def _load_all() -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in TF_FILES:
        with path.open(encoding="utf-8") as handle:
            parsed = _clean(hcl2.load(handle))
        for key, value in parsed.items():
            merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return merged


CONFIG = _load_all()
RESOURCES = {
    (rtype, name): body
    for block in CONFIG.get("resource", [])
    for rtype, named in block.items()
    for name, body in named.items()
}
VARIABLES = {name: body for block in CONFIG.get("variable", []) for name, body in block.items()}
OUTPUTS = {name: body for block in CONFIG.get("output", []) for name, body in block.items()}
TF_TEXT = "\n".join(path.read_text(encoding="utf-8") for path in TF_FILES)


def test_google_provider_constraint() -> None:
    """hashicorp/google from 7.31 (ignore_auto_generated_schema on external tables), below 8."""
    google = CONFIG["terraform"][0]["required_providers"][0]["google"]
    assert google["source"] == "hashicorp/google"
    assert re.fullmatch(r">=\s*7\.31(\.0)?,\s*<\s*8\.0", google["version"]), google["version"]


def test_iam_is_additive_and_never_basic_roles() -> None:
    """IAM uses non-authoritative *_iam_member resources and no owner, editor or viewer role."""
    iam_kinds = {kind for (kind, _) in RESOURCES if "_iam_" in kind}
    assert iam_kinds, "no IAM resources found"
    assert all(kind.endswith("_iam_member") for kind in iam_kinds), iam_kinds
    for role in BASIC_ROLES:
        assert f'"{role}"' not in TF_TEXT


def test_variables_have_descriptions_and_types() -> None:
    """Every variable carries a description and a type."""
    assert VARIABLES
    for name, body in VARIABLES.items():
        assert str(body.get("description", "")).strip(), f"{name} has no description"
        assert "type" in body, f"{name} has no type"


def test_every_variable_is_used() -> None:
    """Each declared variable is read somewhere (terraform validate does not report unused ones)."""
    used = set(re.findall(r"\bvar\.([a-z0-9_]+)", TF_TEXT))
    assert set(VARIABLES) <= used, set(VARIABLES) - used


def test_free_form_variables_are_validated() -> None:
    """Variables taking names, paths, principals or day counts have validation blocks."""
    must_validate = {
        "project_id",
        "location",
        "bucket_name",
        "dataset_id",
        "table_id",
        "view_id",
        "table_schema_file",
        "dedup_view_lookback_days",
        "raw_retention_days",
        "dead_letter_retention_days",
        "soft_delete_retention_days",
        "service_account_id",
        "impersonators",
        "workload_identity_k8s_service_account",
        "labels",
    }
    for name in sorted(must_validate):
        validations = VARIABLES[name].get("validation", [])
        assert validations, f"{name} has no validation"
        for validation in validations:
            assert f"var.{name}" in validation["condition"]
            assert validation["error_message"].strip()


def test_outputs_are_described() -> None:
    """Every output says what it is for."""
    assert OUTPUTS
    for name, body in OUTPUTS.items():
        assert str(body.get("description", "")).strip(), f"output {name} has no description"


def test_the_schema_fixture_is_what_wal_bridge_schema_prints() -> None:
    """The Terraform test's table_schema_file is the command's own output for a two-column
    SCHEMA_FILE, so the plan is checked with the file an operator would pass."""
    from wal_bridge import bigquery
    from wal_bridge.schema import Field, FieldType, PayloadSchema

    payload = PayloadSchema((Field("id", FieldType.INT64), Field("kind", FieldType.STRING)))
    fixture = INFRA / "tests" / "fixtures" / "events.schema.json"
    assert fixture.read_text(encoding="utf-8") == bigquery.to_json(bigquery.table_schema(payload))
