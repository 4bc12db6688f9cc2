//! Invented names built from syllables. Every list here was made up for this crate.

use std::collections::BTreeSet;
use tinyllama_model::rng::Rng;

const ONSETS: &[&str] = &[
    "b", "br", "d", "dr", "f", "g", "gl", "k", "kr", "l", "m", "n", "p", "r", "s", "sk", "t", "th",
    "v", "z", "w", "h",
];
const NUCLEI: &[&str] = &["a", "e", "i", "o", "u", "ae", "ou", "ei", "a", "o"];
const CODAS: &[&str] = &["", "", "", "n", "r", "l", "s", "k", "m", "th", "nd", "rk"];

const LAND_SUFFIXES: &[&str] = &["ia", "or", "and", "esh", "ium", "ara", "ost"];
const LAND_SUFFIXES_C: &[&str] = &["ria", "lor", "nesh", "via", "dor", "mar", "land"];
const CREATURE_SUFFIXES: &[&str] = &["ble", "ling", "ox", "ip", "ard", "wick", "uff", "ot"];
const DEVICE_SUFFIXES: &[&str] = &["wheel", "lamp", "loom", "horn", "scope", "bell", "kettle"];

/// Hands out names that are unique across every category and never contain a word from the
/// invented blocklist (so clean documents never trip the blocklist filter by accident).
pub struct NameMaker<'a> {
    used: BTreeSet<String>,
    banned: &'a [&'a str],
}

impl<'a> NameMaker<'a> {
    pub fn new(banned: &'a [&'a str]) -> Self {
        NameMaker {
            used: BTreeSet::new(),
            banned,
        }
    }

    fn syllable(rng: &mut Rng, coda: bool) -> String {
        let mut s = String::new();
        s.push_str(ONSETS[rng.below(ONSETS.len() as u64) as usize]);
        s.push_str(NUCLEI[rng.below(NUCLEI.len() as u64) as usize]);
        if coda {
            s.push_str(CODAS[rng.below(CODAS.len() as u64) as usize]);
        }
        s
    }

    fn accept(&mut self, s: String, min_len: usize, max_len: usize) -> Option<String> {
        if s.len() < min_len || s.len() > max_len || self.used.contains(&s) {
            return None;
        }
        // Reject triple letters and names that look awkward to tokenise.
        let b = s.as_bytes();
        if b.windows(3).any(|w| w[0] == w[1] && w[1] == w[2]) {
            return None;
        }
        let lower = s.to_lowercase();
        if self.banned.iter().any(|w| lower.contains(w)) {
            return None;
        }
        // Never collide with small words used in the templates.
        if COMMONISH.contains(&lower.as_str()) {
            return None;
        }
        self.used.insert(s.clone());
        Some(s)
    }

    fn make(
        &mut self,
        rng: &mut Rng,
        f: impl Fn(&mut Rng) -> String,
        lo: usize,
        hi: usize,
    ) -> String {
        loop {
            if let Some(s) = self.accept(f(rng), lo, hi) {
                return s;
            }
        }
    }

    pub fn land(&mut self, rng: &mut Rng) -> String {
        self.make(
            rng,
            |r| {
                let two = r.below(3) == 0;
                let c1 = !two && r.below(2) == 0;
                let mut s = Self::syllable(r, c1);
                if two {
                    let c2 = r.below(2) == 0;
                    s.push_str(&Self::syllable(r, c2));
                }
                // Vowel-initial suffixes after a consonant, consonant-initial after a vowel.
                let sfx = if s.ends_with(['a', 'e', 'i', 'o', 'u']) {
                    LAND_SUFFIXES_C
                } else {
                    LAND_SUFFIXES
                };
                s.push_str(sfx[r.below(sfx.len() as u64) as usize]);
                capitalise(&s)
            },
            5,
            10,
        )
    }

    pub fn town(&mut self, rng: &mut Rng) -> String {
        self.make(
            rng,
            |r| {
                let mut s = Self::syllable(r, true);
                s.push_str(&Self::syllable(r, true));
                capitalise(&s)
            },
            4,
            8,
        )
    }

    pub fn person(&mut self, rng: &mut Rng) -> String {
        self.make(
            rng,
            |r| {
                let c = r.below(2) == 0;
                let mut s = Self::syllable(r, c);
                let c = r.below(2) == 0;
                s.push_str(&Self::syllable(r, c));
                capitalise(&s)
            },
            3,
            7,
        )
    }

    pub fn creature(&mut self, rng: &mut Rng) -> String {
        self.make(
            rng,
            |r| {
                let c = r.below(2) == 0;
                let mut s = Self::syllable(r, c);
                s.push_str(CREATURE_SUFFIXES[r.below(CREATURE_SUFFIXES.len() as u64) as usize]);
                s
            },
            4,
            9,
        )
    }

    pub fn device(&mut self, rng: &mut Rng) -> String {
        self.make(
            rng,
            |r| {
                let mut s = Self::syllable(r, true);
                s.push_str(DEVICE_SUFFIXES[r.below(DEVICE_SUFFIXES.len() as u64) as usize]);
                s
            },
            6,
            12,
        )
    }

    /// A lowercase nonsense word (for junk documents); not registered as used.
    pub fn nonsense(rng: &mut Rng) -> String {
        let n = 1 + rng.below(3);
        let mut s = String::new();
        for _ in 0..n {
            let c = rng.below(2) == 0;
            s.push_str(&Self::syllable(rng, c));
        }
        s
    }
}

/// "a red", "an orange".
pub fn a_an(word: &str) -> String {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {word}")
    } else {
        format!("a {word}")
    }
}

pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Short words a syllable generator could produce that already mean something in the
/// templates (or are stop words). Names must avoid them.
const COMMONISH: &[&str] = &[
    "the", "be", "to", "of", "and", "that", "have", "with", "she", "he", "his", "her", "hers",
    "him", "then", "there", "here", "home", "more", "made", "make", "many", "most", "mole", "rose",
    "ship", "wood", "wool", "moon", "sun", "sea", "tea", "door", "dear", "deer", "bear", "lamp",
    "bell", "horn", "seed", "seeds", "nuts", "roots", "tone", "bore", "dare", "mile", "pole",
    "role", "hole", "sole", "tale", "sale", "gale", "male", "pale", "bale", "kale", "dale", "vale",
    "wale", "hale", "lone", "bone", "cone", "done", "gone", "none", "zone", "pine", "fine", "line",
    "mine", "nine", "wine", "dine", "vine", "tine", "kine", "sine", "time", "lime", "dime", "rime",
    "mime", "game", "name", "same", "tame", "fame", "lame", "came", "dame", "kite", "bite", "site",
    "mite", "rite", "note", "vote", "rote", "dote", "mote", "tote", "word", "work", "worm", "form",
    "farm", "park", "dark", "bark", "mark", "lark", "hark", "fork", "pork", "cork", "york", "torn",
    "born", "worn", "morn", "thorn", "horse", "north", "south", "forth", "birth", "earth",
];
