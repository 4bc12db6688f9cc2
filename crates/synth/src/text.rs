//! Text measures shared by the generator (to verify planted near-duplicates) and the tests.

use std::collections::HashSet;

/// Lowercased alphanumeric words; punctuation acts as a separator. This is the usual
/// normalisation before MinHash shingling.
pub fn norm_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Hashes of the word `n`-grams of `words` (a document shorter than `n` words is one shingle).
pub fn shingles<S: AsRef<str>>(words: &[S], n: usize) -> HashSet<u64> {
    let mut out = HashSet::new();
    let hash = |ws: &[S]| {
        let mut h = 0xCBF2_9CE4_8422_2325;
        for w in ws {
            h = fnv1a(w.as_ref().as_bytes(), h);
            h = fnv1a(b" ", h);
        }
        h
    };
    if words.len() < n {
        out.insert(hash(words));
    } else {
        for win in words.windows(n) {
            out.insert(hash(win));
        }
    }
    out
}

pub fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(b).count();
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// Word 5-gram Jaccard similarity on normalised words.
pub fn jaccard5_norm(a: &str, b: &str) -> f64 {
    jaccard(&shingles(&norm_words(a), 5), &shingles(&norm_words(b), 5))
}

/// Word 5-gram Jaccard similarity on raw whitespace-separated words.
pub fn jaccard5_raw(a: &str, b: &str) -> f64 {
    let wa: Vec<&str> = a.split_whitespace().collect();
    let wb: Vec<&str> = b.split_whitespace().collect();
    jaccard(&shingles(&wa, 5), &shingles(&wb, 5))
}

/// Tokens for exact-phrase checks: runs of alphanumerics, and every other non-space
/// character on its own ("9 + 4" and "9+4" both give `9`, `+`, `4`).
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur).to_lowercase());
            }
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur.to_lowercase());
    }
    out
}
