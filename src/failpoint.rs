//! Test hooks: crash or fail at a named step. Integration tests use them to
//! prove that a crash at each step of a backup, prune or repair leaves a
//! valid repository. They exist only when the `failpoints` feature is on
//! (the tests turn it on; a release build does not): without it `hit!`
//! expands to nothing and `is_set!` to `false`, so neither the names nor
//! the environment lookup are in the shipped binary.

/// `hit!("name")`: when the environment variable `CAIRN_FAILPOINT` equals
/// `name`, the process aborts on the spot, as a power cut or `kill -9`
/// would stop it.
// Without `cache` (the fuzz build) no code that crashes at a step is built.
#[allow(unused_macros)]
macro_rules! hit {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        $crate::failpoint::abort_if_set($name);
    }};
}

/// `is_set!("name")`: whether `CAIRN_FAILPOINT` is set to `name`, for
/// injected errors such as `enospc`, where the process must go on and fail
/// cleanly. Always `false` without the feature.
macro_rules! is_set {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        let set = $crate::failpoint::env_is($name);
        #[cfg(not(feature = "failpoints"))]
        let set = false;
        set
    }};
}

/// `pause!("name")`: when `CAIRN_FAILPOINT` equals `name`, the process
/// stops at this step until the test lets it go: it creates
/// `$CAIRN_FAILPOINT_DIR/name.reached`, then waits for
/// `$CAIRN_FAILPOINT_DIR/name.go` (at most 60 s, then carries on). Tests use
/// it to act between two steps: swap a directory for a symlink, look at
/// modes mid-restore, age a lock.
#[allow(unused_macros)]
macro_rules! pause {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        $crate::failpoint::pause_if_set($name);
    }};
}

#[allow(unused_imports)]
pub(crate) use {hit, is_set, pause};

#[cfg(feature = "failpoints")]
#[allow(dead_code)] // until a step pauses
pub(crate) fn pause_if_set(name: &str) {
    if !env_is(name) {
        return;
    }
    let Some(dir) = std::env::var_os("CAIRN_FAILPOINT_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::write(dir.join(format!("{name}.reached")), b"");
    let go = dir.join(format!("{name}.go"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !go.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(feature = "failpoints")]
pub(crate) fn abort_if_set(name: &str) {
    if env_is(name) {
        std::process::abort();
    }
}

#[cfg(feature = "failpoints")]
pub(crate) fn env_is(name: &str) -> bool {
    std::env::var_os("CAIRN_FAILPOINT").is_some_and(|v| v == name)
}

/// The time audit entries record, seconds since the epoch: the clock, or
/// with the `failpoints` feature `CAIRN_TEST_AUDIT_TIME` when set, so tests
/// can write a schedule of nights (the report's schedule check) without
/// waiting for them. A release build always reads the clock.
pub(crate) fn audit_time() -> i64 {
    #[cfg(feature = "failpoints")]
    if let Some(t) = std::env::var("CAIRN_TEST_AUDIT_TIME")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        return t;
    }
    chrono::Utc::now().timestamp()
}
