//! A bounded, shared cache of decoded blobs (file contents and trees) for
//! the mount. Entries are weighed in bytes and the least recently used go
//! first once the total passes the budget, so memory stays bounded however
//! much is read. A blob being loaded is marked so that a second reader (the
//! kernel sends concurrent reads, read-ahead runs beside them) waits for
//! the first instead of reading the pack again.

use crate::error::Result;
use crate::format::id::BlobId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(super) struct Cache<V> {
    state: Mutex<State<V>>,
    loaded: Condvar,
    budget: u64,
}

struct State<V> {
    slots: HashMap<BlobId, Slot<V>>,
    /// Use stamp → id, oldest first: the eviction order.
    order: BTreeMap<u64, BlobId>,
    clock: u64,
    bytes: u64,
}

enum Slot<V> {
    Loading,
    Ready {
        value: Arc<V>,
        weight: u64,
        stamp: u64,
    },
}

impl<V> Cache<V> {
    pub(super) fn new(budget: u64) -> Cache<V> {
        Cache {
            state: Mutex::new(State {
                slots: HashMap::new(),
                order: BTreeMap::new(),
                clock: 0,
                bytes: 0,
            }),
            loaded: Condvar::new(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<V>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value, loading it with `load` (which returns the value
    /// and its weight in bytes) when absent. Failures are not cached: the
    /// next read tries the pack again.
    pub(super) fn get(
        &self,
        id: &BlobId,
        load: impl FnOnce() -> Result<(V, u64)>,
    ) -> Result<Arc<V>> {
        let mut state = self.lock();
        loop {
            match state.slots.get(id) {
                Some(Slot::Ready { .. }) => return Ok(state.touch(id)),
                Some(Slot::Loading) => {
                    state = self.loaded.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                None => break,
            }
        }
        state.slots.insert(*id, Slot::Loading);
        drop(state);
        let loaded = load();
        let mut state = self.lock();
        let out = match loaded {
            Ok((value, weight)) => {
                let value = Arc::new(value);
                state.insert(id, value.clone(), weight, self.budget);
                Ok(value)
            }
            Err(e) => {
                state.slots.remove(id);
                Err(e)
            }
        };
        drop(state);
        self.loaded.notify_all();
        out
    }

    /// Marks `id` as being loaded unless it is cached or already loading;
    /// true if the caller should now load it (read-ahead) and `finish` it.
    pub(super) fn claim(&self, id: &BlobId) -> bool {
        let mut state = self.lock();
        if state.slots.contains_key(id) {
            return false;
        }
        state.slots.insert(*id, Slot::Loading);
        true
    }

    /// Ends a `claim`: stores the value, or forgets the claim on failure.
    pub(super) fn finish(&self, id: &BlobId, loaded: Result<(V, u64)>) {
        let mut state = self.lock();
        match loaded {
            Ok((value, weight)) => state.insert(id, Arc::new(value), weight, self.budget),
            Err(_) => {
                state.slots.remove(id);
            }
        }
        drop(state);
        self.loaded.notify_all();
    }

    /// Whether `id` is cached or being loaded.
    #[cfg(test)]
    pub(super) fn has(&self, id: &BlobId) -> bool {
        self.lock().slots.contains_key(id)
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

impl<V> State<V> {
    fn touch(&mut self, id: &BlobId) -> Arc<V> {
        self.clock += 1;
        let now = self.clock;
        let Some(Slot::Ready { value, stamp, .. }) = self.slots.get_mut(id) else {
            unreachable!("touch is called on a ready slot");
        };
        let old = std::mem::replace(stamp, now);
        let value = value.clone();
        self.order.remove(&old);
        self.order.insert(now, *id);
        value
    }

    fn insert(&mut self, id: &BlobId, value: Arc<V>, weight: u64, budget: u64) {
        self.clock += 1;
        let stamp = self.clock;
        if let Some(Slot::Ready {
            stamp: old,
            weight: w,
            ..
        }) = self.slots.insert(
            *id,
            Slot::Ready {
                value,
                weight,
                stamp,
            },
        ) {
            self.order.remove(&old);
            self.bytes -= w;
        }
        self.order.insert(stamp, *id);
        self.bytes += weight;
        // The entry just stored stays even when it alone is over budget: its
        // reader holds it anyway, and the next insert evicts it.
        while self.bytes > budget && self.order.len() > 1 {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(Slot::Ready { weight, .. }) = self.slots.remove(&oldest) {
                self.bytes -= weight;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};

    fn id(n: u8) -> BlobId {
        BlobId(crate::format::id::Id([n; 32]))
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_total_stays_in_budget() {
        let cache: Cache<Vec<u8>> = Cache::new(300);
        for n in 0..3 {
            cache.get(&id(n), || Ok((vec![n; 100], 100))).unwrap();
        }
        // Touch 0, so 1 is now the oldest.
        cache.get(&id(0), || panic!("0 is cached")).unwrap();
        cache.get(&id(3), || Ok((vec![3; 100], 100))).unwrap();
        assert!(cache.has(&id(0)) && !cache.has(&id(1)) && cache.has(&id(3)));
        assert_eq!(cache.bytes(), 300);
    }

    #[test]
    fn a_failed_load_is_not_cached() {
        let cache: Cache<Vec<u8>> = Cache::new(300);
        let err = cache.get(&id(1), || Err(Error::new(ErrorKind::Corrupt, "bad")));
        assert!(err.is_err());
        assert!(!cache.has(&id(1)));
        assert_eq!(*cache.get(&id(1), || Ok((vec![1], 1))).unwrap(), vec![1]);
    }

    #[test]
    fn a_claimed_blob_is_waited_for_not_read_twice() {
        let cache: Arc<Cache<Vec<u8>>> = Arc::new(Cache::new(300));
        assert!(cache.claim(&id(7)));
        assert!(!cache.claim(&id(7)));
        let reader = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.get(&id(7), || panic!("loaded twice")).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.finish(&id(7), Ok((vec![7; 3], 3)));
        assert_eq!(*reader.join().unwrap(), vec![7; 3]);
    }
}
