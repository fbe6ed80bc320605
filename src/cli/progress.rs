//! Shows the library's progress counters (`cairn::progress`) while a
//! command runs: a bar with rate and ETA on a terminal, a plain line every
//! `CAIRN_PROGRESS_INTERVAL` seconds (default 30; 0 turns it off) when
//! stderr is not a terminal (cron mails, journald), nothing with `-q` or
//! `--json`. Always on stderr: stdout carries data (`dump`) and reports.

use super::args::Cli;
use super::output::human_bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub(crate) struct Display {
    /// Dropped to stop the thread: its wait ends at once, so a command
    /// does not linger for a polling interval at exit.
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits `interval`; false once the display is dropped.
fn wait(stop: &Receiver<()>, interval: Duration) -> bool {
    matches!(stop.recv_timeout(interval), Err(RecvTimeoutError::Timeout))
}

pub(crate) fn start(cli: &Cli) -> Option<Display> {
    if cli.quiet || cli.json {
        return None;
    }
    let (stop, stopped) = crossbeam_channel::bounded(0);
    let thread = if std::io::stderr().is_terminal() {
        std::thread::spawn(move || bar(&stopped))
    } else {
        let interval = std::env::var("CAIRN_PROGRESS_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(30.0);
        if interval <= 0.0 {
            return None;
        }
        std::thread::spawn(move || lines(&stopped, Duration::from_secs_f64(interval)))
    };
    Some(Display {
        stop: Some(stop),
        thread: Some(thread),
    })
}

fn bar(stop: &Receiver<()>) {
    let progress = crate::context().progress();
    let mut shown: Option<(&'static str, indicatif::ProgressBar)> = None;
    // Polled often so that a short phase (reading packs at 1 GiB/s) still
    // shows; indicatif limits the redraws themselves to 20 a second.
    while wait(stop, Duration::from_millis(20)) {
        let (phase, bytes, bytes_total, items, items_total) = progress.snapshot();
        if phase.is_empty() {
            if let Some((_, pb)) = shown.take() {
                pb.finish_and_clear();
            }
            continue;
        }
        if shown.as_ref().map(|(p, _)| *p) != Some(phase) {
            if let Some((_, old)) = shown.take() {
                old.finish_and_clear();
            }
            let pb = if bytes_total > 0 {
                let pb = indicatif::ProgressBar::new(bytes_total);
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                pb
            } else {
                let pb = indicatif::ProgressBar::new_spinner();
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} {spinner} [{elapsed_precise}] {bytes} {binary_bytes_per_sec} {msg}",
                    )
                    .expect("valid template"),
                );
                pb
            };
            pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            pb.set_prefix(phase);
            shown = Some((phase, pb));
        }
        if let Some((_, pb)) = &shown {
            if bytes_total > 0 {
                pb.set_length(bytes_total.max(bytes));
            }
            pb.set_position(bytes);
            pb.set_message(if items_total > 0 {
                format!("{items}/{items_total} items")
            } else {
                format!("{items} items")
            });
            pb.tick();
        }
    }
    if let Some((_, pb)) = shown {
        pb.finish_and_clear();
    }
}

fn lines(stop: &Receiver<()>, interval: Duration) {
    let progress = crate::context().progress();
    let started = Instant::now();
    let mut next = started + interval;
    let mut last_bytes = 0;
    while wait(stop, Duration::from_millis(50).min(interval)) {
        let now = Instant::now();
        if now < next {
            continue;
        }
        next = now + interval;
        let (phase, bytes, bytes_total, items, items_total) = progress.snapshot();
        if phase.is_empty() {
            continue;
        }
        let rate = (bytes - last_bytes.min(bytes)) as f64 / interval.as_secs_f64();
        last_bytes = bytes;
        let total = if bytes_total > 0 {
            format!(
                " of {} ({:.0}%)",
                human_bytes(bytes_total),
                bytes as f64 * 100.0 / bytes_total as f64
            )
        } else {
            String::new()
        };
        let items = if items_total > 0 {
            format!("{items}/{items_total}")
        } else {
            items.to_string()
        };
        let elapsed = started.elapsed().as_secs();
        eprintln!(
            "[{:02}:{:02}:{:02}] {phase}: {}{total}, {items} items, {}/s",
            elapsed / 3600,
            elapsed / 60 % 60,
            elapsed % 60,
            human_bytes(bytes),
            human_bytes(rate as u64)
        );
    }
}
