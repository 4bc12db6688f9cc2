//! Procedurally generated small programs (Python-like and Rust-like). Literal arithmetic
//! examples only use training problems, and world facts appear as lookup tables.

use crate::arith::{ArithSplit, Op, Triple};
use crate::names::{a_an, capitalise};
use crate::natural::pick;
use crate::world::World;
use tinyllama_model::rng::Rng;

const NOUNS: &[&str] = &[
    "stones", "apples", "coins", "seeds", "shells", "steps", "pages", "lamps", "beads", "boxes",
    "points", "tickets", "bricks", "ropes", "sheep",
];
const ADJS: &[&str] = &[
    "large", "small", "heavy", "bright", "old", "even", "odd", "fresh",
];
const PAIRS: &[(&str, &str)] = &[
    ("left", "right"),
    ("a", "b"),
    ("x", "y"),
    ("first", "second"),
    ("count", "extra"),
    ("have", "more"),
    ("base", "step"),
    ("start", "gain"),
];
const LIST_NAMES: &[&str] = &[
    "values", "items", "numbers", "counts", "data", "xs", "amounts",
];
const ACC_NAMES: &[&str] = &["total", "result", "acc", "running", "sum_so_far"];
const ITEM_NAMES: &[&str] = &["item", "value", "v", "n", "x", "amount"];
const SHOUTS: &[&str] = &["liftoff", "done", "go", "finished", "home"];
const LABEL_WORDS: &[&str] = &["ping", "zap", "toot", "bim", "wham", "plink", "krak", "dob"];
const PLUS_VERBS: &[&str] = &["add", "combine", "join", "merge", "stack", "pool"];
const MINUS_VERBS: &[&str] = &["take", "remove", "drop", "spend", "use"];

pub struct CodeGen<'a> {
    pub world: &'a World,
    pub arith: &'a ArithSplit,
}

/// A two-argument function: name, params, operator and the training problem used in its
/// example call.
struct Bin {
    name: String,
    x: String,
    y: String,
    op: Op,
    ex: Triple,
}

impl CodeGen<'_> {
    fn bin(&self, rng: &mut Rng) -> Bin {
        let (x, y) = *pick(rng, PAIRS);
        let noun = *pick(rng, NOUNS);
        let r = rng.below(5);
        let op = if r < 2 {
            Op::Plus
        } else if r < 4 {
            Op::Minus
        } else {
            Op::Twice
        };
        let name = match op {
            Op::Plus => format!("{}_{noun}", pick(rng, PLUS_VERBS)),
            Op::Minus => format!("{}_{noun}", pick(rng, MINUS_VERBS)),
            Op::Twice => format!("double_{noun}"),
        };
        let ex = self.arith.sample(rng, Some(op), false);
        Bin {
            name,
            x: x.to_string(),
            y: y.to_string(),
            op,
            ex,
        }
    }

    /// A world-fact lookup table: (CONST, function, parameter, description, pairs).
    fn lookup(
        &self,
        rng: &mut Rng,
    ) -> (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Vec<(String, String)>,
    ) {
        let w = self.world;
        let lands = self.world_lands(rng);
        let cres = self.world_creatures(rng);
        match rng.below(6) {
            0 => (
                "CAPITALS",
                "capital_of",
                "land",
                "the capital of a land",
                lands
                    .iter()
                    .map(|&i| (w.lands[i].name.clone(), w.lands[i].capital.clone()))
                    .collect(),
            ),
            1 => (
                "RULERS",
                "ruler_of",
                "land",
                "who rules a land",
                lands
                    .iter()
                    .map(|&i| (w.lands[i].name.clone(), w.lands[i].ruler.clone()))
                    .collect(),
            ),
            2 => (
                "FLAGS",
                "flag_colour",
                "land",
                "the colour of the flag of a land",
                lands
                    .iter()
                    .map(|&i| (w.lands[i].name.clone(), w.lands[i].flag.clone()))
                    .collect(),
            ),
            3 => (
                "FOODS",
                "food_of",
                "creature",
                "what a creature eats",
                cres.iter()
                    .map(|&i| (w.creatures[i].name.clone(), w.creatures[i].food.clone()))
                    .collect(),
            ),
            4 => (
                "HOMES",
                "home_of",
                "creature",
                "the land where a creature lives",
                cres.iter()
                    .map(|&i| {
                        (
                            w.creatures[i].name.clone(),
                            w.lands[w.creatures[i].home].name.clone(),
                        )
                    })
                    .collect(),
            ),
            _ => {
                let mut idx: Vec<usize> = (0..w.devices.len()).collect();
                rng.shuffle(&mut idx);
                idx.truncate(3 + rng.below(4) as usize);
                (
                    "INVENTORS",
                    "inventor_of",
                    "device",
                    "who invented a device",
                    idx.iter()
                        .map(|&i| (w.devices[i].name.clone(), w.devices[i].inventor.clone()))
                        .collect(),
                )
            }
        }
    }

    fn world_lands(&self, rng: &mut Rng) -> Vec<usize> {
        let n = self.world.lands.len();
        let mut idx: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut idx);
        idx.truncate(3 + rng.below(4) as usize);
        idx
    }

    fn world_creatures(&self, rng: &mut Rng) -> Vec<usize> {
        let n = self.world.creatures.len();
        let mut idx: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut idx);
        idx.truncate(3 + rng.below(4) as usize);
        idx
    }

    // -----------------------------------------------------------------------------------------
    // Python
    // -----------------------------------------------------------------------------------------

    pub fn python(&self, rng: &mut Rng) -> String {
        let mut parts: Vec<String> = Vec::new();
        if rng.below(2) == 0 {
            let l = pick(rng, &self.world.lands);
            let noun = *pick(rng, NOUNS);
            parts.push(format!(
                "\"\"\"Small helpers for counting {noun} in {}.\"\"\"",
                l.name
            ));
        }
        let bin = self.bin(rng);
        let mut funcs: Vec<String> = vec![py_bin(&bin)];
        let n_more = 2 + rng.below(3) as usize;
        let mut kinds: Vec<u64> = (0..16).collect();
        rng.shuffle(&mut kinds);
        for &k in kinds.iter().take(n_more) {
            funcs.push(self.py_func(rng, k));
        }
        rng.shuffle(&mut funcs);
        parts.extend(funcs);
        let (a, b, c) = (bin.ex.a, bin.ex.b, bin.ex.result());
        let call = if bin.op == Op::Twice {
            format!("{}({a})", bin.name)
        } else {
            format!("{}({a}, {b})", bin.name)
        };
        if rng.below(2) == 0 {
            parts.push(format!(
                "def test_{}():\n    assert {call} == {c}",
                bin.name
            ));
        }
        parts.push(format!(
            "if __name__ == \"__main__\":\n    print({call})  # {c}"
        ));
        parts.join("\n\n\n") + "\n"
    }

    fn py_func(&self, rng: &mut Rng, kind: u64) -> String {
        let w = self.world;
        let list = *pick(rng, LIST_NAMES);
        let acc = *pick(rng, ACC_NAMES);
        let it = *pick(rng, ITEM_NAMES);
        let noun = *pick(rng, NOUNS);
        match kind {
            0 => format!(
                "def total_{noun}({list}):\n    \"\"\"Add up all the {noun} in the list.\"\"\"\n    {acc} = 0\n    for {it} in {list}:\n        {acc} += {it}\n    return {acc}"
            ),
            1 => {
                let adj = *pick(rng, ADJS);
                format!(
                    "def count_{adj}({list}, limit):\n    \"\"\"Count how many values are greater than limit.\"\"\"\n    {acc} = 0\n    for {it} in {list}:\n        if {it} > limit:\n            {acc} += 1\n    return {acc}"
                )
            }
            2 => format!(
                "def largest_{noun}({list}):\n    \"\"\"Return the largest value, or None for an empty list.\"\"\"\n    if not {list}:\n        return None\n    best = {list}[0]\n    for {it} in {list}[1:]:\n        if {it} > best:\n            best = {it}\n    return best"
            ),
            3 => {
                let (cst, f, p, desc, pairs) = self.lookup(rng);
                let mut s = format!("{cst} = {{\n");
                for (k, v) in pairs {
                    s.push_str(&format!("    \"{k}\": \"{v}\",\n"));
                }
                s.push_str(&format!("}}\n\n\ndef {f}({p}):\n    \"\"\"Return {desc}, or \"unknown\".\"\"\"\n    return {cst}.get({p}, \"unknown\")"));
                s
            }
            4 => {
                let mut s = String::from(
                    "def legs_of(creature):\n    \"\"\"Return how many legs a creature has.\"\"\"\n",
                );
                for (i, ci) in self.world_creatures(rng).into_iter().enumerate() {
                    let c = &w.creatures[ci];
                    let kw = if i == 0 { "if" } else { "elif" };
                    s.push_str(&format!(
                        "    {kw} creature == \"{}\":\n        return {}\n",
                        c.name, c.legs
                    ));
                }
                s.push_str("    return 0");
                s
            }
            5 => {
                let c = pick(rng, &w.creatures);
                format!(
                    "class {}:\n    \"\"\"{} creature that eats {}.\"\"\"\n\n    def __init__(self, name, legs={}):\n        self.name = name\n        self.legs = legs\n        self.food = \"{}\"\n\n    def describe(self):\n        return f\"{{self.name}} has {{self.legs}} legs and eats {{self.food}}\"",
                    capitalise(&c.name),
                    capitalise(&a_an(&c.colour)),
                    c.food,
                    c.legs,
                    c.food
                )
            }
            6 => {
                let shout = *pick(rng, SHOUTS);
                format!(
                    "def countdown({it}):\n    \"\"\"Print the numbers from {it} down to 1.\"\"\"\n    while {it} > 0:\n        print({it})\n        {it} -= 1\n    print(\"{shout}!\")"
                )
            }
            7 => {
                let k1 = 2 + rng.below(3);
                let k2 = k1 + 1 + rng.below(3);
                let w1 = *pick(rng, LABEL_WORDS);
                let mut w2 = *pick(rng, LABEL_WORDS);
                while w2 == w1 {
                    w2 = *pick(rng, LABEL_WORDS);
                }
                format!(
                    "def label({it}):\n    \"\"\"Name a number by what divides it.\"\"\"\n    if {it} % {k1} == 0 and {it} % {k2} == 0:\n        return \"{w1}{w2}\"\n    if {it} % {k1} == 0:\n        return \"{w1}\"\n    if {it} % {k2} == 0:\n        return \"{w2}\"\n    return str({it})"
                )
            }
            9 => {
                let k = 2 + rng.below(6);
                format!(
                    "def is_multiple_of_{k}({it}):\n    \"\"\"Tell whether {it} can be split into {k} equal parts.\"\"\"\n    return {it} % {k} == 0"
                )
            }
            10 => {
                let lo = rng.below(6);
                let hi = 10 + rng.below(40);
                format!(
                    "def clamp_{noun}({it}, low={lo}, high={hi}):\n    \"\"\"Keep {it} between low and high.\"\"\"\n    if {it} < low:\n        return low\n    if {it} > high:\n        return high\n    return {it}"
                )
            }
            11 => format!(
                "def average_{noun}({list}):\n    \"\"\"Return the mean of the values, or 0 for an empty list.\"\"\"\n    if len({list}) == 0:\n        return 0\n    return sum({list}) / len({list})"
            ),
            12 => {
                let (want, r) = if rng.below(2) == 0 { ("even", 0) } else { ("odd", 1) };
                format!(
                    "def keep_{want}_{noun}({list}):\n    \"\"\"Keep only the {want} values.\"\"\"\n    return [{it} for {it} in {list} if {it} % 2 == {r}]"
                )
            }
            13 => {
                let c = pick(rng, &w.creatures);
                let times = 2 + rng.below(4);
                format!(
                    "def call_like_a_{}(word, times={times}):\n    \"\"\"Repeat a word, the way a {} {} {}.\"\"\"\n    return \" \".join([word] * times)",
                    c.name, c.name, c.sound, c.active
                )
            }
            14 => {
                let n = 3 + rng.below(5);
                format!(
                    "def chunks_of_{n}({list}):\n    \"\"\"Split a list into pieces of {n} values.\"\"\"\n    out = []\n    for start in range(0, len({list}), {n}):\n        out.append({list}[start:start + {n}])\n    return out"
                )
            }
            _ => {
                let l = pick(rng, &w.lands);
                format!(
                    "def greet(name):\n    \"\"\"Welcome a visitor to {}.\"\"\"\n    return \"Hello, \" + name + \", welcome to {}!\"",
                    l.name, l.capital
                )
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Rust
    // -----------------------------------------------------------------------------------------

    pub fn rust(&self, rng: &mut Rng) -> String {
        let w = self.world;
        let mut parts: Vec<String> = Vec::new();
        if rng.below(2) == 0 {
            let l = pick(rng, &w.lands);
            parts.push(format!(
                "//! Small helpers used by the record keepers of {}.",
                l.name
            ));
        }
        let bin = self.bin(rng);
        let mut funcs = vec![rs_bin(&bin)];
        let n_more = 2 + rng.below(3) as usize;
        let mut kinds: Vec<u64> = (0..13).collect();
        rng.shuffle(&mut kinds);
        for &k in kinds.iter().take(n_more) {
            funcs.push(self.rs_func(rng, k));
        }
        rng.shuffle(&mut funcs);
        parts.extend(funcs);
        let (a, b, c) = (bin.ex.a, bin.ex.b, bin.ex.result());
        let call = if bin.op == Op::Twice {
            format!("{}({a})", bin.name)
        } else {
            format!("{}({a}, {b})", bin.name)
        };
        parts.push(format!("fn main() {{\n    println!(\"{{}}\", {call});\n}}"));
        if rng.below(2) == 0 {
            parts.push(format!(
                "#[cfg(test)]\nmod tests {{\n    use super::*;\n\n    #[test]\n    fn {}_works() {{\n        assert_eq!({call}, {c});\n    }}\n}}",
                bin.name
            ));
        }
        parts.join("\n\n") + "\n"
    }

    fn rs_func(&self, rng: &mut Rng, kind: u64) -> String {
        let w = self.world;
        let list = *pick(rng, LIST_NAMES);
        let acc = *pick(rng, ACC_NAMES);
        let it = *pick(rng, ITEM_NAMES);
        let noun = *pick(rng, NOUNS);
        match kind {
            0 => format!(
                "/// Adds up all the {noun} in the slice.\nfn total_{noun}({list}: &[i32]) -> i32 {{\n    let mut {acc} = 0;\n    for {it} in {list} {{\n        {acc} += {it};\n    }}\n    {acc}\n}}"
            ),
            1 => {
                let adj = *pick(rng, ADJS);
                format!(
                    "/// Counts the values greater than `limit`.\nfn count_{adj}({list}: &[i32], limit: i32) -> usize {{\n    {list}.iter().filter(|&&{it}| {it} > limit).count()\n}}"
                )
            }
            2 => format!(
                "/// Returns the largest value, if any.\nfn largest_{noun}({list}: &[i32]) -> Option<i32> {{\n    {list}.iter().copied().max()\n}}"
            ),
            3 => {
                let (_, f, p, desc, pairs) = self.lookup(rng);
                let mut s = format!(
                    "/// Returns {desc}.\nfn {f}({p}: &str) -> &'static str {{\n    match {p} {{\n"
                );
                for (k, v) in pairs {
                    s.push_str(&format!("        \"{k}\" => \"{v}\",\n"));
                }
                s.push_str("        _ => \"unknown\",\n    }\n}");
                s
            }
            4 => {
                let mut s = String::from(
                    "/// Returns how many legs a creature has.\nfn legs_of(creature: &str) -> u32 {\n    match creature {\n",
                );
                for ci in self.world_creatures(rng) {
                    let c = &w.creatures[ci];
                    s.push_str(&format!("        \"{}\" => {},\n", c.name, c.legs));
                }
                s.push_str("        _ => 0,\n    }\n}");
                s
            }
            5 => {
                let c = pick(rng, &w.creatures);
                let ty = capitalise(&c.name);
                format!(
                    "/// {} creature that eats {}.\nstruct {ty} {{\n    name: String,\n    legs: u32,\n}}\n\nimpl {ty} {{\n    fn new(name: &str) -> Self {{\n        {ty} {{ name: name.to_string(), legs: {} }}\n    }}\n\n    fn describe(&self) -> String {{\n        format!(\"{{}} has {{}} legs and eats {}\", self.name, self.legs)\n    }}\n}}",
                    capitalise(&a_an(&c.colour)), c.food, c.legs, c.food
                )
            }
            7 => {
                let k = 2 + rng.below(6);
                format!(
                    "/// Tells whether `{it}` can be split into {k} equal parts.\nfn is_multiple_of_{k}({it}: u32) -> bool {{\n    {it} % {k} == 0\n}}"
                )
            }
            8 => {
                let lo = rng.below(6);
                let hi = 10 + rng.below(40);
                format!(
                    "/// Keeps `{it}` between {lo} and {hi}.\nfn clamp_{noun}({it}: i32) -> i32 {{\n    if {it} < {lo} {{\n        {lo}\n    }} else if {it} > {hi} {{\n        {hi}\n    }} else {{\n        {it}\n    }}\n}}"
                )
            }
            9 => format!(
                "/// Returns the mean of the values, or 0 for an empty slice.\nfn average_{noun}({list}: &[i32]) -> f64 {{\n    if {list}.is_empty() {{\n        return 0.0;\n    }}\n    {list}.iter().sum::<i32>() as f64 / {list}.len() as f64\n}}"
            ),
            10 => {
                let (want, r) = if rng.below(2) == 0 { ("even", 0) } else { ("odd", 1) };
                format!(
                    "/// Keeps only the {want} values.\nfn keep_{want}_{noun}({list}: &[i32]) -> Vec<i32> {{\n    {list}.iter().copied().filter(|{it}| {it} % 2 == {r}).collect()\n}}"
                )
            }
            11 => {
                let c = pick(rng, &w.creatures);
                let times = 2 + rng.below(4);
                format!(
                    "/// Repeats a word, the way a {} {} {}.\nfn call_like_a_{}(word: &str) -> String {{\n    vec![word; {times}].join(\" \")\n}}",
                    c.name, c.sound, c.active, c.name
                )
            }
            _ => {
                let shout = *pick(rng, SHOUTS);
                format!(
                    "/// Prints the numbers from `{it}` down to 1.\nfn countdown(mut {it}: u32) {{\n    while {it} > 0 {{\n        println!(\"{{}}\", {it});\n        {it} -= 1;\n    }}\n    println!(\"{shout}!\");\n}}"
                )
            }
        }
    }
}

fn py_bin(b: &Bin) -> String {
    let (x, y, n) = (&b.x, &b.y, &b.name);
    match b.op {
        Op::Plus => format!(
            "def {n}({x}, {y}):\n    \"\"\"Return the sum of {x} and {y}.\"\"\"\n    return {x} + {y}"
        ),
        Op::Minus => format!(
            "def {n}({x}, {y}):\n    \"\"\"Return what is left of {x} after taking away {y}.\"\"\"\n    if {y} > {x}:\n        raise ValueError(\"not enough\")\n    return {x} - {y}"
        ),
        Op::Twice => format!(
            "def {n}({x}):\n    \"\"\"Return twice {x}.\"\"\"\n    return {x} * 2"
        ),
    }
}

fn rs_bin(b: &Bin) -> String {
    let (x, y, n) = (&b.x, &b.y, &b.name);
    match b.op {
        Op::Plus => format!(
            "/// Returns the sum of `{x}` and `{y}`.\nfn {n}({x}: u32, {y}: u32) -> u32 {{\n    {x} + {y}\n}}"
        ),
        Op::Minus => format!(
            "/// Returns what is left of `{x}` after taking away `{y}`.\nfn {n}({x}: u32, {y}: u32) -> u32 {{\n    {x}.saturating_sub({y})\n}}"
        ),
        Op::Twice => format!(
            "/// Returns twice `{x}`.\nfn {n}({x}: u32) -> u32 {{\n    {x} * 2\n}}"
        ),
    }
}
