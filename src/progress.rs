//! Progress counters that long operations (backup, restore, check, prune)
//! advance and the CLI displays. One process runs one operation, so the
//! counters are process-wide, like the interrupt flag: no progress type
//! threads through every signature, and updating is one relaxed atomic add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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

static PROGRESS: Progress = Progress {
    bytes: AtomicU64::new(0),
    bytes_total: AtomicU64::new(0),
    items: AtomicU64::new(0),
    items_total: AtomicU64::new(0),
    phase: Mutex::new(""),
};

/// The process's progress counters.
pub fn get() -> &'static Progress {
    &PROGRESS
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
