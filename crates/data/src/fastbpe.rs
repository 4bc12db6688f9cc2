//! A lean re-implementation of Hugging Face's BPE model (`tokenizers` 0.22, no dropout, no
//! word prefix/suffix) for the document fast path: same symbols, same byte fallback and unknown
//! handling, and the same priority-queue merge loop — including its handling of stale queue
//! entries — so the ids are identical; without building token strings and offsets for every
//! token, and with a large per-thread word cache. Tests compare it with `tokenizers` on varied
//! text.

use crate::hashing::FxMap;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// Words cached per thread before the cache is cleared.
const CACHE_WORDS: usize = 1 << 18;
/// Longer words are not cached (as in `tokenizers`).
const CACHE_MAX_LEN: usize = 256;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Word → ids.
type WordCache = FxMap<Box<str>, Box<[u32]>>;

thread_local! {
    /// (model instance it belongs to, cache).
    static CACHE: RefCell<(u64, WordCache)> = RefCell::new((0, FxMap::default()));
}

pub struct FastBpe {
    /// Single characters (the initial symbols) → id.
    chars: FxMap<char, u32>,
    /// Multi-character strings are only needed for `ignore_merges`.
    vocab: FxMap<String, u32>,
    merges: FxMap<(u32, u32), (u32, u32)>,
    bytes: [Option<u32>; 256],
    byte_fallback: bool,
    unk: Option<u32>,
    fuse_unk: bool,
    ignore_merges: bool,
    instance: u64,
}

#[derive(PartialEq, Eq)]
struct Merge {
    pos: usize,
    rank: u32,
    new_id: u32,
}

impl Ord for Merge {
    // A min-heap on rank, then position — as `tokenizers` orders it.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.rank != other.rank {
            other.rank.cmp(&self.rank)
        } else {
            other.pos.cmp(&self.pos)
        }
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    c: u32,
    prev: isize,
    next: isize,
    len: usize,
}

impl FastBpe {
    /// Builds from a `tokenizer.json` BPE model section; `None` when it uses features this
    /// implementation does not reproduce (dropout, prefixes/suffixes) or is malformed.
    pub fn from_model_json(m: &serde_json::Value) -> Option<Self> {
        if m["type"] != "BPE"
            || !(m["dropout"].is_null() || m["dropout"].as_f64() == Some(0.0))
            || !m["continuing_subword_prefix"].is_null()
            || !m["end_of_word_suffix"].is_null()
        {
            return None;
        }
        let vocab: FxMap<String, u32> = m["vocab"]
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_u64()? as u32)))
            .collect::<Option<_>>()?;
        let mut merges = FxMap::default();
        for (rank, e) in m["merges"].as_array()?.iter().enumerate() {
            let (a, b) = match e {
                serde_json::Value::String(s) => {
                    let (a, b) = s.split_once(' ')?;
                    (a.to_string(), b.to_string())
                }
                serde_json::Value::Array(p) if p.len() == 2 => {
                    (p[0].as_str()?.to_string(), p[1].as_str()?.to_string())
                }
                _ => return None,
            };
            let ia = *vocab.get(&a)?;
            let ib = *vocab.get(&b)?;
            let new_id = *vocab.get(&format!("{a}{b}"))?;
            merges.insert((ia, ib), (rank as u32, new_id));
        }
        let mut chars = FxMap::default();
        for (k, &v) in &vocab {
            let mut it = k.chars();
            if let (Some(c), None) = (it.next(), it.next()) {
                chars.insert(c, v);
            }
        }
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = vocab.get(&format!("<{b:#04X}>")).copied();
        }
        let unk = match &m["unk_token"] {
            serde_json::Value::String(u) => Some(*vocab.get(u)?),
            _ => None,
        };
        Some(FastBpe {
            chars,
            vocab,
            merges,
            bytes,
            byte_fallback: m["byte_fallback"].as_bool().unwrap_or(false),
            unk,
            fuse_unk: m["fuse_unk"].as_bool().unwrap_or(false),
            ignore_merges: m["ignore_merges"].as_bool().unwrap_or(false),
            instance: NEXT_ID.fetch_add(1, AtomicOrdering::Relaxed),
        })
    }

    /// Appends the ids of one pre-tokenized word.
    pub fn encode_word(&self, w: &str, out: &mut Vec<u32>) {
        if w.is_empty() {
            return;
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(w) {
                out.push(id);
                return;
            }
        }
        if w.len() < CACHE_MAX_LEN {
            let hit = CACHE.with(|c| {
                let c = c.borrow();
                if c.0 != self.instance {
                    return false;
                }
                match c.1.get(w) {
                    Some(ids) => {
                        out.extend_from_slice(ids);
                        true
                    }
                    None => false,
                }
            });
            if hit {
                return;
            }
        }
        let start = out.len();
        self.merge_word(w, out);
        if w.len() < CACHE_MAX_LEN {
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                if c.0 != self.instance || c.1.len() >= CACHE_WORDS {
                    c.0 = self.instance;
                    c.1.clear();
                }
                c.1.insert(w.into(), out[start..].into());
            });
        }
    }

    fn merge_word(&self, w: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(w.len());
        let add = |symbols: &mut Vec<Symbol>, c: u32, len: usize| {
            let n = symbols.len() as isize;
            let prev = if let Some(last) = symbols.last_mut() {
                last.next = n;
                n - 1
            } else {
                -1
            };
            symbols.push(Symbol {
                c,
                prev,
                next: -1,
                len,
            });
        };
        let mut unk: Option<(u32, usize)> = None;
        for ch in w.chars() {
            let byte_len = ch.len_utf8();
            if let Some(&id) = self.chars.get(&ch) {
                if let Some((u, ul)) = unk.take() {
                    add(&mut symbols, u, ul);
                }
                add(&mut symbols, id, byte_len);
                continue;
            }
            if self.byte_fallback {
                let mut buf = [0u8; 4];
                let enc = ch.encode_utf8(&mut buf).as_bytes();
                if enc.iter().all(|&b| self.bytes[b as usize].is_some()) {
                    for &b in enc {
                        add(&mut symbols, self.bytes[b as usize].unwrap(), 1);
                    }
                    continue;
                }
            }
            if let Some(u) = self.unk {
                unk = match (unk, self.fuse_unk) {
                    (Some((uid, ul)), true) => Some((uid, ul + byte_len)),
                    (Some((uid, ul)), false) => {
                        add(&mut symbols, uid, ul);
                        Some((u, byte_len))
                    }
                    (None, _) => Some((u, byte_len)),
                };
            }
        }
        if let Some((u, ul)) = unk {
            add(&mut symbols, u, ul);
        }
        self.merge_all(&mut symbols);
        out.extend(symbols.iter().filter(|s| s.len != 0).map(|s| s.c));
    }

    fn merge_all(&self, symbols: &mut [Symbol]) {
        let mut queue: BinaryHeap<Merge> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.merges
                    .get(&(w[0].c, w[1].c))
                    .map(|&(rank, new_id)| Merge { pos, rank, new_id })
            })
            .collect();
        while let Some(top) = queue.pop() {
            if symbols[top.pos].len == 0 || symbols[top.pos].next == -1 {
                continue;
            }
            let next_pos = symbols[top.pos].next as usize;
            let right = symbols[next_pos];
            // A stale entry is applied if the pair now there merges to the same id.
            match self.merges.get(&(symbols[top.pos].c, right.c)) {
                Some(&(_, id)) if id == top.new_id => {}
                _ => continue,
            }
            let cur = &mut symbols[top.pos];
            cur.c = top.new_id;
            cur.len += right.len;
            cur.next = right.next;
            symbols[next_pos].len = 0;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = top.pos as isize;
            }
            let cur = symbols[top.pos];
            if cur.prev >= 0 {
                let prev = symbols[cur.prev as usize];
                if let Some(&(rank, new_id)) = self.merges.get(&(prev.c, cur.c)) {
                    queue.push(Merge {
                        pos: cur.prev as usize,
                        rank,
                        new_id,
                    });
                }
            }
            let next = cur.next as usize;
            if cur.next >= 0 && next < symbols.len() {
                if let Some(&(rank, new_id)) = self.merges.get(&(cur.c, symbols[next].c)) {
                    queue.push(Merge {
                        pos: top.pos,
                        rank,
                        new_id,
                    });
                }
            }
        }
    }
}
