//! Tarballs decoded: `read_members` turns a tar archive (plain, gzip,
//! zstd, xz or bzip2, detected by magic bytes) into its members, each
//! with a node for the tree and a reader of its contents (sparse files
//! expanded). It reads from the `Read` it is given and opens nothing; it
//! stays inside `Limits`, so a small hostile input (a decompression bomb, a
//! sparse member claiming exabytes of holes) cannot take unbounded memory
//! or time. `engine::tar` stores what it decodes (`import_tar`); the fuzz
//! target `tar_import` drives it on arbitrary bytes.

use crate::error::{Error, Result};
use crate::format::tree::{
    check_node_fields, is_valid_name, Bytes, Node, NodeKind, Xattr, FILE_SIZE_MAX, TREE_DEPTH_MAX,
};
use std::io::{self, Read};

/// How a tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Compression {
    /// Recognises a compressed stream by its first bytes (at least 6 are
    /// needed to tell xz apart); anything else is taken as a plain tarball.
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if magic.starts_with(b"BZh") {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }
}

/// Wraps `input` in the decompressor its first bytes call for.
fn decompressed<'a>(input: &'a mut dyn Read) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = Vec::with_capacity(6);
    input.take(6).read_to_end(&mut magic)?;
    let compression = Compression::detect(&magic);
    let whole = io::Cursor::new(magic).chain(input);
    Ok(match compression {
        // Multi-member decoders: `cat a.gz b.gz` and pigz/pzstd output are
        // valid compressed streams.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(whole)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        Compression::None => Box::new(whole),
    })
}

/// A member's path as tree components: `./`, empty components and a
/// leading `/` are dropped. None if it climbs out (`..`) or has a name the
/// tree format refuses.
fn components(path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut parts = Vec::new();
    for part in path.split(|&b| b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        if !is_valid_name(part) {
            return None;
        }
        parts.push(part.to_vec());
    }
    Some(parts)
}

/// PAX `mtime` ("1767225600.123456789") as nanoseconds.
fn pax_time_ns(value: &str) -> Option<i64> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let frac: i64 = digits.parse().ok()?;
    let frac = if secs < 0 || value.starts_with('-') {
        -frac
    } else {
        frac
    };
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}

pub(crate) fn bad_archive(name: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "{name} is not a complete, valid tar archive ({e}); no snapshot was written"
    ))
}

/// Most bytes `read_members` reads while parsing the headers of one member
/// (its header blocks, GNU long name and link, PAX records, GNU sparse
/// extension headers), all of which the tar parser holds in memory; real
/// tarballs need a few KiB.
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// Most segments (data runs between holes) of one GNU PAX sparse member.
pub const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

/// Default for `Limits::max_content_bytes`: 16 TiB, the largest file ext4
/// holds and more than a volume that is streamed as one tarball (reading it
/// takes hours at disk speed). The limit exists so that a small compressed
/// input or a sparse member cannot make the import run forever.
pub const MAX_CONTENT_BYTES: u64 = 16 << 40;

/// Default for `Limits::max_stream_bytes`: twice the content limit, room
/// for the header and padding blocks of millions of small files.
pub const MAX_STREAM_BYTES: u64 = 2 * MAX_CONTENT_BYTES;

/// Default for `Limits::max_members`: the importer holds every member's
/// node in memory until the end (a few hundred bytes each, so about 3 GiB
/// at the limit); a volume with ten million files is far beyond the ones
/// streamed as tarballs.
pub const MAX_MEMBERS: u64 = 10_000_000;

/// Default for `Limits::max_depth`: with it, a member's tree (and a
/// directory member's own tree) is at most `TREE_DEPTH_MAX` levels deep,
/// which every reader walks; a path of 2047 components is longer than
/// any path Linux accepts.
pub const MAX_DEPTH: usize = TREE_DEPTH_MAX - 1;

/// What `read_members` may read and hand out, so that a small hostile input
/// (a decompression bomb, a sparse member claiming exabytes of holes, a
/// path nested ten thousand deep) cannot take unbounded memory or time.
/// Going past a limit is an error. Every default is finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of tar stream (after decompression). Default:
    /// `MAX_STREAM_BYTES`.
    pub max_stream_bytes: u64,
    /// Bytes of member contents handed to the callback, sparse holes
    /// included, all members together. A sparse member that claims more
    /// than is left is refused before it is read. Default:
    /// `MAX_CONTENT_BYTES`.
    pub max_content_bytes: u64,
    /// Bytes of headers per member. Default: `MAX_HEADER_BYTES`.
    pub max_header_bytes: u64,
    /// Members handed to the callback. Default: `MAX_MEMBERS`.
    pub max_members: u64,
    /// Path components of a member (or a hard link's target). Default:
    /// `MAX_DEPTH`.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_stream_bytes: MAX_STREAM_BYTES,
            max_content_bytes: MAX_CONTENT_BYTES,
            max_header_bytes: MAX_HEADER_BYTES,
            max_members: MAX_MEMBERS,
            max_depth: MAX_DEPTH,
        }
    }
}

/// One member of a tarball as `read_members` hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A file, directory, symlink, device or FIFO at `parts` (normalised
    /// path components; never empty). `node` has the member's metadata and
    /// `node.name` is the last component; `content` and `size` are left
    /// for the caller, who reads a file's contents from the reader given
    /// with it (sparse files expanded).
    Node { parts: Vec<Vec<u8>>, node: Node },
    /// A hard link: `parts` names the same file as `target`, which should
    /// be a file earlier in the archive. `path` is the name as shown.
    HardLink {
        path: String,
        parts: Vec<Vec<u8>>,
        target: Vec<Vec<u8>>,
    },
    /// A member that cannot be represented (unsupported type, a name that
    /// climbs out, a hard link to nothing): `path` as shown, and why.
    Skipped { path: String, reason: String },
}

/// What `read_members` read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Members handed to the callback.
    pub members: u64,
    /// Bytes of member contents the callback read (or that were skipped for
    /// it), sparse holes included.
    pub content_bytes: u64,
}

pub(crate) const HARD_LINK_TO_NOTHING: &str =
    "hard link to a file that is not earlier in the archive";

/// The budgets `Guard` enforces, shared between the reader (owned by the
/// tar parser) and `read_members`.
#[derive(Clone, Copy)]
struct Budget {
    /// The reader below reached its end.
    ended: bool,
    /// Stream bytes still allowed.
    stream_left: u64,
    /// While the parser reads a member's headers: header bytes still allowed.
    header_left: Option<u64>,
    header_limit: u64,
}

/// The decompressed stream under the tar parser: remembers whether it
/// reached its end (the tar parser takes end of input at a header boundary
/// as the end of the archive; an archive that really ended has its
/// end-of-archive zero block first, so seeing end of input there means the
/// tarball was cut short) and enforces the stream and header limits.
struct Guard<R> {
    inner: R,
    budget: std::rc::Rc<std::cell::Cell<Budget>>,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut budget = self.budget.get();
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte past a limit tells a stream that ends at the limit from
        // one that goes on.
        let mut allowed = budget.stream_left.saturating_add(1);
        if let Some(left) = budget.header_left {
            allowed = allowed.min(left.saturating_add(1));
        }
        let want = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            budget.ended = true;
        }
        let n64 = n as u64;
        if n64 > budget.stream_left {
            return Err(io::Error::other(
                "the tar stream is longer than the limit for it",
            ));
        }
        budget.stream_left -= n64;
        if let Some(left) = budget.header_left {
            if n64 > left {
                return Err(io::Error::other(format!(
                    "a member's headers (long names, PAX records, sparse maps) \
                     take more than {} bytes",
                    budget.header_limit
                )));
            }
            budget.header_left = Some(left - n64);
        }
        self.budget.set(budget);
        Ok(n)
    }
}

/// A member's contents, counted against the limit for all contents.
struct Counted<'a> {
    inner: &'a mut dyn Read,
    used: &'a mut u64,
    limit: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.limit - *self.used;
        let want = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > left {
            return Err(io::Error::other(format!(
                "member contents take more than {} bytes",
                self.limit
            )));
        }
        *self.used += n as u64;
        Ok(n)
    }
}

/// Decodes a tarball (plain or compressed, detected by its first bytes)
/// without storing anything: calls `on_member` with each member in archive
/// order, and with a reader of a file's contents (sparse files expanded;
/// empty for other members). Contents the callback leaves unread are
/// skipped. Global PAX headers, GNU volume labels and the `./` entry give
/// no call. Reads to the end of the stream, so that the decompressor checks
/// its trailer. `name` names the tarball in errors.
///
/// A truncated or corrupt tarball, or one past `limits`, is an error of
/// kind `Invalid`; errors from `on_member` are passed on as they are.
pub fn read_members(
    input: &mut dyn Read,
    name: &str,
    limits: &Limits,
    on_member: &mut dyn FnMut(Member, &mut dyn Read) -> Result<()>,
) -> Result<Decoded> {
    let budget = std::rc::Rc::new(std::cell::Cell::new(Budget {
        ended: false,
        stream_left: limits.max_stream_bytes,
        header_left: None,
        header_limit: limits.max_header_bytes,
    }));
    let set_header_budget = |left: Option<u64>| {
        budget.set(Budget {
            header_left: left,
            ..budget.get()
        })
    };
    let mut reader = Guard {
        inner: decompressed(input).map_err(|e| bad_archive(name, e))?,
        budget: budget.clone(),
    };
    let mut decoded = Decoded::default();
    {
        let mut archive = ::tar::Archive::new(&mut reader);
        let mut entries = archive.entries().map_err(|e| bad_archive(name, e))?;
        loop {
            set_header_budget(Some(limits.max_header_bytes));
            let next = entries.next();
            set_header_budget(None);
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| bad_archive(name, e))?;
            read_member(&mut entry, name, limits, &mut decoded, on_member)?;
            // The rest of the data goes now, not while the parser reads the
            // next member's headers under their limit.
            let rest = if entry.header().entry_type().is_gnu_sparse() {
                // Expanded by the tar crate: holes count as contents.
                let mut counted = Counted {
                    inner: &mut entry,
                    used: &mut decoded.content_bytes,
                    limit: limits.max_content_bytes,
                };
                io::copy(&mut counted, &mut io::sink())
            } else {
                io::copy(&mut entry, &mut io::sink())
            };
            rest.map_err(|e| bad_archive(name, e))?;
        }
    }
    if budget.get().ended {
        return Err(bad_archive(name, "it ends without an end-of-archive block"));
    }
    // Read to the end so that the decompressor checks its trailer (CRC,
    // length): corruption after the last member is still corruption.
    io::copy(&mut reader, &mut io::sink()).map_err(|e| bad_archive(name, e))?;
    Ok(decoded)
}

/// GNU tar's PAX sparse formats (`--format=posix --sparse`): the member's
/// data holds only the non-hole segments. The map of segments is in PAX
/// records (versions 0.0 and 0.1) or at the start of the data (1.0); the
/// real name and size are in PAX records.
#[derive(Default)]
struct PaxSparse {
    seen: bool,
    name: Option<Vec<u8>>,
    real_size: Option<u64>,
    major: Option<u64>,
    /// offset, length, offset, length, … (0.0 and 0.1)
    map: Vec<u64>,
    /// The records held more than `MAX_SPARSE_SEGMENTS` segments.
    too_long: bool,
}

impl PaxSparse {
    fn record(&mut self, key: &[u8], text: Option<&str>) {
        self.seen = true;
        let number = text.and_then(|t| t.trim().parse::<u64>().ok());
        match key {
            b"GNU.sparse.name" => self.name = text.map(|t| t.as_bytes().to_vec()),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => self.real_size = number,
            b"GNU.sparse.major" => self.major = number,
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => self.push(number),
            b"GNU.sparse.map" => {
                for n in text.unwrap_or_default().split(',') {
                    self.push(n.trim().parse::<u64>().ok());
                }
            }
            _ => {}
        }
    }

    fn push(&mut self, number: Option<u64>) {
        if let Some(n) = number {
            if self.map.len() < 2 * MAX_SPARSE_SEGMENTS {
                self.map.push(n);
            } else {
                self.too_long = true;
            }
        }
    }
}

/// One decimal number on its own line, as in a version 1.0 sparse map.
fn map_number(data: &mut dyn Read, consumed: &mut u64) -> io::Result<u64> {
    let mut digits = Vec::new();
    loop {
        let mut byte = [0u8];
        data.read_exact(&mut byte)?;
        *consumed += 1;
        match byte[0] {
            b'\n' => break,
            b @ b'0'..=b'9' if digits.len() < 20 => digits.push(b),
            _ => return Err(io::Error::other("bad sparse map")),
        }
    }
    std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| io::Error::other("bad sparse map"))
}

/// The file a sparse member stands for: holes as zeros, segments from the
/// member's data.
struct Expand<'a> {
    data: &'a mut dyn Read,
    segments: Vec<(u64, u64)>,
    next: usize,
    pos: u64,
    size: u64,
}

impl Read for Expand<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.size || buf.is_empty() {
                return Ok(0);
            }
            let (hole_end, segment_end) = match self.segments.get(self.next) {
                Some(&(offset, length)) => (offset, offset + length),
                None => (self.size, self.size),
            };
            if self.pos < hole_end {
                let n = buf.len().min((hole_end - self.pos) as usize);
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            if self.pos < segment_end {
                let n = buf.len().min((segment_end - self.pos) as usize);
                let got = self.data.read(&mut buf[..n])?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.pos += got as u64;
                return Ok(got);
            }
            self.next += 1;
        }
    }
}

/// Reads the map (for version 1.0, from the data) and checks that the
/// segments are in order, do not overlap and fit the real size.
fn expand<'a>(sparse: &PaxSparse, data: &'a mut dyn Read) -> io::Result<Expand<'a>> {
    let size = sparse
        .real_size
        .ok_or_else(|| io::Error::other("sparse member without its real size"))?;
    let too_long = || {
        io::Error::other(format!(
            "sparse map has more than {MAX_SPARSE_SEGMENTS} segments"
        ))
    };
    if sparse.too_long {
        return Err(too_long());
    }
    let mut map = sparse.map.clone();
    if sparse.major == Some(1) {
        let mut consumed = 0u64;
        let count = map_number(data, &mut consumed)?;
        if count > MAX_SPARSE_SEGMENTS as u64 {
            return Err(too_long());
        }
        for _ in 0..2 * count {
            map.push(map_number(data, &mut consumed)?);
        }
        // The map is padded to a whole 512-byte block.
        let pad = (512 - consumed % 512) % 512;
        io::copy(&mut data.take(pad), &mut io::sink())?;
    }
    if !map.len().is_multiple_of(2) {
        return Err(io::Error::other("sparse map has an odd number of values"));
    }
    let mut segments = Vec::with_capacity(map.len() / 2);
    let mut end = 0u64;
    for pair in map.chunks(2) {
        let (offset, length) = (pair[0], pair[1]);
        let segment_end = offset
            .checked_add(length)
            .filter(|&e| offset >= end && e <= size)
            .ok_or_else(|| io::Error::other("sparse map segments overlap or exceed the size"))?;
        segments.push((offset, length));
        end = segment_end;
    }
    Ok(Expand {
        data,
        segments,
        next: 0,
        pos: 0,
        size,
    })
}

fn read_member<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
    archive_name: &str,
    limits: &Limits,
    decoded: &mut Decoded,
    on_member: &mut dyn FnMut(Member, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let bad = |e: io::Error| bad_archive(archive_name, e);
    let mut path = entry.path_bytes().into_owned();
    let entry_type = entry.header().entry_type();
    let kind = match entry_type {
        ::tar::EntryType::Regular | ::tar::EntryType::Continuous | ::tar::EntryType::GNUSparse => {
            NodeKind::File
        }
        ::tar::EntryType::Directory => NodeKind::Dir,
        ::tar::EntryType::Symlink => NodeKind::Symlink,
        ::tar::EntryType::Link => NodeKind::File,
        ::tar::EntryType::Char => NodeKind::Chardev,
        ::tar::EntryType::Block => NodeKind::Blockdev,
        ::tar::EntryType::Fifo => NodeKind::Fifo,
        // Global PAX headers and GNU volume labels describe the archive,
        // not a file.
        ::tar::EntryType::XGlobalHeader => return Ok(()),
        other if other.as_byte() == b'V' => return Ok(()),
        other => {
            let skipped = Member::Skipped {
                path: String::from_utf8_lossy(&path).into_owned(),
                reason: format!("unsupported tar member type {:?}", other.as_byte() as char),
            };
            count_member(decoded, limits, archive_name)?;
            return on_member(skipped, &mut io::empty());
        }
    };
    let header = entry.header();
    let mut node = Node::new(b"-", kind);
    node.mode = header.mode().map_err(bad)? & 0o7777;
    node.uid = u32::try_from(header.uid().map_err(bad)?).unwrap_or(u32::MAX);
    node.gid = u32::try_from(header.gid().map_err(bad)?).unwrap_or(u32::MAX);
    node.user = header
        .username_bytes()
        .filter(|u| !u.is_empty())
        .map(|u| String::from_utf8_lossy(u).into_owned());
    node.group = header
        .groupname_bytes()
        .filter(|g| !g.is_empty())
        .map(|g| String::from_utf8_lossy(g).into_owned());
    let mtime = i64::try_from(header.mtime().map_err(bad)?).unwrap_or(i64::MAX);
    node.mtime_ns = mtime.saturating_mul(1_000_000_000);
    if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
        let major = header.device_major().map_err(bad)?.unwrap_or(0);
        let minor = header.device_minor().map_err(bad)?.unwrap_or(0);
        node.rdev = makedev(major, minor);
    }
    let link_name = entry.link_name_bytes().map(|l| l.into_owned());
    let mut sparse = PaxSparse::default();
    if let Some(extensions) = entry.pax_extensions().map_err(bad)? {
        for extension in extensions {
            let extension = extension.map_err(bad)?;
            let key = extension.key_bytes();
            let value = extension.value_bytes();
            let text = std::str::from_utf8(value).ok();
            match key {
                b"mtime" => {
                    if let Some(ns) = text.and_then(pax_time_ns) {
                        node.mtime_ns = ns;
                    }
                }
                b"uname" => node.user = text.map(String::from),
                b"gname" => node.group = text.map(String::from),
                _ if key.starts_with(b"SCHILY.xattr.") => node.xattrs.push(Xattr {
                    name: Bytes(key[b"SCHILY.xattr.".len()..].to_vec()),
                    value: hex::encode(value),
                }),
                _ if key.starts_with(b"GNU.sparse.") => sparse.record(key, text),
                _ => {}
            }
        }
    }
    // A PAX key given twice: the later record wins, as for every other key.
    node.xattrs.reverse();
    node.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
    node.xattrs.dedup_by(|a, b| a.name == b.name);
    node.ctime_ns = node.mtime_ns;
    if sparse.seen {
        if let Some(name) = sparse.name.clone() {
            // The header holds a made-up name (GNUSparseFile.N/…).
            path = name;
        }
    }
    let shown = String::from_utf8_lossy(&path).into_owned();
    let Some(parts) = components(&path) else {
        count_member(decoded, limits, archive_name)?;
        let skipped = Member::Skipped {
            path: shown,
            reason: "the name climbs out of the archive or is not valid".into(),
        };
        return on_member(skipped, &mut io::empty());
    };
    let Some(last) = parts.last().cloned() else {
        // "./" itself: the snapshot's root has no node to keep its metadata.
        return Ok(());
    };
    node.name = Bytes(last);
    count_member(decoded, limits, archive_name)?;
    let refuse =
        |what: String| bad_archive(archive_name, format!("member {} {what}", brief(&shown)));
    if parts.len() > limits.max_depth {
        return Err(refuse(format!(
            "is nested {} deep, more than {}",
            parts.len(),
            limits.max_depth
        )));
    }
    match entry_type {
        ::tar::EntryType::Link => {
            let member = match link_name.as_deref().and_then(components) {
                Some(target) if target.len() > limits.max_depth => {
                    return Err(refuse(format!(
                        "links to a path nested more than {} deep",
                        limits.max_depth
                    )))
                }
                Some(target) if !target.is_empty() => Member::HardLink {
                    path: shown,
                    parts,
                    target,
                },
                _ => Member::Skipped {
                    path: shown,
                    reason: HARD_LINK_TO_NOTHING.into(),
                },
            };
            return on_member(member, &mut io::empty());
        }
        ::tar::EntryType::Symlink => {
            node.link_target = Some(Bytes(link_name.unwrap_or_default()));
        }
        _ => {}
    }
    // What the tree reader would refuse is refused here, so that an import
    // never stores a tree that `check` then reports as damaged.
    check_node_fields(&node).map_err(refuse)?;
    if kind != NodeKind::File {
        return on_member(Member::Node { parts, node }, &mut io::empty());
    }
    // A sparse member says up front how large it is; one claiming more
    // than the contents still allowed (or than any file can be) is refused
    // before a single hole is expanded.
    let claimed = if sparse.seen {
        sparse.real_size
    } else if entry_type.is_gnu_sparse() {
        Some(entry.size())
    } else {
        None
    };
    if let Some(claimed) = claimed {
        let left = limits.max_content_bytes - decoded.content_bytes;
        if claimed > left.min(FILE_SIZE_MAX) {
            return Err(refuse(format!(
                "is a sparse file claiming {claimed} bytes, more than the {} allowed",
                left.min(FILE_SIZE_MAX)
            )));
        }
    }
    let member = Member::Node { parts, node };
    if sparse.seen {
        let mut expanded = expand(&sparse, entry).map_err(bad)?;
        let mut counted = Counted {
            inner: &mut expanded,
            used: &mut decoded.content_bytes,
            limit: limits.max_content_bytes,
        };
        on_member(member, &mut counted)
    } else {
        let mut counted = Counted {
            inner: entry,
            used: &mut decoded.content_bytes,
            limit: limits.max_content_bytes,
        };
        on_member(member, &mut counted)
    }
}

/// Counts one more member against `Limits::max_members`.
fn count_member(decoded: &mut Decoded, limits: &Limits, archive_name: &str) -> Result<()> {
    if decoded.members >= limits.max_members {
        return Err(bad_archive(
            archive_name,
            format!("it has more than {} members", limits.max_members),
        ));
    }
    decoded.members += 1;
    Ok(())
}

/// A member's name for a one-line message: a hostile name can be
/// megabytes long.
fn brief(shown: &str) -> String {
    const SHOWN_MAX: usize = 120;
    if shown.len() <= SHOWN_MAX {
        return format!("{shown:?}");
    }
    let mut end = SHOWN_MAX;
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &shown[..end], shown.len())
}

/// A device number (`rdev`) from its major and minor numbers, encoded as
/// glibc's `makedev` does on Linux (the encoding trees record).
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0x0000_0fff) << 8)
        | ((major & 0xffff_f000) << 32)
        | (minor & 0x0000_00ff)
        | ((minor & 0xffff_ff00) << 12)
}

/// The major number of a device number, as glibc's `major`.
pub fn device_major(rdev: u64) -> u32 {
    (((rdev & 0x0000_0000_000f_ff00) >> 8) | ((rdev & 0xffff_f000_0000_0000) >> 32)) as u32
}

/// The minor number of a device number, as glibc's `minor`.
pub fn device_minor(rdev: u64) -> u32 {
    ((rdev & 0x0000_0000_0000_00ff) | ((rdev & 0x0000_0fff_fff0_0000) >> 12)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn device_numbers_are_encoded_as_glibc_does() {
        for (major, minor) in [
            (0, 0),
            (8, 1),
            (259, 3),
            (0xfff, 0xff),
            (0x1234_5678, 0x9abc_def0),
        ] {
            let rdev = makedev(major, minor);
            assert_eq!(rdev, libc::makedev(major, minor));
            assert_eq!(device_major(rdev), libc::major(rdev));
            assert_eq!(device_minor(rdev), libc::minor(rdev));
            assert_eq!((device_major(rdev), device_minor(rdev)), (major, minor));
        }
    }

    #[test]
    fn compression_is_detected_by_magic_bytes() {
        assert_eq!(
            Compression::detect(&[0x1f, 0x8b, 8, 0, 0, 0]),
            Compression::Gzip
        );
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"\xfd7zXZ\0"), Compression::Xz);
        assert_eq!(Compression::detect(b"BZh91A"), Compression::Bzip2);
        assert_eq!(Compression::detect(b"etc/"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }

    #[test]
    fn member_paths_are_normalised_and_escapes_refused() {
        assert_eq!(
            components(b"./a//b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(components(b"/etc/x").unwrap().len(), 2);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b"a/../../etc").is_none());
    }

    #[test]
    fn sparse_maps_expand_to_holes_and_segments() {
        // Version 1.0: "2\n0\n3\n8\n2\n" padded to 512, then the data.
        let mut data = b"2\n0\n3\n8\n2\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcXY");
        let sparse = PaxSparse {
            seen: true,
            real_size: Some(12),
            major: Some(1),
            ..PaxSparse::default()
        };
        let mut reader = &data[..];
        let mut out = Vec::new();
        expand(&sparse, &mut reader)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc\0\0\0\0\0XY\0\0");
        // Version 0.1 with a map that runs past the real size is refused.
        let bad = PaxSparse {
            seen: true,
            real_size: Some(4),
            map: vec![0, 8],
            ..PaxSparse::default()
        };
        assert!(expand(&bad, &mut &b"12345678"[..]).is_err());
    }

    #[test]
    fn pax_times_keep_nanoseconds() {
        assert_eq!(pax_time_ns("12.5"), Some(12_500_000_000));
        assert_eq!(
            pax_time_ns("1767225600.123456789"),
            Some(1_767_225_600_123_456_789)
        );
        assert_eq!(pax_time_ns("7"), Some(7_000_000_000));
        assert_eq!(pax_time_ns("x"), None);
    }

    /// Every member with its contents, as `read_members` hands them over.
    fn decode(bytes: &[u8], limits: &Limits) -> Result<Vec<(Member, Vec<u8>)>> {
        let mut out = Vec::new();
        read_members(&mut &bytes[..], "t.tar", limits, &mut |member, contents| {
            let mut data = Vec::new();
            contents
                .read_to_end(&mut data)
                .map_err(|e| Error::invalid(e.to_string()))?;
            out.push((member, data));
            Ok(())
        })?;
        Ok(out)
    }

    fn tarball(members: &[(&str, ::tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        for &(path, kind, data) in members {
            let mut h = ::tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn limits_stop_long_headers_contents_and_streams() {
        let long = format!("{}/x", "d".repeat(3000));
        let bytes = tarball(&[(long.as_str(), ::tar::EntryType::Regular, b"0123456789")]);
        assert_eq!(decode(&bytes, &Limits::default()).unwrap().len(), 1);
        let small = |f: fn(&mut Limits)| {
            let mut limits = Limits::default();
            f(&mut limits);
            decode(&bytes, &limits).unwrap_err().to_string()
        };
        assert!(small(|l| l.max_header_bytes = 2048).contains("more than 2048 bytes"));
        assert!(small(|l| l.max_content_bytes = 9).contains("more than 9 bytes"));
        assert!(small(|l| l.max_stream_bytes = 4096).contains("longer than the limit"));
        // Exactly at the limits is fine.
        let exact = Limits {
            max_content_bytes: 10,
            max_stream_bytes: bytes.len() as u64,
            ..Limits::default()
        };
        assert_eq!(decode(&bytes, &exact).unwrap()[0].1, b"0123456789");
    }

    #[test]
    fn sparse_maps_with_too_many_segments_are_refused_before_reading_them() {
        let mut data = format!("{}\n", MAX_SPARSE_SEGMENTS + 1).into_bytes();
        data.resize(512, 0);
        let sparse = PaxSparse {
            seen: true,
            real_size: Some(u64::MAX),
            major: Some(1),
            ..PaxSparse::default()
        };
        let err = expand(&sparse, &mut &data[..]).err().unwrap();
        assert!(err.to_string().contains("more than"), "{err}");
        let mut records = PaxSparse::default();
        let map = vec!["0"; 2 * MAX_SPARSE_SEGMENTS + 2].join(",");
        records.record(b"GNU.sparse.map", Some(&map));
        assert_eq!(records.map.len(), 2 * MAX_SPARSE_SEGMENTS);
        assert!(records.too_long);
    }

    /// One generated member: a path of 1 to 3 components (some long enough
    /// for GNU long names), and what it is.
    #[derive(Debug, Clone)]
    enum Spec {
        File(Vec<u8>),
        Dir,
        Symlink(String),
        /// A hard link to the n-th earlier file (modulo their number).
        HardLink(usize),
    }

    fn member_strategy() -> impl Strategy<Value = (Vec<String>, Spec, u32, u32, u32)> {
        let part = prop_oneof![
            8 => "[a-z0-9_][a-z0-9_.-]{0,11}",
            1 => "[a-z]{100,300}",
        ]
        .prop_filter("not . or ..", |p| p != "." && p != "..");
        let spec = prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Spec::File),
            1 => Just(Spec::Dir),
            1 => "(\\.\\./)?[a-z_]{1,60}(/[a-z_]{1,60}){0,3}".prop_map(Spec::Symlink),
            1 => any::<usize>().prop_map(Spec::HardLink),
        ];
        (
            proptest::collection::vec(part, 1..4),
            spec,
            0u32..0o10000,
            0u32..100_000,
            0u32..2_000_000_000,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn built_tarballs_decode_to_their_members(
            specs in proptest::collection::vec(member_strategy(), 0..12),
            compression in 0u8..3,
        ) {
            let mut b = ::tar::Builder::new(Vec::new());
            let mut files: Vec<Vec<Vec<u8>>> = Vec::new();
            let mut expected = Vec::new();
            for (parts, spec, mode, uid, mtime) in &specs {
                let path = parts.join("/");
                let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
                let mut h = ::tar::Header::new_gnu();
                h.set_mode(*mode);
                h.set_uid((*uid).into());
                h.set_gid((*uid / 2).into());
                h.set_mtime((*mtime).into());
                h.set_size(0);
                let mut node = Node::new(parts.last().unwrap(), NodeKind::File);
                node.mode = *mode;
                node.uid = *uid;
                node.gid = *uid / 2;
                node.mtime_ns = i64::from(*mtime) * 1_000_000_000;
                node.ctime_ns = node.mtime_ns;
                match spec {
                    Spec::File(data) => {
                        h.set_entry_type(::tar::EntryType::Regular);
                        h.set_size(data.len() as u64);
                        b.append_data(&mut h, &path, &data[..]).unwrap();
                        files.push(parts.clone());
                        expected.push((Member::Node { parts, node }, data.clone()));
                    }
                    Spec::Dir => {
                        h.set_entry_type(::tar::EntryType::Directory);
                        b.append_data(&mut h, &path, io::empty()).unwrap();
                        node.kind = NodeKind::Dir;
                        expected.push((Member::Node { parts, node }, Vec::new()));
                    }
                    Spec::Symlink(target) => {
                        h.set_entry_type(::tar::EntryType::Symlink);
                        b.append_link(&mut h, &path, target).unwrap();
                        node.kind = NodeKind::Symlink;
                        node.link_target = Some(Bytes(target.as_bytes().to_vec()));
                        expected.push((Member::Node { parts, node }, Vec::new()));
                    }
                    Spec::HardLink(n) => {
                        let Some(target) = (!files.is_empty()).then(|| files[n % files.len()].clone())
                        else {
                            continue;
                        };
                        h.set_entry_type(::tar::EntryType::Link);
                        let to = String::from_utf8(target.join(&b'/')).unwrap();
                        b.append_link(&mut h, &path, &to).unwrap();
                        expected.push((Member::HardLink { path: path.clone(), parts, target }, Vec::new()));
                    }
                }
            }
            let plain = b.into_inner().unwrap();
            let bytes = match compression {
                0 => plain,
                1 => {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    io::Write::write_all(&mut gz, &plain).unwrap();
                    gz.finish().unwrap()
                }
                _ => zstd::encode_all(&plain[..], 1).unwrap(),
            };
            let decoded = decode(&bytes, &Limits::default()).unwrap();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn arbitrary_bytes_decode_or_fail_cleanly(
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let _ = decode(&bytes, &Limits::default());
        }

        #[test]
        fn damaged_tarballs_decode_or_fail_cleanly(
            specs in proptest::collection::vec(member_strategy(), 1..6),
            damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut b = ::tar::Builder::new(Vec::new());
            for (parts, spec, mode, _, _) in &specs {
                let mut h = ::tar::Header::new_gnu();
                h.set_mode(*mode);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                let data = match spec {
                    Spec::File(data) => data.clone(),
                    _ => Vec::new(),
                };
                h.set_size(data.len() as u64);
                b.append_data(&mut h, parts.join("/"), &data[..]).unwrap();
            }
            let mut bytes = b.into_inner().unwrap();
            for (at, value) in damage {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            bytes.truncate(bytes.len() - cut % 600.min(bytes.len()));
            let limits = Limits {
                max_stream_bytes: 1 << 20,
                max_content_bytes: 1 << 20,
                max_header_bytes: 1 << 16,
                ..Limits::default()
            };
            let _ = decode(&bytes, &limits);
        }
    }
}
