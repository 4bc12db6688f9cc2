//! Unicode NFC normalisation with a fast path: ASCII and already-normalised text (almost all
//! of it) is returned untouched without allocating.

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// The NFC form of `s`, and whether it changed.
pub fn nfc(s: String) -> (String, bool) {
    if s.is_ascii() {
        return (s, false);
    }
    if is_nfc_quick(s.chars()) == IsNormalized::Yes {
        return (s, false);
    }
    let n: String = s.nfc().collect();
    if n == s {
        (s, false)
    } else {
        (n, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn composes() {
        let (s, changed) = nfc("e\u{301}te\u{301}".to_string());
        assert_eq!(s, "\u{e9}t\u{e9}");
        assert!(changed);
        assert_eq!(nfc("plain".into()), ("plain".to_string(), false));
        assert_eq!(nfc("\u{e9}".into()), ("\u{e9}".to_string(), false));
    }
}
