//! Unit tests of locks on the in-memory backend.
