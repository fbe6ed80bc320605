//! Unit tests of `Repository` on the in-memory backend.
