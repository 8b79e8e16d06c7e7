//! `X-Request-Id` and `X-Request-Start` values, made without an allocation or a second clock
//! read per request.

use std::{
    cell::RefCell,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::BytesMut;
use http::HeaderValue;

thread_local! {
    /// Small header values are cut from one shared buffer, so that making one costs a copy
    /// into it rather than an allocation (the buffer is freed once no value points into it).
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    /// A monotonic time and the wall-clock time since the epoch read with it.
    static EPOCH_ANCHOR: std::cell::Cell<Option<(Instant, Duration)>> =
        const { std::cell::Cell::new(None) };
    /// The last `X-Request-Start` value: requests in the same millisecond share it.
    static REQUEST_START: RefCell<(u128, HeaderValue)> =
        const { RefCell::new((0, HeaderValue::from_static("t=0"))) };
}

/// A header value of at most 64 bytes written by `write` into the scratch buffer.
pub(crate) fn scratch_value(write: impl FnOnce(&mut BytesMut)) -> HeaderValue {
    let bytes = SCRATCH.with_borrow_mut(|buf| {
        if buf.capacity() - buf.len() < 64 {
            *buf = BytesMut::with_capacity(4096);
        }
        write(buf);
        buf.split().freeze()
    });
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A new random request id: 32 lower-case hex digits.
pub(crate) fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id = rand::random::<u128>();
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    scratch_value(|buf| buf.extend_from_slice(&digits))
}

/// `t=<milliseconds since the epoch>`, now.
pub(crate) fn request_start() -> HeaderValue {
    request_start_at(Instant::now())
}

/// `t=<milliseconds since the epoch>` at `now`, a time the caller read anyway: the wall
/// clock is read once a second per thread and the milliseconds since then are added, so a
/// request costs no second clock read.
pub(crate) fn request_start_at(now: Instant) -> HeaderValue {
    let ms = EPOCH_ANCHOR.with(|anchor| {
        let recent = anchor.get().and_then(|(at, epoch)| {
            let since = now.checked_duration_since(at)?;
            (since < Duration::from_secs(1)).then_some(epoch + since)
        });
        recent.unwrap_or_else(|| {
            let epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            anchor.set(Some((now, epoch)));
            epoch
        })
    });
    let ms = ms.as_millis();
    REQUEST_START.with_borrow_mut(|(last, value)| {
        if *last != ms {
            let mut digits = [0u8; 40];
            let mut n = ms;
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            *value = scratch_value(|buf| {
                buf.extend_from_slice(b"t=");
                buf.extend_from_slice(&digits[at..]);
            });
            *last = ms;
        }
        value.clone()
    })
}
