//! The clock that lock refreshes are timed with. `std::time::Instant` reads
//! CLOCK_MONOTONIC, which stops while the machine is suspended: a laptop
//! that sleeps two hours mid-backup would wake believing it refreshed its
//! lock a moment ago, while every other host has seen the lock go stale.
//! CLOCK_BOOTTIME is the same clock, but it keeps counting during suspend.

use std::time::Duration;

/// Time since boot, suspend included (CLOCK_BOOTTIME). Only differences
/// between two readings mean anything.
pub fn boottime() -> Duration {
    read(libc::CLOCK_BOOTTIME)
        // CLOCK_BOOTTIME exists since Linux 2.6.39; on anything older the
        // monotonic clock is the best there is.
        .or_else(|| read(libc::CLOCK_MONOTONIC))
        .expect("Linux has a monotonic clock")
}

fn read(clock: libc::clockid_t) -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which
    // lives for the whole call.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_advances_and_never_lags_the_monotonic_clock() {
        let first = boottime();
        std::thread::sleep(Duration::from_millis(20));
        let second = boottime();
        assert!(second >= first + Duration::from_millis(20));
        // BOOTTIME is MONOTONIC plus the time spent suspended.
        let monotonic = read(libc::CLOCK_MONOTONIC).unwrap();
        assert!(boottime() >= monotonic);
    }
}
