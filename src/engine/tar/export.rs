//! `export_tar`: a snapshot, or a part of one, written as a tarball that
//! GNU tar extracts to the same tree: GNU-format headers, GNU long names
//! and links, PAX records for sub-second mtimes and xattrs, compressed as
//! asked.

use crate::engine::browse::find_node;
use crate::engine::repository::Repository;
use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tar::{device_major, device_minor, Compression};
use crate::format::tree::{Node, NodeKind, Tree, TREE_DEPTH_MAX};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What `export_tar` wrote.
#[derive(Debug, Default)]
pub struct ExportOutcome {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Entries a tarball cannot hold (sockets), one line each.
    pub skipped: Vec<String>,
}

/// The output, compressed as asked; `finish` writes the trailers.
enum Encoder<'a> {
    Plain(&'a mut dyn Write),
    Gzip(flate2::write::GzEncoder<&'a mut dyn Write>),
    Zstd(zstd::stream::write::Encoder<'static, &'a mut dyn Write>),
    Xz(xz2::write::XzEncoder<&'a mut dyn Write>),
    Bzip2(bzip2::write::BzEncoder<&'a mut dyn Write>),
}

impl Write for Encoder<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
            Encoder::Xz(w) => w.write(buf),
            Encoder::Bzip2(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
            Encoder::Xz(w) => w.flush(),
            Encoder::Bzip2(w) => w.flush(),
        }
    }
}

impl Encoder<'_> {
    fn finish(self) -> io::Result<()> {
        let out = match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(w) => w.finish()?,
            Encoder::Zstd(w) => w.finish()?,
            Encoder::Xz(w) => w.finish()?,
            Encoder::Bzip2(w) => w.finish()?,
        };
        out.flush()
    }
}

/// Reads a file's blobs in order and fails, rather than let the tarball go
/// out of step, if they do not add up to the recorded size.
struct Content<'a> {
    repo: &'a Repository,
    ids: &'a [BlobId],
    next: usize,
    blob: Vec<u8>,
    at: usize,
    remaining: u64,
    failure: Option<Error>,
}

impl Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ctx = self.repo.context();
        while self.at == self.blob.len() {
            if self.next == self.ids.len() {
                if self.remaining != 0 {
                    return Err(self.fail(Error::corrupt(
                        "file content is shorter than the snapshot records",
                    )));
                }
                return Ok(0);
            }
            let loaded = ctx
                .check_interrupt()
                .and_then(|()| self.repo.read_blob(BlobKind::Data, &self.ids[self.next]));
            let data = match loaded {
                Ok(data) => data,
                Err(e) => return Err(self.fail(e)),
            };
            if data.len() as u64 > self.remaining {
                return Err(self.fail(Error::corrupt(
                    "file content is longer than the snapshot records",
                )));
            }
            self.remaining -= data.len() as u64;
            self.next += 1;
            self.blob = data;
            self.at = 0;
        }
        let n = buf.len().min(self.blob.len() - self.at);
        buf[..n].copy_from_slice(&self.blob[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Content<'_> {
    fn fail(&mut self, e: Error) -> io::Error {
        let io = io::Error::other(e.to_string());
        self.failure = Some(e);
        io
    }
}

struct Exporter<'r, 'w> {
    repo: &'r Repository,
    builder: ::tar::Builder<Encoder<'w>>,
    /// (device, inode) of multiply-linked files → the first path written.
    links: HashMap<(u64, u64), Vec<u8>>,
    outcome: ExportOutcome,
}

fn write_error(e: io::Error) -> Error {
    Error::io("cannot write the tarball", e)
}

impl Exporter<'_, '_> {
    fn header(node: &Node, entry_type: ::tar::EntryType) -> ::tar::Header {
        let mut header = ::tar::Header::new_gnu();
        header.set_entry_type(entry_type);
        header.set_mode(node.mode);
        header.set_uid(node.uid.into());
        header.set_gid(node.gid.into());
        // Names longer than the 32-byte fields are left out; the numeric ids
        // still go in.
        if let Some(user) = &node.user {
            let _ = header.set_username(user);
        }
        if let Some(group) = &node.group {
            let _ = header.set_groupname(group);
        }
        header.set_mtime(u64::try_from(node.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0));
        header.set_size(0);
        header
    }

    /// Sub-second mtimes and xattrs go into a PAX header before the entry
    /// (GNU tar reads it whatever the archive's format).
    fn pax(&mut self, node: &Node) -> Result<()> {
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let nanos = node.mtime_ns.rem_euclid(1_000_000_000);
        if nanos != 0 {
            let secs = node.mtime_ns.div_euclid(1_000_000_000);
            records.push(("mtime".into(), format!("{secs}.{nanos:09}").into_bytes()));
        }
        for x in &node.xattrs {
            let (Ok(name), Ok(value)) = (std::str::from_utf8(&x.name.0), hex::decode(&x.value))
            else {
                continue;
            };
            records.push((format!("SCHILY.xattr.{name}"), value));
        }
        if records.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(write_error)
    }

    /// Writes one node; returns the tree to write next for a directory.
    fn node(&mut self, node: &Node, path: &[u8]) -> Result<Option<BlobId>> {
        let ctx = self.repo.context();
        ctx.check_interrupt()?;
        let at = Path::new(OsStr::from_bytes(path));
        match node.kind {
            NodeKind::Dir => {
                self.pax(node)?;
                let mut header = Self::header(node, ::tar::EntryType::Directory);
                self.builder
                    .append_data(&mut header, at, io::empty())
                    .map_err(write_error)?;
                self.outcome.dirs += 1;
                return Ok(node.subtree);
            }
            NodeKind::File => {
                if node.links > 1 {
                    let key = (node.device_id, node.inode);
                    if let Some(first) = self.links.get(&key).cloned() {
                        let mut header = Self::header(node, ::tar::EntryType::Link);
                        self.builder
                            .append_link(&mut header, at, Path::new(OsStr::from_bytes(&first)))
                            .map_err(write_error)?;
                        return Ok(None);
                    }
                    self.links.insert(key, path.to_vec());
                }
                self.pax(node)?;
                let mut header = Self::header(node, ::tar::EntryType::Regular);
                header.set_size(node.size);
                let mut content = Content {
                    repo: self.repo,
                    ids: &node.content,
                    next: 0,
                    blob: Vec::new(),
                    at: 0,
                    remaining: node.size,
                    failure: None,
                };
                if let Err(e) = self.builder.append_data(&mut header, at, &mut content) {
                    return Err(match content.failure.take() {
                        Some(failure) => failure.context(String::from_utf8_lossy(path)),
                        None => write_error(e),
                    });
                }
                self.outcome.files += 1;
                self.outcome.bytes += node.size;
            }
            NodeKind::Symlink => {
                self.pax(node)?;
                let mut header = Self::header(node, ::tar::EntryType::Symlink);
                let target = node.link_target.as_ref().map(|t| t.0.as_slice());
                self.builder
                    .append_link(
                        &mut header,
                        at,
                        Path::new(OsStr::from_bytes(target.unwrap_or_default())),
                    )
                    .map_err(write_error)?;
            }
            NodeKind::Chardev | NodeKind::Blockdev | NodeKind::Fifo => {
                let entry_type = match node.kind {
                    NodeKind::Chardev => ::tar::EntryType::Char,
                    NodeKind::Blockdev => ::tar::EntryType::Block,
                    _ => ::tar::EntryType::Fifo,
                };
                self.pax(node)?;
                let mut header = Self::header(node, entry_type);
                if node.kind != NodeKind::Fifo {
                    header
                        .set_device_major(device_major(node.rdev))
                        .map_err(write_error)?;
                    header
                        .set_device_minor(device_minor(node.rdev))
                        .map_err(write_error)?;
                }
                self.builder
                    .append_data(&mut header, at, io::empty())
                    .map_err(write_error)?;
            }
            NodeKind::Socket => self.outcome.skipped.push(format!(
                "{}: a socket cannot be stored in a tarball",
                String::from_utf8_lossy(path)
            )),
        }
        Ok(None)
    }

    /// Writes a tree's nodes and everything under them, depth first with
    /// an explicit stack: a tree nested deeper than `TREE_DEPTH_MAX` is an
    /// error (`Corrupt`), not a stack overflow.
    fn tree(&mut self, tree: Tree, prefix: &[u8]) -> Result<()> {
        let reversed = |mut tree: Tree| {
            tree.nodes.reverse();
            tree.nodes
        };
        let mut stack: Vec<(Vec<Node>, Vec<u8>)> = vec![(reversed(tree), prefix.to_vec())];
        while let Some((nodes, dir)) = stack.last_mut() {
            let Some(node) = nodes.pop() else {
                stack.pop();
                continue;
            };
            let mut path = dir.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&node.name.0);
            if let Some(sub) = self.node(&node, &path)? {
                if stack.len() >= TREE_DEPTH_MAX {
                    return Err(Error::corrupt(format!(
                        "{}: directories are nested more than {TREE_DEPTH_MAX} deep",
                        String::from_utf8_lossy(&path)
                    )));
                }
                stack.push((reversed(self.repo.load_tree(&sub)?), path));
            }
        }
        Ok(())
    }
}

/// Writes `subpath` of a snapshot ("" or "/" for all of it) to `out` as a
/// tarball: a directory's contents at the top level (as `tar -C dir .`
/// would), a single file under its own name. GNU-format headers, GNU long
/// names and links, PAX records for sub-second mtimes and xattrs.
pub fn export_tar(
    repo: &Repository,
    snapshot: &Snapshot,
    subpath: &str,
    out: &mut dyn Write,
    compression: Compression,
) -> Result<ExportOutcome> {
    let encoder = match compression {
        Compression::None => Encoder::Plain(out),
        Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::default(),
        )),
        Compression::Zstd => {
            Encoder::Zstd(zstd::stream::write::Encoder::new(out, 3).map_err(write_error)?)
        }
        Compression::Xz => Encoder::Xz(xz2::write::XzEncoder::new(out, 6)),
        Compression::Bzip2 => Encoder::Bzip2(bzip2::write::BzEncoder::new(
            out,
            bzip2::Compression::default(),
        )),
    };
    let mut builder = ::tar::Builder::new(encoder);
    builder.mode(::tar::HeaderMode::Complete);
    let mut exporter = Exporter {
        repo,
        builder,
        links: HashMap::new(),
        outcome: ExportOutcome::default(),
    };
    match find_node(repo, snapshot, subpath)? {
        None => {
            let tree = repo.load_tree(&snapshot.tree)?;
            exporter.tree(tree, b"")?;
        }
        Some(node) if node.kind == NodeKind::Dir => {
            let tree = repo.load_tree(&node.subtree.expect("validated dir"))?;
            exporter.tree(tree, b"")?;
        }
        Some(node) => {
            let name = node.name.0.clone();
            exporter.node(&node, &name)?;
        }
    }
    let encoder = exporter.builder.into_inner().map_err(write_error)?;
    encoder.finish().map_err(write_error)?;
    Ok(exporter.outcome)
}
