//! Per-document dedup hashes: the exact 128-bit hash of the normalised text, and MinHash
//! band hashes over word n-gram shingles.
//!
//! Exact normalisation: lowercase, whitespace runs collapsed to one space, trimmed.
//! Near-duplicate normalisation (like datatrove's `simplify_text`): lowercase, diacritics
//! removed, punctuation and symbols treated as spaces, every digit run replaced by `0`; then
//! words are hashed, consecutive `ngram` words form a shingle (a document with fewer words is
//! one shingle), and each of `bands × rows` hash functions takes its minimum over the
//! shingles. A band hash is the hash of that band's `rows` minima; two documents sharing any
//! band hash are duplicate candidates.
//!
//! The hash functions are `x ↦ a·x + b mod 2⁶⁴` with random odd `a` applied to already-mixed
//! 64-bit shingle hashes; the minima are compared as whole 64-bit values, which depend on every
//! input bit through the multiplication's carries. A unit test checks that the estimated
//! Jaccard similarity tracks the true one.

use crate::config::MinHashParams;
use crate::filters::words::is_punct;
use crate::hashing::{hash_bytes, hash_seq};
use tinyllama_model::rng::Rng;
use xxhash_rust::xxh3::Xxh3;

/// The exact-dedup hash.
pub fn exact_hash(text: &str) -> u128 {
    let mut h = Xxh3::new();
    let mut buf = [0u8; 4096];
    let mut n = 0;
    let mut pending_space = false;
    let mut started = false;
    let push = |bytes: &[u8], buf: &mut [u8; 4096], n: &mut usize, h: &mut Xxh3| {
        if *n + bytes.len() > buf.len() {
            h.update(&buf[..*n]);
            *n = 0;
        }
        buf[*n..*n + bytes.len()].copy_from_slice(bytes);
        *n += bytes.len();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = started;
            continue;
        }
        if pending_space {
            push(b" ", &mut buf, &mut n, &mut h);
            pending_space = false;
        }
        started = true;
        if c.is_ascii() {
            push(&[c.to_ascii_lowercase() as u8], &mut buf, &mut n, &mut h);
        } else {
            for l in c.to_lowercase() {
                let mut tmp = [0u8; 4];
                push(l.encode_utf8(&mut tmp).as_bytes(), &mut buf, &mut n, &mut h);
            }
        }
    }
    h.update(&buf[..n]);
    h.digest128()
}

/// Hashes of the normalised words of `text` (see the module docs), appended to `out`.
pub fn dedup_word_hashes(text: &str, out: &mut Vec<u64>) {
    let mut word: Vec<u8> = Vec::with_capacity(32);
    let mut in_digits = false;
    let flush = |word: &mut Vec<u8>, out: &mut Vec<u64>| {
        if !word.is_empty() {
            out.push(hash_bytes(word));
            word.clear();
        }
    };
    let push_char = |c: char, word: &mut Vec<u8>, in_digits: &mut bool| {
        if c.is_numeric() {
            if !*in_digits {
                word.push(b'0');
                *in_digits = true;
            }
            return;
        }
        *in_digits = false;
        let mut tmp = [0u8; 4];
        for l in c.to_lowercase() {
            word.extend_from_slice(l.encode_utf8(&mut tmp).as_bytes());
        }
    };
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_whitespace() || c.is_ascii_punctuation() {
                in_digits = false;
                flush(&mut word, out);
            } else if c.is_ascii_digit() {
                if !in_digits {
                    word.push(b'0');
                    in_digits = true;
                }
            } else {
                in_digits = false;
                word.push(c.to_ascii_lowercase() as u8);
            }
            continue;
        }
        if c.is_whitespace() || is_punct(c) {
            in_digits = false;
            flush(&mut word, out);
            continue;
        }
        // Strip diacritics: decompose and drop combining marks.
        let mut any = false;
        unicode_normalization::char::decompose_canonical(c, |d| {
            if !unicode_normalization::char::is_combining_mark(d) {
                any = true;
                push_char(d, &mut word, &mut in_digits);
            }
        });
        if !any && !unicode_normalization::char::is_combining_mark(c) {
            push_char(c, &mut word, &mut in_digits);
        }
    }
    flush(&mut word, out);
}

/// MinHash with `bands × rows` hash functions derived from a seed.
pub struct MinHasher {
    pub params: MinHashParams,
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(params: MinHashParams) -> Self {
        let k = params.bands * params.rows;
        let mut rng = Rng::derive(params.seed, 0x4d49_4e48);
        let a = (0..k).map(|_| rng.next_u64() | 1).collect();
        let b = (0..k).map(|_| rng.next_u64()).collect();
        MinHasher { params, a, b }
    }

    /// Writes `bands` band hashes of `text` into `out`; false (and `out` untouched) when the
    /// text has no words after normalisation.
    pub fn band_hashes(&self, text: &str, out: &mut [u64]) -> bool {
        let mut words = Vec::with_capacity(text.len() / 5 + 1);
        dedup_word_hashes(text, &mut words);
        if words.is_empty() {
            return false;
        }
        let n = self.params.ngram;
        let k = self.a.len();
        let mut mins = vec![u64::MAX; k];
        let mut shingle = |s: u64| {
            // The hot loop: k independent multiply-add-min lanes, which vectorise.
            for ((m, &a), &b) in mins.iter_mut().zip(&self.a).zip(&self.b) {
                let v = s.wrapping_mul(a).wrapping_add(b);
                if v < *m {
                    *m = v;
                }
            }
        };
        if words.len() < n {
            shingle(hash_seq(&words));
        } else {
            for w in words.windows(n) {
                shingle(hash_seq(w));
            }
        }
        let r = self.params.rows;
        for (band, o) in out.iter_mut().enumerate().take(self.params.bands) {
            *o = hash_seq(&mins[band * r..(band + 1) * r]);
        }
        true
    }

    /// The raw minima (for tests of the estimator).
    #[cfg(test)]
    fn minima(&self, text: &str) -> Vec<u64> {
        let mut words = Vec::new();
        dedup_word_hashes(text, &mut words);
        let n = self.params.ngram;
        let mut mins = vec![u64::MAX; self.a.len()];
        let sh: Vec<u64> = if words.len() < n {
            vec![hash_seq(&words)]
        } else {
            words.windows(n).map(hash_seq).collect()
        };
        for s in sh {
            for (i, m) in mins.iter_mut().enumerate() {
                *m = (*m).min(s.wrapping_mul(self.a[i]).wrapping_add(self.b[i]));
            }
        }
        mins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_normalises_case_and_space() {
        assert_eq!(exact_hash("Hello   World\n"), exact_hash("  hello world"));
        assert_ne!(exact_hash("hello world"), exact_hash("hello  worlds"));
        assert_eq!(exact_hash("ÉCOLE"), exact_hash("école"));
    }

    #[test]
    fn word_normalisation() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        dedup_word_hashes("Café, 2024 — the END.", &mut a);
        dedup_word_hashes("cafe 1999 the end", &mut b);
        assert_eq!(a, b);
    }

    /// Random letter words (digits would all normalise to "0").
    fn words(seed: u64, n: usize) -> Vec<String> {
        let mut r = Rng::new(seed);
        (0..n)
            .map(|_| {
                let mut x = r.below(1 << 30);
                let mut w = String::new();
                for _ in 0..6 {
                    w.push((b'a' + (x % 26) as u8) as char);
                    x /= 26;
                }
                w
            })
            .collect()
    }

    #[test]
    fn jaccard_estimate_tracks_truth() {
        let mh = MinHasher::new(MinHashParams {
            ngram: 1,
            bands: 32,
            rows: 8,
            seed: 3,
        });
        // Sets with controlled overlap: shared words plus distinct ones.
        for (shared, own) in [(300, 100), (200, 200), (100, 300), (380, 20)] {
            let common = words(1, shared);
            let mut a = common.clone();
            a.extend(words(2, own));
            let mut b = common.clone();
            b.extend(words(3, own));
            let sa: std::collections::HashSet<_> = a.iter().collect();
            let sb: std::collections::HashSet<_> = b.iter().collect();
            let truth = sa.intersection(&sb).count() as f64 / sa.union(&sb).count() as f64;
            let (ma, mb) = (mh.minima(&a.join(" ")), mh.minima(&b.join(" ")));
            let est = ma.iter().zip(&mb).filter(|(x, y)| x == y).count() as f64 / ma.len() as f64;
            assert!(
                (est - truth).abs() < 0.09,
                "shared {shared}: est {est} truth {truth}"
            );
        }
    }

    #[test]
    fn near_duplicates_share_a_band() {
        let mh = MinHasher::new(MinHashParams {
            ngram: 5,
            bands: 14,
            rows: 8,
            seed: 1,
        });
        let base = words(9, 400).join(" ");
        let edited = base.replacen(' ', " inserted ", 1) + " one more sentence at the end";
        let other = words(10, 400).join(" ");
        let (mut x, mut y, mut z) = ([0u64; 14], [0u64; 14], [0u64; 14]);
        assert!(mh.band_hashes(&base, &mut x));
        mh.band_hashes(&edited, &mut y);
        mh.band_hashes(&other, &mut z);
        assert!(x.iter().zip(&y).any(|(a, b)| a == b));
        assert!(!x.iter().zip(&z).any(|(a, b)| a == b));
        assert!(!mh.band_hashes(" ... !!! ", &mut z));
    }

    #[test]
    fn lsh_recall_on_light_edits() {
        // Documents with one word in fifty replaced (Jaccard of 5-gram shingles about 0.8)
        // should almost always share a band under the default 14 × 8.
        let mh = MinHasher::new(MinHashParams {
            ngram: 5,
            bands: 14,
            rows: 8,
            seed: 1,
        });
        let lex = crate::benchcorpus::Lexicon::new(20000, 3);
        let mut r = Rng::new(4);
        let mut hits = 0;
        for _ in 0..200 {
            let base = lex.document(&mut r);
            let mut words: Vec<String> = base.split(' ').map(String::from).collect();
            for _ in 0..(words.len() / 50).max(1) {
                let i = r.below(words.len() as u64) as usize;
                words[i] = format!("{}x", words[i]);
            }
            let (mut a, mut b) = ([0u64; 14], [0u64; 14]);
            mh.band_hashes(&base, &mut a);
            mh.band_hashes(&words.join(" "), &mut b);
            hits += a.iter().zip(&b).any(|(x, y)| x == y) as u32;
        }
        assert!(hits >= 180, "{hits}/200");
    }
}
