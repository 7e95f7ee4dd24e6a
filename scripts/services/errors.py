"""Errors of the service harness, each with a message a person can act on."""

from __future__ import annotations

EXTERNAL_HINT = """\
Or point the tests at services that are already running (the compose stack, for instance):
  WAL_BRIDGE_TEST_KAFKA=127.0.0.1:9092           Kafka bootstrap servers
  WAL_BRIDGE_TEST_GCS=http://127.0.0.1:4443      GCS emulator URL
  WAL_BRIDGE_TEST_TOXIPROXY=http://127.0.0.1:8474  Toxiproxy API URL
  WAL_BRIDGE_TEST_BIGQUERY=http://127.0.0.1:9050   BigQuery emulator URL
  WAL_BRIDGE_TEST_SCHEMA_REGISTRY=http://127.0.0.1:8081  schema registry (Confluent API) URL
Nothing is provisioned for a service named that way."""


class ServiceError(Exception):
    """Root of the harness errors; str() is the whole message for a person."""


class SetupError(ServiceError):
    """Provisioning cannot go on; the message ends with how to use running services instead."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{detail}\n{EXTERNAL_HINT}")

    @classmethod
    def combine(cls, errors: list[SetupError]) -> SetupError:
        """One error, one hint, for several failures (say, both `mvn` and `go` missing)."""
        details = list(dict.fromkeys(error.detail for error in errors))
        return errors[0] if len(details) == 1 else cls("\n\n".join(details))


class ToolMissingError(SetupError):
    """A program needed to provision or run a service is not on PATH."""

    def __init__(self, tool: str, needed_for: str, install: str) -> None:
        super().__init__(
            f"`{tool}` was not found on PATH; it is needed {needed_for}.\nInstall it: {install}"
        )


class ProvisionError(SetupError):
    """Fetching or building a service into the cache failed."""

    def __init__(self, what: str, output_tail: str) -> None:
        super().__init__(
            f"provisioning {what} failed (is the package registry reachable?). "
            f"Last lines of its output:\n{output_tail}"
        )


class PortTakenError(ServiceError):
    """A port a service should listen on is already in use."""

    def __init__(self, service: str, port: int) -> None:
        super().__init__(
            f"port {port} on 127.0.0.1 is already taken, so {service} cannot listen on it; "
            "stop whatever holds it or choose another port."
        )


class StartError(ServiceError):
    """A service process died or did not become ready in time."""

    def __init__(self, service: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{service} did not start: {reason}. Last lines of its log:\n{log_tail}")


class NotManagedError(ServiceError):
    """The operation needs a process the harness started, but the service is external."""
