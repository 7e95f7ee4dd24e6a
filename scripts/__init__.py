"""Development scripts: service provisioning for tests and people, benchmarks."""
