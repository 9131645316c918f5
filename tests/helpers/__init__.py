"""Modules the tests share: model zoos, graph builders, CLI runs and checks (no tests here)."""
