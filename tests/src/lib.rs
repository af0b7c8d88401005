//! End-to-end tests for the PATE binaries live in `tests/`.
