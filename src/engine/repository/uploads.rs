//! Concurrent pack uploads for a remote backend: `BlobWriter` hands each
//! finished pack to one of `Backend::connections` upload threads and goes
//! on filling the next, instead of waiting for one PUT at a time. A pack is
//! reported back only once its upload has returned; the writer indexes it
//! only then (docs/FORMAT.md, the write order), and a failed upload fails
//! the writer.
//!
//! Memory: at most `connections` whole packs are held, each while it
//! uploads (the writer waits for a free upload before it hands over
//! another), so a backup to object storage holds up to connections ×
//! `pack_size_target` bytes more than one to a local directory.

use super::*;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

/// A pack that was uploaded (or failed to be): what the writer indexes.
pub(super) struct Uploaded {
    pub pack: IndexPack,
    /// The pack's size in bytes.
    pub len: u64,
    pub result: Result<()>,
}

struct Job {
    pack: IndexPack,
    bytes: Vec<u8>,
    /// 0 for the writer's first pack, 1 for the next, …
    number: u64,
}

pub(super) struct Uploads {
    backend: Arc<dyn Backend>,
    limit: usize,
    /// `None` once closed (no more jobs: the threads end).
    jobs: Option<mpsc::Sender<Job>>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    done_tx: mpsc::Sender<Uploaded>,
    done: mpsc::Receiver<Uploaded>,
    /// Started on the first upload, up to `limit`.
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
    submitted: u64,
}

impl Uploads {
    pub fn new(backend: Arc<dyn Backend>, limit: usize) -> Uploads {
        let (jobs, queue) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        Uploads {
            backend,
            limit: limit.max(1),
            jobs: Some(jobs),
            queue: Arc::new(Mutex::new(queue)),
            done_tx,
            done,
            threads: Vec::new(),
            in_flight: 0,
            submitted: 0,
        }
    }

    /// Hands a finished pack to an upload thread, after waiting for one to
    /// be free when all are busy. Returns the uploads that finished
    /// meanwhile, which the caller must process (index, or fail on error).
    pub fn submit(&mut self, pack: IndexPack, bytes: Vec<u8>) -> Result<Vec<Uploaded>> {
        let mut finished = self.finished();
        if self.in_flight >= self.limit {
            finished.push(self.wait_one());
        }
        if self.threads.len() < self.limit && self.threads.len() <= self.in_flight {
            self.start_thread()?;
        }
        let jobs = self
            .jobs
            .as_ref()
            .expect("not closed while the writer runs");
        let number = self.submitted;
        jobs.send(Job {
            pack,
            bytes,
            number,
        })
        .map_err(|_| Error::new(ErrorKind::Io, "the pack upload threads stopped"))?;
        self.in_flight += 1;
        self.submitted += 1;
        Ok(finished)
    }

    /// Waits for every upload handed over so far.
    pub fn wait_all(&mut self) -> Vec<Uploaded> {
        let mut finished = Vec::with_capacity(self.in_flight);
        while self.in_flight > 0 {
            finished.push(self.wait_one());
        }
        finished
    }

    /// The uploads that finished, without waiting.
    fn finished(&mut self) -> Vec<Uploaded> {
        let finished: Vec<Uploaded> = self.done.try_iter().collect();
        self.in_flight -= finished.len();
        finished
    }

    fn wait_one(&mut self) -> Uploaded {
        let one = self
            .done
            .recv()
            .expect("this struct holds a sender, so the channel stays open");
        self.in_flight -= 1;
        one
    }

    fn start_thread(&mut self) -> Result<()> {
        let (backend, queue, done) = (
            self.backend.clone(),
            self.queue.clone(),
            self.done_tx.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("cairn-upload".into())
            .spawn(move || loop {
                let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(Job {
                    pack,
                    bytes,
                    number,
                }) = job
                else {
                    break;
                };
                let result = if number == 2 && crate::failpoint::is_set!("third-upload-error") {
                    // Test hook: the writer's third upload fails, after
                    // the ones handed over later have had time to succeed.
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    Err(Error::new(ErrorKind::Io, "injected upload error"))
                } else {
                    backend.put(FileKind::Pack, &pack.id.to_hex(), &bytes)
                };
                let len = bytes.len() as u64;
                drop(bytes);
                let result = result.map_err(|e| e.context(format!("pack {}", pack.id)));
                if done.send(Uploaded { pack, len, result }).is_err() {
                    break;
                }
            })
            .map_err(|e| Error::io("cannot start a pack upload thread", e))?;
        self.threads.push(thread);
        Ok(())
    }
}

impl Drop for Uploads {
    /// Ends the threads after their current uploads (the writer's `Drop`
    /// collects those first with `wait_all`).
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
