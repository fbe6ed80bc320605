//! The library's one error type: a kind callers can match on, plus a message
//! for people. The CLI maps kinds to exit codes (see `ErrorKind::exit_code`).

use std::fmt;

/// What went wrong, coarsely enough for a caller to react.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No repository at the given location (exit 10).
    RepositoryNotFound,
    /// A repository already exists where `init` was asked to create one.
    RepositoryExists,
    /// Another process holds a conflicting lock, a lock file that cannot be
    /// read keeps out an exclusive lock, or this process lost its lock
    /// (exit 11).
    Locked,
    /// No key file opens with the given password (exit 12).
    WrongPassword,
    /// The user interrupted the operation (exit 130).
    Interrupted,
    /// Stored bytes failed authentication, a hash or a format check.
    Corrupt,
    /// A repository object the operation needs does not exist.
    NotFound,
    /// A local file or directory does not exist: a backup source, a
    /// password or configuration file (not a repository object).
    FileNotFound,
    /// The repository was written by a newer format version.
    UnsupportedVersion,
    /// The user's request does not make sense (bad selector, bad option).
    InvalidInput,
    /// An operating-system or storage error.
    Io,
    /// An external command (password command, dump command) failed.
    Command,
    /// A policy forbids the operation: a snapshot under a retention lock,
    /// a lock shortened. Logged as refused in the audit log (exit 1).
    Refused,
}

impl ErrorKind {
    /// The documented process exit code for this kind of failure.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::RepositoryNotFound => 10,
            ErrorKind::Locked => 11,
            ErrorKind::WrongPassword => 12,
            ErrorKind::Interrupted => 130,
            _ => 1,
        }
    }
}

/// An error from the cairn library.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<std::io::Error>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// An OS error on a local file; `FileNotFound` when it does not exist.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::os(ErrorKind::FileNotFound, context.into(), source)
    }

    /// An OS error of a backend on a repository object; `NotFound` when
    /// the object does not exist.
    pub fn storage_io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::os(ErrorKind::NotFound, context.into(), source)
    }

    fn os(missing: ErrorKind, message: String, source: std::io::Error) -> Self {
        let kind = if source.kind() == std::io::ErrorKind::NotFound {
            missing
        } else {
            ErrorKind::Io
        };
        Error {
            kind,
            message,
            source: Some(source),
        }
    }

    /// Prefixes the message with where the error happened.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The underlying OS error, if any (e.g. to tell ENOSPC apart).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {}", self.message, source),
            None => f.write_str(&self.message),
        }
    }
}

/// `source()` is the OS error. `Display` also ends with it, so a message
/// read alone is whole; a printer of the whole chain (the CLI's) skips the
/// source of a `cairn::Error` rather than print it twice.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
