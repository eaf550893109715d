//! String splitting by byte search and building without `format!`, for the code the npm
//! module's wasm links (`core::fmt` and its padding and integer code weigh kilobytes there).
//!
//! `str::split_once`, `find` with a string pattern, indexing with `&s[a..b]` and `join` are fine
//! on a server, but in the size-optimised client wasm each one drags in code it never runs: the
//! two-way string searcher, or the panic path of a slice that is not on a character boundary,
//! which formats the string with `Debug` and so links Unicode's escape tables (measured: the
//! client went from 15 KB to 32 KB gzipped with them, `cargo xtask bench size`). These helpers
//! split only at ASCII bytes, which are always character boundaries, and cannot panic.

use alloc::string::String;

/// The position of the first `byte` in `s`.
pub fn find_byte(s: &str, byte: u8) -> Option<usize> {
    s.bytes().position(|b| b == byte)
}

/// The position of the first of `bytes` in `s`.
pub fn find_any(s: &str, bytes: &[u8]) -> Option<usize> {
    s.bytes().position(|b| bytes.contains(&b))
}

/// The position of the last `byte` in `s`.
pub fn rfind_byte(s: &str, byte: u8) -> Option<usize> {
    s.bytes().rposition(|b| b == byte)
}

/// The position of the first occurrence of `needle` (by naive comparison: these strings are
/// short).
pub fn find_str(s: &str, needle: &str) -> Option<usize> {
    let (h, n) = (s.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return Some(0);
    }
    h.windows(n.len()).position(|w| w == n)
}

/// `s` split around the `len`-byte separator found at `at` (both sides empty if `at` is not a
/// character boundary, which the byte searches above never return).
pub fn split_around(s: &str, at: usize, len: usize) -> (&str, &str) {
    (
        s.get(..at).unwrap_or_default(),
        s.get(at + len..).unwrap_or_default(),
    )
}

/// `s.split_once(byte)`.
pub fn split_once_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    find_byte(s, byte).map(|i| split_around(s, i, 1))
}

/// `parts.join(sep)`.
pub fn join(parts: &[&str], sep: &str) -> String {
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(p);
    }
    out
}

/// `n` in decimal (`n.to_string()` without `core::fmt`).
pub fn decimal(mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[i..].iter().map(|&d| d as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_and_splits() {
        assert_eq!(find_str("https://x", "://"), Some(5));
        assert_eq!(find_str("ab", "abc"), None);
        assert_eq!(find_any("a?b/c", b"/?#"), Some(1));
        assert_eq!(rfind_byte("a:b:c", b':'), Some(3));
        assert_eq!(split_once_byte("é:ü:x", b':'), Some(("é", "ü:x")));
        assert_eq!(split_once_byte("abc", b':'), None);
        assert_eq!(split_around("abc", 7, 1), ("", ""));
        assert_eq!(join(&["a", "b", "c"], "/"), "a/b/c");
        assert_eq!(join(&[], "/"), "");
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
        }
    }
}
