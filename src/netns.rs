//! Network namespaces for tests, benchmarks and demos.
