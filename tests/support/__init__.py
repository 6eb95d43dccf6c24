"""Helpers the tests share: test job classes (imported by worker subprocesses by module name), drivers, the API fuzzer."""
