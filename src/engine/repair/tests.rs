//! Unit tests of repair on the in-memory backend.
