//! A connection's read and write buffers, which it holds only while it has a request to
//! serve.
//!
//! Why: a keep-alive client may sit idle between requests for up to the header timeout,
//! and a router holds thousands of such clients. Keeping two 8 KiB buffers per idle
//! connection made it cost 28 KiB of RSS (nginx: under 1 KiB; `bench.sh`, `PHASES=idle`).
//! Allocating them per request instead costs two large allocations per request. A small
//! stack of free buffers per worker thread does neither: a busy connection takes and gives
//! back its buffers in a few nanoseconds, and an idle one holds none.

use std::cell::RefCell;

use bytes::BytesMut;

use crate::client::READ_CHUNK;

/// Free buffers of each kind a worker thread keeps; beyond that, released ones are freed.
/// At most 2 × 64 × 8 KiB = 1 MiB per thread.
const KEPT: usize = 64;

/// A buffer that a large head or response grew past this is freed, not kept.
const MAX_KEPT_CAPACITY: usize = 4 * READ_CHUNK;

thread_local! {
    static FREE: RefCell<Free> = const {
        RefCell::new(Free {
            reads: Vec::new(),
            writes: Vec::new(),
        })
    };
}

struct Free {
    reads: Vec<BytesMut>,
    writes: Vec<Vec<u8>>,
}

/// The buffers of one client connection; empty (nothing allocated) while it is idle.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Bytes read from the client and not consumed yet.
    pub read: BytesMut,
    /// The response being written.
    pub write: Vec<u8>,
}

impl Buffers {
    /// Makes sure `read` has room for at least a quarter of a read chunk.
    pub fn room_to_read(&mut self) {
        if self.read.capacity() == 0 {
            self.read = FREE
                .with_borrow_mut(|free| free.reads.pop())
                .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK));
        } else if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
    }

    /// Makes sure there is a write buffer.
    pub fn room_to_write(&mut self) {
        if self.write.capacity() == 0 {
            self.write = FREE
                .with_borrow_mut(|free| free.writes.pop())
                .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK));
        }
    }

    /// Gives both buffers back, unless part of a request is buffered.
    pub fn release(&mut self) {
        if !self.read.is_empty() {
            return;
        }
        let mut read = std::mem::take(&mut self.read);
        let mut write = std::mem::take(&mut self.write);
        // Reading consumed `read` from the front; with nothing left in it, `reserve` moves
        // its start back to the beginning of the allocation without copying.
        read.reserve(READ_CHUNK);
        write.clear();
        FREE.with_borrow_mut(|free| {
            if read.capacity() <= MAX_KEPT_CAPACITY && free.reads.len() < KEPT {
                free.reads.push(read);
            }
            if (1..=MAX_KEPT_CAPACITY).contains(&write.capacity()) && free.writes.len() < KEPT {
                free.writes.push(write);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Buf;

    use super::*;

    #[test]
    fn idle_connections_hold_no_buffers_and_busy_ones_reuse_them() {
        let mut bufs = Buffers::default();
        bufs.room_to_read();
        bufs.room_to_write();
        bufs.read.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let read_at = bufs.read.as_ptr();
        bufs.write.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        let write_at = bufs.write.as_ptr();

        // Part of a request buffered: nothing is given back.
        bufs.release();
        assert_eq!(bufs.read.capacity(), READ_CHUNK);
        bufs.read.advance(bufs.read.len());
        bufs.release();
        assert_eq!((bufs.read.capacity(), bufs.write.capacity()), (0, 0));

        // The next request on this thread gets the same memory back, whole.
        let mut next = Buffers::default();
        next.room_to_read();
        next.room_to_write();
        assert_eq!(next.read.as_ptr(), read_at);
        assert_eq!(next.read.capacity(), READ_CHUNK);
        assert_eq!(next.write.as_ptr(), write_at);
        assert!(next.write.is_empty());

        // One a large response grew is freed, not kept.
        next.write.reserve(8 * READ_CHUNK);
        next.release();
        let mut third = Buffers::default();
        third.room_to_write();
        assert_eq!(third.write.capacity(), READ_CHUNK);
    }
}
