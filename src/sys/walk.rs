//! Directory descriptors for the backup walk: open, list and stat entries
//! relative to an open directory (`openat`, `fstatat`).
