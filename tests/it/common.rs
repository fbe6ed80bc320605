//! Shared helpers: a throw-away repository driven through the real binary,
//! deterministic data generators, and a tree comparison that checks every
//! piece of metadata cairn promises to restore.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");
pub const PASSWORD: &str = "correct horse battery staple";
pub const FAST_KDF: [&str; 4] = ["--kdf-memory-kib", "64", "--kdf-iterations", "1"];

/// The binary under test; CAIRN_IT_BIN overrides the build's (to run the
/// suite as another user, who may not reach the build directory).
pub fn cairn_bin() -> PathBuf {
    std::env::var_os("CAIRN_IT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn note(msg: &str) {
    eprintln!("NOTE: {msg}");
}

/// Runs a shell tool and asserts it succeeded.
pub fn run_tool<S: AsRef<OsStr>>(program: &str, args: &[S]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {:?} failed: {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A repository in its own temporary directory, with its own cache and
/// password file. Every command runs the real `cairn` binary.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
    pub password_file: PathBuf,
    /// Run cairn as this (uid, gid) through setpriv (root only).
    pub run_as: Option<(u32, u32)>,
    /// The binary to run (a copy the unprivileged user can reach, with run_as).
    pub bin: PathBuf,
}

impl TestRepo {
    /// A repository initialised with the fast test KDF.
    pub fn new() -> TestRepo {
        let t = TestRepo::uninitialised();
        t.init(&FAST_KDF);
        t
    }

    /// Paths set up, `cairn init` not yet run.
    pub fn uninitialised() -> TestRepo {
        let dir = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir()
            .expect("tempdir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        TestRepo {
            dir,
            repo,
            cache,
            password_file,
            run_as: None,
            bin: cairn_bin(),
        }
    }

    /// From now on run cairn as (uid, gid) (needs root and setpriv). The temp
    /// dir is handed to that user and the binary copied into it (the build
    /// directory may sit in root's private home).
    pub fn switch_user(&mut self, uid: u32, gid: u32) {
        assert!(is_root(), "switch_user needs root");
        let bin = self.dir.path().join("cairn-bin");
        std::fs::copy(cairn_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(self.dir.path(), Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(&self.password_file, Some(uid), Some(gid)).unwrap();
        self.bin = bin;
        self.run_as = Some((uid, gid));
    }

    pub fn init(&self, extra: &[&str]) {
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        self.ok(&args);
        assert!(
            self.repo.join("config").is_file(),
            "init did not create a config"
        );
    }

    /// A fresh directory inside the test's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The command with this repository's environment and nothing inherited
    /// that could change cairn's behaviour.
    pub fn command(&self) -> Command {
        let mut c = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        self.environment(&mut c);
        c
    }

    /// Another program (e.g. `script`) with this repository's environment,
    /// for tests that run cairn through it.
    pub fn command_for(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        self.environment(&mut c);
        c
    }

    fn environment(&self, c: &mut Command) {
        c.env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_PASSWORD_COMMAND")
            .env_remove("CAIRN_FROM_REPOSITORY")
            .env_remove("CAIRN_FROM_PASSWORD")
            .env_remove("CAIRN_FROM_PASSWORD_FILE")
            .env_remove("CAIRN_FROM_PASSWORD_COMMAND")
            .env_remove("CAIRN_FAILPOINT")
            .env_remove("CAIRN_FAILPOINT_DIR")
            .env_remove("CAIRN_CONFIG")
            .env_remove("CAIRN_PROFILE")
            .env_remove("CAIRN_METRICS_FILE")
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("CAIRN_REPOSITORY", &self.repo)
            .env("CAIRN_PASSWORD_FILE", &self.password_file)
            .env("CAIRN_CACHE_DIR", &self.cache)
            .env("XDG_CACHE_HOME", self.dir.path().join("xdg-cache"))
            // Nothing a test runs may fall back on the real home (its
            // ~/.cache/cairn outlives the test).
            .env("HOME", self.dir.path().join("home"))
            // Never leave debris (core files of crash tests) in the crate.
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
    }

    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("cannot run cairn")
    }

    /// Runs cairn, asserts exit 0, returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.cmd(args);
        assert_success(&out, args);
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// Runs cairn, asserts exit 0, returns stdout bytes.
    pub fn ok_bytes<S: AsRef<OsStr>>(&self, args: &[S]) -> Vec<u8> {
        let out = self.cmd(args);
        assert_success(&out, args);
        out.stdout
    }

    /// `cairn --json backup ARGS...`: the summary object.
    pub fn backup_json<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut all: Vec<OsString> = vec!["--json".into(), "backup".into()];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let out = self.ok(&all);
        parse_summary(&out)
    }

    /// `cairn --json backup --stdin --stdin-filename NAME` fed from `data`.
    pub fn backup_stdin_json(
        &self,
        name: &str,
        extra: &[&str],
        data: &mut dyn Read,
    ) -> serde_json::Value {
        let mut c = self.command();
        c.args(["--json", "backup", "--stdin", "--stdin-filename", name])
            .args(extra);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn cairn");
        let mut stdin = child.stdin.take().unwrap();
        std::io::copy(data, &mut stdin).expect("feed stdin");
        drop(stdin);
        let out = finish_with_timeout(child, "backup --stdin", COMMAND_TIMEOUT_SECS);
        assert_success(&out, &["backup --stdin"]);
        parse_summary(&String::from_utf8(out.stdout).unwrap())
    }

    /// `cairn snapshots --json`, oldest first.
    pub fn snapshots_json(&self, filter: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["--json", "snapshots"];
        args.extend_from_slice(filter);
        let out = self.ok(&args);
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("snapshots --json: {e}: {out}"));
        v.as_array().expect("snapshots --json is an array").clone()
    }

    pub fn snapshot_ids(&self) -> Vec<String> {
        self.snapshots_json(&[])
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Restores SELECTOR into a new directory and returns it.
    pub fn restore(&self, selector: &str, target_name: &str) -> PathBuf {
        let target = self.dir.path().join(target_name);
        self.ok(&["restore", selector, "--target", path_str(&target)]);
        target
    }

    /// Total bytes of the files under repo/packs.
    pub fn pack_bytes(&self) -> u64 {
        let mut total = 0;
        for (_, p) in walk_files(&self.repo.join("packs")) {
            total += std::fs::symlink_metadata(&p).unwrap().len();
        }
        total
    }
}

impl Drop for TestRepo {
    fn drop(&mut self) {
        // Read-only directories (restored 0555 dirs) would stop TempDir
        // from cleaning up when not root.
        make_writable(self.dir.path());
    }
}

pub fn make_writable(root: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return;
    };
    if meta.is_dir() {
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode | 0o700));
        }
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

pub const COMMAND_TIMEOUT_SECS: u64 = 300;

/// `Command::output` with the suite's timeout.
pub trait RunExt {
    fn run(&mut self) -> Output;
}

impl RunExt for Command {
    fn run(&mut self) -> Output {
        output_with_timeout(self, COMMAND_TIMEOUT_SECS)
    }
}

/// Like `Command::output`, but kills the child and panics after `secs`.
pub fn output_with_timeout(c: &mut Command, secs: u64) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let description = format!("{c:?}");
    let child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {description}: {e}"));
    finish_with_timeout(child, &description, secs)
}

/// Collects a spawned child's remaining stdout/stderr and status; kills it
/// and panics after `secs`.
pub fn finish_with_timeout(mut child: std::process::Child, description: &str, secs: u64) -> Output {
    fn reader<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    }
    let out_reader = reader(child.stdout.take());
    let err_reader = reader(child.stderr.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_reader.join().unwrap_or_default();
            panic!(
                "{description} did not finish within {secs}s (killed)\n--- stderr ---\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

pub fn assert_success<S: AsRef<OsStr>>(out: &Output, args: &[S]) {
    if !out.status.success() {
        panic!(
            "cairn {:?} failed with {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

pub fn parse_summary(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON object in backup output: {stdout:?}"));
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("backup --json: {e}: {line}"));
    assert!(v.is_object(), "backup --json printed {v}");
    v
}

pub fn num(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field} missing or not a number in {v}"))
}

// ---------------------------------------------------------------- data ----

/// xorshift64*: deterministic, fast, good enough for test data.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// A stream of SQL INSERT lines with pseudo-random values: compressible but
/// not trivially, and without long repeats (so no accidental dedup).
/// Yields exactly `len` bytes.
pub struct SqlStream {
    rng: Rng,
    remaining: u64,
    line: Vec<u8>,
    at: usize,
    row: u64,
}

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

impl SqlStream {
    pub fn new(seed: u64, len: u64) -> SqlStream {
        SqlStream {
            rng: Rng::new(seed),
            remaining: len,
            line: Vec::with_capacity(256),
            at: 0,
            row: 0,
        }
    }

    fn next_line(&mut self) {
        self.line.clear();
        self.at = 0;
        self.row += 1;
        let r = self.rng.next();
        let w1 = WORDS[(r & 15) as usize];
        let w2 = WORDS[((r >> 4) & 15) as usize];
        let amount = (r >> 8) % 10_000_000;
        let qty = self.rng.below(100_000);
        let _ = writeln!(
            self.line,
            "INSERT INTO orders (id, customer, item, amount, qty) VALUES ({}, '{w1}-{}', '{w2}', {}.{:02}, {qty});",
            self.row,
            (r >> 40) % 100_000,
            amount / 100,
            amount % 100
        );
    }
}

impl Read for SqlStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.remaining > 0 {
            if self.at == self.line.len() {
                self.next_line();
            }
            let take = (self.line.len() - self.at)
                .min(buf.len() - n)
                .min(self.remaining as usize);
            buf[n..n + take].copy_from_slice(&self.line[self.at..self.at + take]);
            self.at += take;
            n += take;
            self.remaining -= take as u64;
        }
        Ok(n)
    }
}

pub fn sql_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    SqlStream::new(seed, len as u64)
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// BLAKE3 of everything `r` yields, and its length.
pub fn hash_reader(r: &mut dyn Read) -> (blake3::Hash, u64) {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    (h.finalize(), total)
}

/// Sets mtime (and atime) of `path` itself, not following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(path, t, t)
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Sets the same mtime on every entry below `root` and on `root`,
/// children before their directory.
pub fn set_mtimes_recursive(root: &Path, secs: i64, nanos: u32) {
    let meta = std::fs::symlink_metadata(root).unwrap();
    if meta.is_dir() {
        for e in std::fs::read_dir(root).unwrap() {
            set_mtimes_recursive(&e.unwrap().path(), secs, nanos);
        }
    }
    set_mtime(root, secs, nanos);
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ----------------------------------------------------------- comparing ----

/// All entries below `root` (not root itself), relative path → absolute,
/// sorted by relative path bytes.
pub fn walk(root: &Path) -> BTreeMap<Vec<u8>, PathBuf> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, PathBuf>) {
        for e in
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        {
            let p = e.unwrap().path();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let is_dir = std::fs::symlink_metadata(&p).unwrap().is_dir();
            out.insert(rel, p.clone());
            if is_dir {
                go(root, &p, out);
            }
        }
    }
    go(root, root, &mut out);
    out
}

pub fn walk_files(root: &Path) -> Vec<(Vec<u8>, PathBuf)> {
    walk(root)
        .into_iter()
        .filter(|(_, p)| std::fs::symlink_metadata(p).unwrap().is_file())
        .collect()
}

pub fn file_hash(path: &Path) -> blake3::Hash {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    hash_reader(&mut f).0
}

/// Relative path → content hash of every regular file below `root`.
/// A repository's files but its audit log, which every command appends to
/// (docs/FORMAT.md 18): what "the command changed nothing" compares.
pub fn repo_content_map(root: &Path) -> BTreeMap<String, blake3::Hash> {
    let mut map = content_map(root);
    map.retain(|name, _| !name.starts_with("audit/"));
    map
}

pub fn content_map(root: &Path) -> BTreeMap<String, blake3::Hash> {
    walk_files(root)
        .into_iter()
        .map(|(rel, p)| (String::from_utf8_lossy(&rel).into_owned(), file_hash(&p)))
        .collect()
}

fn kind_name(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else if t.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

/// `getfattr -d -m - -e hex` of the path itself, without the "# file" line;
/// None when getfattr is not installed.
pub fn xattr_dump(path: &Path) -> Option<Vec<String>> {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*HAVE.get_or_init(|| have_tool("getfattr")) {
        return None;
    }
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "--absolute-names", "-e", "hex"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("# file:"))
        // security.selinux labels are assigned by the system, not by us.
        .filter(|l| !l.starts_with("security.selinux"))
        .map(String::from)
        .collect();
    lines.sort();
    Some(lines)
}

/// Compares two trees entry by entry: type, mode bits, size, content, mtime
/// (ns), symlink target, owner, xattrs, hard-link structure and rdev. The
/// roots themselves are compared for mode, owner and mtime too. Panics with
/// every difference found.
pub fn assert_trees_equal(src: &Path, dst: &Path) {
    let mut problems = Vec::new();
    let check_xattrs = have_tool("getfattr");
    if !check_xattrs {
        note("getfattr is missing: xattrs are not compared");
    }
    let a = walk(src);
    let b = walk(dst);
    let names_a: Vec<_> = a
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let names_b: Vec<_> = b
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    if names_a != names_b {
        problems.push(format!(
            "entry lists differ:\n source:   {names_a:?}\n restored: {names_b:?}"
        ));
    }
    let mut pairs: Vec<(String, PathBuf, PathBuf)> =
        vec![(".".into(), src.to_path_buf(), dst.to_path_buf())];
    for (rel, pa) in &a {
        if let Some(pb) = b.get(rel) {
            pairs.push((
                String::from_utf8_lossy(rel).into_owned(),
                pa.clone(),
                pb.clone(),
            ));
        }
    }
    // source inode → restored inode, for hard links
    let mut links: HashMap<(u64, u64), (u64, u64, String)> = HashMap::new();
    let mut restored_inodes: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    for (rel, pa, pb) in &pairs {
        let ma = std::fs::symlink_metadata(pa).unwrap();
        let mb = std::fs::symlink_metadata(pb).unwrap();
        let (ka, kb) = (kind_name(&ma), kind_name(&mb));
        if ka != kb {
            problems.push(format!("{rel}: type {ka} became {kb}"));
            continue;
        }
        if ka != "symlink" && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            problems.push(format!(
                "{rel}: mode {:o} became {:o}",
                ma.mode() & 0o7777,
                mb.mode() & 0o7777
            ));
        }
        if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
            problems.push(format!(
                "{rel}: owner {}:{} became {}:{}",
                ma.uid(),
                ma.gid(),
                mb.uid(),
                mb.gid()
            ));
        }
        if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            problems.push(format!(
                "{rel}: mtime {}.{:09} became {}.{:09}",
                ma.mtime(),
                ma.mtime_nsec(),
                mb.mtime(),
                mb.mtime_nsec()
            ));
        }
        match ka {
            "file" => {
                if ma.len() != mb.len() {
                    problems.push(format!("{rel}: size {} became {}", ma.len(), mb.len()));
                } else if file_hash(pa) != file_hash(pb) {
                    problems.push(format!("{rel}: content differs"));
                }
                if ma.nlink() > 1 {
                    let key = (ma.dev(), ma.ino());
                    let restored = (mb.dev(), mb.ino());
                    match links.get(&key) {
                        Some((dev, ino, first)) if (*dev, *ino) != restored => problems.push(
                            format!("{rel}: hard link to {first} was not restored as a hard link"),
                        ),
                        Some(_) => {}
                        None => {
                            links.insert(key, (restored.0, restored.1, rel.clone()));
                        }
                    }
                }
                // Different source files must not share an inode in the restore.
                if let Some(prev) =
                    restored_inodes.insert((mb.dev(), mb.ino()), (ma.dev(), ma.ino()))
                {
                    if prev != (ma.dev(), ma.ino()) {
                        problems.push(format!(
                            "{rel}: restored as a hard link to an unrelated file"
                        ));
                    }
                }
            }
            "symlink" => {
                let ta = std::fs::read_link(pa).unwrap();
                let tb = std::fs::read_link(pb).unwrap();
                if ta != tb {
                    problems.push(format!("{rel}: symlink target {ta:?} became {tb:?}"));
                }
            }
            "chardev" | "blockdev" if ma.rdev() != mb.rdev() => {
                problems.push(format!(
                    "{rel}: rdev {:#x} became {:#x}",
                    ma.rdev(),
                    mb.rdev()
                ));
            }
            _ => {}
        }
        if check_xattrs {
            let (xa, xb) = (xattr_dump(pa), xattr_dump(pb));
            if xa != xb {
                problems.push(format!("{rel}: xattrs {xa:?} became {xb:?}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "restored tree {} differs from source {}:\n  {}",
        dst.display(),
        src.display(),
        problems.join("\n  ")
    );
}

/// Every byte of every file below `root`, with its path (for scans).
pub fn all_files_bytes(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk_files(root)
        .into_iter()
        .map(|(_, p)| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits for a child up to `secs`; kills it and panics on timeout.
pub fn wait_timeout(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within {secs}s", child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Spawns `command` with the failpoint `point` paused (`CAIRN_FAILPOINT`,
/// `CAIRN_FAILPOINT_DIR=dir`) and waits until the process has reached it.
/// Panics, with the process's stderr when it was piped, if it ends first or
/// does not get there within 60 s. Write `dir/<point>.go` to let it go on.
pub fn spawn_paused(command: &mut Command, dir: &Path, point: &str) -> std::process::Child {
    let mut child = command
        .env("CAIRN_FAILPOINT", point)
        .env("CAIRN_FAILPOINT_DIR", dir)
        .spawn()
        .expect("spawn cairn");
    let reached = dir.join(format!("{point}.reached"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !reached.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the process ended ({status}) before {point}: {err}");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{point} not reached within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

/// Sends `signal` to a child this test started.
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill has no memory effects; the pid is our own child's.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "kill({}, {signal})", child.id());
}

/// A backup stopped at the failpoint `before-index`: its packs are stored,
/// none is indexed, it holds its lock, and it has deduplicated against the
/// index it loaded. Dropping it kills the process, so a test that fails
/// half-way leaves no stopped process behind.
pub struct PausedBackup {
    pub child: Option<std::process::Child>,
    dir: PathBuf,
}

impl PausedBackup {
    pub const POINT: &'static str = "before-index";

    /// Starts `cairn [ARGS…] backup SRC` with `env` and waits until it is
    /// paused.
    pub fn start(t: &TestRepo, args: &[&str], src: &Path, env: &[(&str, &str)]) -> PausedBackup {
        let dir = t.path("failpoint");
        let child = spawn_paused(
            t.command()
                .envs(env.iter().copied())
                .args(args)
                .args(["backup", path_str(src)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            &dir,
            Self::POINT,
        );
        PausedBackup {
            child: Some(child),
            dir,
        }
    }

    /// Lets the backup go on (and, when it was stopped, continue) and waits
    /// for it to end.
    pub fn release(mut self, stopped: bool) -> Output {
        std::fs::write(self.dir.join(format!("{}.go", Self::POINT)), b"").unwrap();
        let child = self.child.take().unwrap();
        if stopped {
            signal(&child, libc::SIGCONT);
        }
        finish_with_timeout(child, "the paused backup", 60)
    }
}

impl Drop for PausedBackup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
