//! What a running operation shares with whoever started it: a flag that
//! asks it to stop at the next safe point, and progress counters to display.
//! The caller (the CLI, a test, a server handling many requests) creates a
//! `Context` per operation and hands it in; the library keeps no
//! process-wide state, so two operations in one process do not see each
//! other's interrupts or counters.

use crate::error::{Error, ErrorKind, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A cheap, cloneable handle: clones share the flag and the counters.
#[derive(Debug, Clone, Default)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    interrupted: AtomicBool,
    progress: Progress,
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// Asks the operations using this context to stop at their next safe
    /// point. One atomic store: safe to call from a signal handler.
    pub fn interrupt(&self) {
        self.inner.interrupted.store(true, Ordering::SeqCst);
    }

    pub fn is_interrupted(&self) -> bool {
        self.inner.interrupted.load(Ordering::SeqCst)
    }

    /// Fails with `ErrorKind::Interrupted` once an interrupt was requested.
    /// Long loops call this so that no snapshot is written after a Ctrl-C.
    pub fn check_interrupt(&self) -> Result<()> {
        if self.is_interrupted() {
            Err(Error::new(ErrorKind::Interrupted, "interrupted"))
        } else {
            Ok(())
        }
    }

    /// The operation's progress counters.
    pub fn progress(&self) -> &Progress {
        &self.inner.progress
    }
}

/// Progress counters that long operations (backup, restore, check, prune)
/// advance and a display reads; updating is one relaxed atomic add.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes processed (read for a backup, written for a restore, read for
    /// a check) and the total when known (0: unknown).
    pub bytes: AtomicU64,
    pub bytes_total: AtomicU64,
    /// Items done (files, packs) and their total when known.
    pub items: AtomicU64,
    pub items_total: AtomicU64,
    /// What is being done now ("backup", "reading packs", "repacking").
    phase: Mutex<&'static str>,
}

impl Progress {
    /// Starts a phase: resets the counters and sets the totals (0 if unknown).
    pub fn start(&self, phase: &'static str, bytes_total: u64, items_total: u64) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
        self.bytes.store(0, Ordering::Relaxed);
        self.items.store(0, Ordering::Relaxed);
        self.bytes_total.store(bytes_total, Ordering::Relaxed);
        self.items_total.store(items_total, Ordering::Relaxed);
    }

    /// Ends the phase: displays clear their bar before results are printed.
    pub fn finish(&self) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = "";
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_items(&self, n: u64) {
        self.items.fetch_add(n, Ordering::Relaxed);
    }

    pub fn phase(&self) -> &'static str {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (phase, bytes, bytes_total, items, items_total), read together.
    pub fn snapshot(&self) -> (&'static str, u64, u64, u64, u64) {
        (
            self.phase(),
            self.bytes.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
            self.items.load(Ordering::Relaxed),
            self.items_total.load(Ordering::Relaxed),
        )
    }
}
