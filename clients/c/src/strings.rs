//! C strings in and out: NULL and invalid UTF-8 are error codes, never a
//! crash or a lossy guess.

use std::ffi::{c_char, CStr};

use crate::status::{keyseat_status, Failure};

/// The text of a C string argument that must be given.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for `'a`.
pub unsafe fn required<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded from the caller's promise.
    unsafe { optional(ptr, what) }?.ok_or_else(|| {
        Failure::new(
            keyseat_status::KEYSEAT_ERR_NULL_ARGUMENT,
            format!("{what} is NULL"),
        )
    })
}

/// The text of a C string argument that may be NULL (not given).
///
/// # Safety
/// As for [`required`].
pub unsafe fn optional<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string
    // valid for 'a.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map(Some).map_err(|e| {
        Failure::new(
            keyseat_status::KEYSEAT_ERR_INVALID_UTF8,
            format!(
                "{what} is not valid UTF-8 (byte {} of {})",
                e.valid_up_to() + 1,
                bytes.to_bytes().len()
            ),
        )
    })
}

/// Copies `text` and a NUL into the caller's buffer of `len` bytes.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
pub unsafe fn write_out(
    buf: *mut c_char,
    len: usize,
    text: &str,
    what: &str,
) -> Result<(), Failure> {
    if buf.is_null() {
        return Err(Failure::new(
            keyseat_status::KEYSEAT_ERR_NULL_ARGUMENT,
            format!("{what} is NULL"),
        ));
    }
    let needed = text.len() + 1;
    if len < needed {
        return Err(Failure::new(
            keyseat_status::KEYSEAT_ERR_INVALID_ARGUMENT,
            format!("{what} has {len} bytes; {needed} are needed"),
        ));
    }
    // SAFETY: `buf` has `len >= text.len() + 1` writable bytes (the
    // caller's promise and the check above), and a Rust string does not
    // overlap a buffer the caller owns.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len()) };
    // SAFETY: index text.len() < len, inside the same buffer.
    unsafe { *buf.add(text.len()) = 0 };
    Ok(())
}

/// Stores `value` through an out-pointer that may be NULL (not wanted).
///
/// # Safety
/// `out` is NULL or points to a writable, aligned `T`.
pub unsafe fn set_optional<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: not NULL, and the caller promises it is writable and
        // aligned; `write` drops nothing there (C memory may be
        // uninitialized).
        unsafe { out.write(value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_bad_utf8_are_codes() {
        // SAFETY: NULL, and a NUL-terminated literal.
        let (none, bad) = unsafe {
            (
                required(std::ptr::null(), "server_url"),
                required(c"ab\xff".as_ptr(), "access_key"),
            )
        };
        assert_eq!(
            none.unwrap_err().status,
            keyseat_status::KEYSEAT_ERR_NULL_ARGUMENT
        );
        let bad = bad.unwrap_err();
        assert_eq!(bad.status, keyseat_status::KEYSEAT_ERR_INVALID_UTF8);
        assert_eq!(bad.message, "access_key is not valid UTF-8 (byte 3 of 3)");
    }

    #[test]
    fn out_buffers_are_checked() {
        let mut buf = [1 as c_char; 4];
        // SAFETY: `buf` has 4 writable bytes; 3 are claimed.
        let short = unsafe { write_out(buf.as_mut_ptr(), 3, "abc", "out") };
        assert_eq!(
            short.unwrap_err().status,
            keyseat_status::KEYSEAT_ERR_INVALID_ARGUMENT
        );
        // SAFETY: as above, all 4.
        unsafe { write_out(buf.as_mut_ptr(), 4, "abc", "out") }.unwrap();
        assert_eq!(buf, [b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
    }
}
