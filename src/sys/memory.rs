//! Anonymous memory mappings (Argon2's working memory).

/// Argon2's memory, mapped on its own and backed by transparent huge pages
/// where the kernel allows them. Argon2 reads its 64 MiB at random: with
/// 4 KiB pages that is 16,384 page faults to fill it and a TLB miss on
/// almost every block read; with 2 MiB pages it is 32 faults, and the key
/// is derived in noticeably less time, a cost every command pays once.
pub(crate) struct KdfMemory {
    mapping: *mut libc::c_void,
    mapping_len: usize,
    blocks: *mut argon2::Block,
    block_count: usize,
}

impl KdfMemory {
    /// The alignment of the blocks: one transparent huge page.
    pub(crate) const HUGE_PAGE: usize = 2 * 1024 * 1024;

    /// None if the memory cannot be mapped; Argon2 then allocates its own.
    pub(crate) fn new(block_count: usize) -> Option<KdfMemory> {
        let len = block_count.checked_mul(argon2::Block::SIZE)?;
        let mapping_len = len.checked_add(Self::HUGE_PAGE)?;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched. Anonymous memory is zero-filled, and zero bytes are a
        // valid `Block` (an array of u64).
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapping_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mapping == libc::MAP_FAILED {
            return None;
        }
        let start = (mapping as usize).next_multiple_of(Self::HUGE_PAGE);
        let blocks = start as *mut argon2::Block;
        // SAFETY: [start, start + len) lies inside the mapping. The advice
        // only changes how pages are backed; its failure (no THP support)
        // leaves ordinary pages, which is still correct. The state derived
        // from the password stays out of core dumps.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            libc::madvise(mapping, mapping_len, libc::MADV_DONTDUMP);
        }
        Some(KdfMemory {
            mapping,
            mapping_len,
            blocks,
            block_count,
        })
    }

    /// The `block_count` zeroed blocks, for `hash_password_into_with_memory`.
    pub(crate) fn blocks(&mut self) -> &mut [argon2::Block] {
        // SAFETY: `blocks` is aligned to 2 MiB (more than Block's 64 bytes),
        // points at `block_count` zero-initialised blocks inside a mapping
        // this value owns, and the borrow of self keeps it unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks, self.block_count) }
    }
}

impl Drop for KdfMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once; no slice
        // into it outlives `self`.
        unsafe { libc::munmap(self.mapping, self.mapping_len) };
    }
}
