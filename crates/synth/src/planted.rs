//! Planted defects: junk documents that quality rules should reject, offensive documents that
//! a word blocklist should catch, near-duplicate edits, and the invented blocklists.

use crate::names::{capitalise, NameMaker};
use crate::natural::{pick, pk};
use crate::text::{jaccard5_norm, jaccard5_raw};
use tinyllama_model::rng::Rng;

/// Invented offensive words (LDNOOBW format when written: one per line). None is a real word.
pub const BLOCKLIST: &[&str] = &[
    "grobnak",
    "vexmurd",
    "skolvitch",
    "thrangle",
    "blurzak",
    "fezzgut",
    "krumplot",
    "snivvek",
    "druzzle",
    "plokhead",
    "wretchmog",
    "zargoon",
    "quibbrat",
    "muckspit",
    "gnashvile",
    "borkwit",
];

/// Invented blocked domains (UT1 `domains` format when written: one per line).
pub const URL_BLOCKLIST: &[&str] = &[
    "grimbazaar.test",
    "zorbcasino.test",
    "fleecewagon.test",
    "murkmall.test",
    "vexmurd-chat.test",
];

/// Gopher stop words: nonsense junk must contain none of them.
const STOP: &[&str] = &["the", "be", "to", "of", "and", "that", "have", "with"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JunkKind {
    /// High `#`/`...` symbol-to-word ratio and few alphabetic words.
    SymbolSoup,
    /// One line repeated many times (duplicate-line fraction).
    RepeatedLines,
    /// Fewer than 50 words.
    Short,
    /// More than 90% of lines start with a bullet.
    Bullets,
    /// More than 30% of lines end with an ellipsis.
    Ellipsis,
    /// Invented nonsense words without any stop word.
    Nonsense,
    /// Numbers only: almost no word has an alphabetic character.
    Numbers,
}

impl JunkKind {
    pub const ALL: [JunkKind; 7] = [
        JunkKind::SymbolSoup,
        JunkKind::RepeatedLines,
        JunkKind::Short,
        JunkKind::Bullets,
        JunkKind::Ellipsis,
        JunkKind::Nonsense,
        JunkKind::Numbers,
    ];
    pub fn name(self) -> &'static str {
        match self {
            JunkKind::SymbolSoup => "symbol_soup",
            JunkKind::RepeatedLines => "repeated_lines",
            JunkKind::Short => "short",
            JunkKind::Bullets => "bullets",
            JunkKind::Ellipsis => "ellipsis",
            JunkKind::Nonsense => "nonsense",
            JunkKind::Numbers => "numbers",
        }
    }
}

fn nonsense_word(rng: &mut Rng) -> String {
    loop {
        let w = NameMaker::nonsense(rng);
        if !STOP.contains(&w.as_str()) && !BLOCKLIST.iter().any(|b| w.contains(b)) {
            return w;
        }
    }
}

const SPAM_LINES: &[&str] = &[
    "Click here to claim your prize now",
    "Best deals every day at the lowest prices",
    "Subscribe today for more amazing updates",
    "Limited offer ends soon so act fast",
    "Share this page with everyone you know",
];
const BULLET_WORDS: &[&str] = &[
    "cheap", "fast", "free", "shipping", "size", "colour", "deal", "offer", "item", "stock",
    "price", "sale", "new", "hot", "top", "pack", "gift",
];
const SYMBOLS: &[&str] = &[
    "#", "##", "@@", "%%", "&&", "**", "~~", "^^", "|", "...", "$$", "<>", "!!", "??", "#!", ";;",
    "==", "//",
];

pub fn junk(rng: &mut Rng, kind: JunkKind) -> String {
    match kind {
        JunkKind::SymbolSoup => {
            let n = 60 + rng.below(80);
            let mut s = String::new();
            for i in 0..n {
                if i > 0 {
                    s.push(if rng.below(12) == 0 { '\n' } else { ' ' });
                }
                if rng.below(6) == 0 {
                    s.push_str(pk(rng, &["win", "now", "free", "lol", "ok"]));
                } else {
                    s.push_str(pk(rng, SYMBOLS));
                }
            }
            s
        }
        JunkKind::RepeatedLines => {
            let line = pk(rng, SPAM_LINES);
            let n = 15 + rng.below(25) as usize;
            vec![line; n].join("\n")
        }
        JunkKind::Short => pk(
            rng,
            &[
                "ok",
                "see more",
                "page not found",
                "thanks for visiting",
                "loading please wait",
                "404 error",
                "nothing here yet",
                "click to continue",
            ],
        )
        .to_string(),
        JunkKind::Bullets => {
            let n = 20 + rng.below(20);
            let mut lines = Vec::new();
            for _ in 0..n {
                let b = pk(rng, &["•", "-", "*", "·"]);
                let k = 2 + rng.below(4);
                let ws: Vec<&str> = (0..k).map(|_| pk(rng, BULLET_WORDS)).collect();
                lines.push(format!("{b} {}", ws.join(" ")));
            }
            lines.join("\n")
        }
        JunkKind::Ellipsis => {
            let n = 15 + rng.below(15);
            let mut lines = Vec::new();
            for _ in 0..n {
                let starts = [
                    "and then the story goes on",
                    "read the rest of this post",
                    "you will not believe what happened",
                    "to be continued in the next part",
                    "more details coming later",
                    "find out what they said",
                ];
                lines.push(format!("{}...", pk(rng, &starts)));
            }
            lines.join("\n")
        }
        JunkKind::Nonsense => {
            let n = 80 + rng.below(80);
            let mut s = String::new();
            let mut cap = true;
            for i in 0..n {
                let w = nonsense_word(rng);
                if i > 0 {
                    s.push(' ');
                }
                s.push_str(&if cap { capitalise(&w) } else { w });
                cap = false;
                if rng.below(9) == 0 {
                    s.push('.');
                    cap = true;
                }
            }
            s.push('.');
            s
        }
        JunkKind::Numbers => {
            let rows = 12 + rng.below(12);
            let mut lines = Vec::new();
            for _ in 0..rows {
                let k = 5 + rng.below(6);
                let ns: Vec<String> = (0..k).map(|_| (rng.below(1000)).to_string()).collect();
                lines.push(ns.join(" "));
            }
            lines.join("\n")
        }
    }
}

/// Insert 1–3 blocklisted words into an otherwise clean text. Returns the text and the words.
pub fn offensive(rng: &mut Rng, clean: &str) -> (String, Vec<String>) {
    const TPLS: [&str; 5] = [
        "What a {w} that was.",
        "Only a {w} would say such a thing.",
        "{W}! Everybody shouted it.",
        "They called the stranger a {w} and laughed.",
        "That old {w} ruined the whole day.",
    ];
    let n = 1 + rng.below(3) as usize;
    let mut order: Vec<usize> = (0..TPLS.len()).collect();
    rng.shuffle(&mut order);
    let mut words = Vec::new();
    let mut sents = Vec::new();
    for &t in order.iter().take(n) {
        let w = pk(rng, BLOCKLIST);
        words.push(w.to_string());
        sents.push(TPLS[t].replace("{w}", w).replace("{W}", &capitalise(w)));
    }
    let mut paras: Vec<String> = clean.split("\n\n").map(|s| s.to_string()).collect();
    // Append to prose paragraphs only (not to a title line).
    let prose: Vec<usize> = (0..paras.len())
        .filter(|&i| paras[i].ends_with('.'))
        .collect();
    for s in sents {
        let i = if prose.is_empty() {
            paras.len() - 1
        } else {
            *pick(rng, &prose)
        };
        paras[i] = format!("{} {s}", paras[i]);
    }
    (paras.join("\n\n"), words)
}

const SYNONYMS: &[(&str, &str)] = &[
    ("small", "little"),
    ("large", "big"),
    ("went", "walked"),
    ("happy", "glad"),
    ("often", "usually"),
    ("quiet", "calm"),
    ("old", "ancient"),
    ("busy", "crowded"),
    ("morning", "dawn"),
    ("long", "lengthy"),
    ("smiled", "grinned"),
    ("saw", "spotted"),
    ("every", "each"),
];
const TRAILERS: &[&str] = &[
    "Thanks for reading this page.",
    "This page was last checked in the spring.",
    "Share this with a friend who likes to learn.",
    "Copied from an older archive.",
];
const CODE_TRAILERS_PY: &[&str] = &[
    "# TODO: add more tests",
    "# end of file",
    "# reviewed by the record keepers",
];
const CODE_TRAILERS_RS: &[&str] = &[
    "// TODO: add more tests",
    "// end of module",
    "// reviewed by the record keepers",
];

/// A near-duplicate of `orig`: one or two small edits (a synonym swap, an appended or
/// prepended line). Returns `None` if the result is not similar enough (the caller then tries
/// another original). `code` selects comment-style edits.
pub fn near_dup(
    rng: &mut Rng,
    orig: &str,
    code: Option<&str>,
    min_jaccard: f64,
) -> Option<(String, String, f64)> {
    let n_edits = 1 + rng.below(2) as usize;
    let mut text = orig.to_string();
    let mut trailers: Vec<&str> = TRAILERS.to_vec();
    rng.shuffle(&mut trailers);
    let mut what = Vec::new();
    // Distinct edit operations (so a line is never prepended twice).
    let mut ops: Vec<u64> = if code.is_some() {
        vec![0, 2]
    } else {
        vec![0, 1, 2]
    };
    rng.shuffle(&mut ops);
    for &op in ops.iter().take(n_edits) {
        match (op, code) {
            (0, None) => {
                // Swap one occurrence of a word that has a synonym.
                let words: Vec<&str> = text.split(' ').collect();
                let cands: Vec<(usize, &str)> = words
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| {
                        SYNONYMS
                            .iter()
                            .find_map(|(a, b)| {
                                if w == a {
                                    Some(*b)
                                } else if w == b {
                                    Some(*a)
                                } else {
                                    None
                                }
                            })
                            .map(|s| (i, s))
                    })
                    .collect();
                if cands.is_empty() {
                    let t = trailers.pop().unwrap();
                    text = format!("{text} {t}");
                    what.push("append");
                } else {
                    let (i, s) = *pick(rng, &cands);
                    what.push("swap");
                    let mut ws: Vec<String> = words.iter().map(|w| w.to_string()).collect();
                    ws[i] = s.to_string();
                    text = ws.join(" ");
                }
            }
            (1, None) => {
                text = format!("{text} {}", trailers.pop().unwrap());
                what.push("append");
            }
            (_, None) => {
                text = format!(
                    "{}\n\n{text}",
                    pk(rng, &["Archived copy.", "Reposted note.", "Saved page."])
                );
                what.push("prepend");
            }
            (0 | 1, Some(lang)) => {
                let t = if lang == "python" {
                    pk(rng, CODE_TRAILERS_PY)
                } else {
                    pk(rng, CODE_TRAILERS_RS)
                };
                text = format!("{text}{t}\n");
                what.push("append_comment");
            }
            (_, Some(lang)) => {
                let t = if lang == "python" {
                    "# Copied from the shared tools folder."
                } else {
                    "// Copied from the shared tools folder."
                };
                text = format!("{t}\n{text}");
                what.push("prepend_comment");
            }
        }
    }
    let j = jaccard5_norm(orig, &text).min(jaccard5_raw(orig, &text));
    if j >= min_jaccard && text != orig {
        Some((text, what.join("+"), j))
    } else {
        None
    }
}
