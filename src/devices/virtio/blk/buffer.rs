//! One guest buffer of a request: what the chain walk (`request.rs`) finds
//! and the I/O paths (`request.rs` through a copy, `zerocopy.rs` straight
//! to and from the file) read and write.

use vm_memory::GuestAddress;

/// One guest buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u64,
}
