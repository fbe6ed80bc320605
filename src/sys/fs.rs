//! File-system calls beneath `engine::metadata`, the local backend and the
//! metrics file: stat, xattrs, owners, special files, flock, fsync.
