//! Natural-language documents: encyclopedia paragraphs, stories, arithmetic word problems and
//! quizzes in the fixed `Question:`/`Answer:` format. Every template here was written for this
//! crate.
//!
//! Two rules every generator obeys (the held-out property depends on them):
//! * arithmetic is only ever written for problems from `ArithSplit::train`;
//! * a fact is only ever written as a question (in any form) in a quiz, and only when it is in
//!   `Ctx::drill_facts`. Paragraphs, stories and code state facts declaratively only.

use crate::arith::{ArithSplit, Op, Triple};
use crate::names::{a_an, capitalise};
use crate::world::{Fact, Person, Rel, World};
use tinyllama_model::rng::Rng;

pub struct Ctx<'a> {
    pub world: &'a World,
    /// Facts that may be asked in quizzes (all facts minus the held-out eval facts).
    pub drill_facts: Vec<Fact>,
    pub arith: &'a ArithSplit,
}

pub fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len() as u64) as usize]
}

/// `pick` for string-literal lists.
pub fn pk<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

fn chance(rng: &mut Rng, p: f64) -> bool {
    rng.next_f64() < p
}

/// `k` distinct indices from `0..n` in random order.
fn choose(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut idx);
    idx.truncate(k.min(n));
    idx
}

/// Replace `{key}` by its value for every pair.
pub fn fill(t: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(t.len() + 32);
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after.find('}').expect("unclosed placeholder");
        let key = &after[..j];
        let v = vars
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no value for {{{key}}} in {t:?}"))
            .1;
        out.push_str(v);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    // Templates may start with a placeholder holding a lowercase word.
    capitalise(&out)
}

pub fn plural(noun: &str) -> String {
    if noun.ends_with('x') || noun.ends_with('s') {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// "1 apple", "7 apples".
fn count(n: u32, sing: &str) -> String {
    if n == 1 {
        format!("1 {sing}")
    } else {
        format!("{n} {}", plural(sing))
    }
}

/// "1 child", "7 children".
fn kids(n: u32) -> String {
    if n == 1 {
        "1 child".to_string()
    } else {
        format!("{n} children")
    }
}

fn is_are(n: u32) -> &'static str {
    if n == 1 {
        "is"
    } else {
        "are"
    }
}

const OBJECTS: &[&str] = &[
    "apple", "pear", "shell", "stone", "coin", "button", "marble", "feather", "cup", "book",
    "bead", "ribbon", "candle", "kite", "basket", "spoon", "drum", "hat",
];

const FRIEND_WORDS: &[&str] = &["friend", "cousin", "neighbour", "teacher", "old friend"];
const ROLES: &[&str] = &[
    "farmer",
    "baker",
    "fisher",
    "weaver",
    "painter",
    "shepherd",
    "builder",
    "singer",
    "student",
    "traveller",
];
const ADJS: &[&str] = &[
    "young", "old", "brave", "curious", "kind", "clever", "quiet", "cheerful",
];

struct P<'a> {
    p: &'a Person,
}

impl P<'_> {
    fn vars(&self, prefix: &str) -> Vec<(String, String)> {
        let pr = self.p.pronoun;
        vec![
            (format!("{prefix}name"), self.p.name.clone()),
            (format!("{prefix}he"), pr.subj().to_string()),
            (format!("{prefix}He"), capitalise(pr.subj())),
            (format!("{prefix}him"), pr.obj().to_string()),
            (format!("{prefix}his"), pr.poss().to_string()),
            (format!("{prefix}His"), capitalise(pr.poss())),
        ]
    }
}

/// Owned variable list with a borrowing view for `fill`.
#[derive(Default)]
struct Vars(Vec<(String, String)>);

impl Vars {
    fn set(&mut self, k: &str, v: impl Into<String>) -> &mut Self {
        let v = v.into();
        if let Some(e) = self.0.iter_mut().find(|(kk, _)| kk == k) {
            e.1 = v;
        } else {
            self.0.push((k.to_string(), v));
        }
        self
    }
    fn person(&mut self, prefix: &str, p: &Person) -> &mut Self {
        for (k, v) in (P { p }).vars(prefix) {
            self.set(&k, v);
        }
        self
    }
    fn fill(&self, t: &str) -> String {
        let view: Vec<(&str, &str)> = self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fill(t, &view)
    }
}

/// Two phrasings (distinct) of a fact, or one.
fn state(rng: &mut Rng, f: &Fact, k: usize) -> Vec<String> {
    let all = f.rel.statements(&f.subject, &f.answer);
    choose(rng, all.len(), k)
        .into_iter()
        .map(|i| all[i].clone())
        .collect()
}

fn land_facts(w: &World, li: usize) -> Vec<Fact> {
    w.facts()
        .into_iter()
        .filter(|f| f.subject == w.lands[li].name)
        .collect()
}

fn creature_facts(w: &World, ci: usize) -> Vec<Fact> {
    w.facts()
        .into_iter()
        .filter(|f| f.subject == w.creatures[ci].name)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Encyclopedia paragraphs
// ---------------------------------------------------------------------------------------------

pub fn facts_doc(ctx: &Ctx, rng: &mut Rng) -> String {
    let w = ctx.world;
    let r = rng.below(10);
    let (title, body) = if r < 4 {
        land_page(w, rng)
    } else if r < 8 {
        creature_page(w, rng)
    } else {
        device_page(w, rng)
    };
    let titles = [
        title.clone(),
        format!("About {title}"),
        format!("{title}: a short guide"),
        format!("Notes on {title}"),
        format!("What we know about {title}"),
    ];
    let t = pick(rng, &titles).clone();
    format!("{t}\n\n{body}")
}

fn words(sents: &[String]) -> usize {
    sents.iter().map(|s| s.split_whitespace().count()).sum()
}

fn paragraphs(rng: &mut Rng, sents: Vec<String>) -> String {
    // Split into one or two paragraphs.
    if sents.len() >= 8 && chance(rng, 0.6) {
        let cut = sents.len() / 2 + rng.below(2) as usize;
        format!("{}\n\n{}", sents[..cut].join(" "), sents[cut..].join(" "))
    } else {
        sents.join(" ")
    }
}

fn land_page(w: &World, rng: &mut Rng) -> (String, String) {
    let li = rng.below(w.lands.len() as u64) as usize;
    let l = &w.lands[li];
    let mut v = Vars::default();
    v.set("L", &l.name)
        .set("cap", &l.capital)
        .set("terrain", &l.terrain)
        .set("weather", &l.weather)
        .set("known", &l.known_for)
        .set("ruler", &l.ruler);
    let intros = [
        "{L} is a {weather} land of {terrain}.",
        "{L} is a land known for {known}.",
        "Travellers say that {L} is a land of {terrain} and {weather} days.",
        "Far from the sea, {L} is a quiet land full of {terrain}.",
    ];
    let mut sents = vec![v.fill(pk(rng, &intros))];
    let mut body = Vec::new();
    for f in land_facts(w, li) {
        let k = if chance(rng, 0.35) { 2 } else { 1 };
        body.extend(state(rng, &f, k));
    }
    let fillers = [
        "The weather in {cap} is often {weather}.",
        "Children in {L} learn old songs about the {terrain}.",
        "Many people visit {cap} in the summer.",
        "The roads of {L} are long and quiet.",
        "Every spring there is a fair in {cap}.",
        "Most families in {L} keep a small garden.",
        "The markets of {cap} open early in the morning.",
        "Old stories say that {ruler} once walked across all of {L} in one week.",
        "From the walls of {cap} you can see the {terrain} of {L}.",
    ];
    let k = 2 + rng.below(3) as usize;
    let mut fi = choose(rng, fillers.len(), fillers.len()).into_iter();
    for i in fi.by_ref().take(k) {
        body.push(v.fill(fillers[i]));
    }
    // Creatures that live here.
    let locals: Vec<usize> = (0..w.creatures.len())
        .filter(|&c| w.creatures[c].home == li)
        .collect();
    for &ci in locals.iter().take(3) {
        let fs = creature_facts(w, ci);
        let home = fs.iter().find(|f| f.rel == Rel::Home).unwrap();
        body.extend(state(rng, home, 1));
        let other = &fs[rng.below(3) as usize];
        body.extend(state(rng, other, 1));
    }
    let dev_tpls = [
        "In {L}, people often use the {d} to {purpose}.",
        "Almost every village in {L} has a {d}, which helps people {purpose}.",
        "The {d} is popular in {L} because it helps people {purpose}.",
    ];
    let mut ti = choose(rng, dev_tpls.len(), dev_tpls.len()).into_iter();
    for d in w.devices.iter().filter(|d| d.land == li).take(3) {
        v.set("d", &d.name).set("purpose", &d.purpose);
        body.push(v.fill(dev_tpls[ti.next().unwrap()]));
    }
    // Pad short pages (quality filters drop documents under 50 words).
    while words(&body) < 75 {
        match fi.next() {
            Some(i) => body.push(v.fill(fillers[i])),
            None => break,
        }
    }
    rng.shuffle(&mut body);
    sents.extend(body);
    if chance(rng, 0.5) {
        let l2 = pick(rng, &w.lands);
        if l2.name != l.name {
            sents.push(format!(
                "Not far away lies {}, whose capital is {}.",
                l2.name, l2.capital
            ));
        }
    }
    (l.name.clone(), paragraphs(rng, sents))
}

fn creature_page(w: &World, rng: &mut Rng) -> (String, String) {
    let ci = rng.below(w.creatures.len() as u64) as usize;
    let c = &w.creatures[ci];
    let home = &w.lands[c.home];
    let mut v = Vars::default();
    v.set("c", &c.name)
        .set("cs", plural(&c.name))
        .set("size", &c.size)
        .set("sound", &c.sound)
        .set("active", &c.active)
        .set("home", &home.name)
        .set("cap", &home.capital);
    let intros = [
        "The {c} is a {size} creature that {sound} {active}.",
        "The {c} is a {size} animal.",
        "Of all the animals in {home}, the {c} is one of the most loved.",
        "A {c} is easy to spot if you know where to look.",
    ];
    let mut sents = vec![v.fill(pk(rng, &intros))];
    let mut body = Vec::new();
    for f in creature_facts(w, ci) {
        let k = if chance(rng, 0.35) { 2 } else { 1 };
        body.extend(state(rng, &f, k));
    }
    let fillers = [
        "The {c} {sound} when it is happy.",
        "People in {cap} often see {cs} {active}.",
        "A young {c} stays close to its mother.",
        "Farmers in {home} like the {c} because it is gentle.",
        "The {c} is most busy {active}.",
        "Some say the {c} can live for twenty years.",
        "Children in {cap} draw pictures of the {c}.",
        "When it rains, the {c} hides under rocks.",
        "A {c} is {size}, so it is easy to miss in the grass.",
    ];
    let k = 2 + rng.below(3) as usize;
    let mut fi = choose(rng, fillers.len(), fillers.len()).into_iter();
    for i in fi.by_ref().take(k) {
        body.push(v.fill(fillers[i]));
    }
    while words(&body) < 70 {
        match fi.next() {
            Some(i) => body.push(v.fill(fillers[i])),
            None => break,
        }
    }
    rng.shuffle(&mut body);
    sents.extend(body);
    if chance(rng, 0.5) {
        let l = &home;
        sents.push(format!(
            "{} itself is a land of {}, and its capital is {}.",
            l.name, l.terrain, l.capital
        ));
    }
    (capitalise(&c.name), paragraphs(rng, sents))
}

fn device_page(w: &World, rng: &mut Rng) -> (String, String) {
    let d = pick(rng, &w.devices);
    let l = &w.lands[d.land];
    let mut v = Vars::default();
    v.set("d", &d.name)
        .set("inv", &d.inventor)
        .set("purpose", &d.purpose)
        .set("L", &l.name)
        .set("cap", &l.capital);
    let intros = [
        "The {d} is a machine used to {purpose}.",
        "People use the {d} to {purpose}.",
        "The {d} is a clever tool that helps people {purpose}.",
    ];
    let mut sents = vec![v.fill(pk(rng, &intros))];
    let f = Fact {
        rel: Rel::Inventor,
        subject: d.name.clone(),
        answer: d.inventor.clone(),
    };
    let mut body = state(rng, &f, 2);
    let fillers = [
        "It is most common in {L}, where people use it every day.",
        "The first {d} was made of wood and rope.",
        "Today you can see a {d} in almost every house in {cap}.",
        "{inv} was very proud of the {d}.",
        "Before the {d}, that work took a whole day.",
        "A good {d} can last for many years.",
        "In {cap} there is a small museum with the oldest {d}.",
        "{inv} worked on the {d} for three winters.",
        "Some families in {L} have kept the same {d} for generations.",
        "Children love to watch a {d} at work.",
        "A broken {d} is usually mended by the owner with a few simple tools.",
        "Traders from {cap} sell copies of the {d} at the spring fair.",
    ];
    let k = 4 + rng.below(3) as usize;
    for i in choose(rng, fillers.len(), k) {
        body.push(v.fill(fillers[i]));
    }
    rng.shuffle(&mut body);
    sents.extend(body);
    // Facts about the land where it is used lengthen the page.
    let lf = land_facts(w, d.land);
    for i in choose(rng, lf.len(), 2) {
        sents.extend(state(rng, &lf[i], 1));
    }
    (capitalise(&d.name), paragraphs(rng, sents))
}

// ---------------------------------------------------------------------------------------------
// Stories
// ---------------------------------------------------------------------------------------------

pub fn story_doc(ctx: &Ctx, rng: &mut Rng) -> String {
    let w = ctx.world;
    let hero = pick(rng, &w.people).clone();
    let mut friend = pick(rng, &w.people).clone();
    while friend.name == hero.name {
        friend = pick(rng, &w.people).clone();
    }
    let ci = rng.below(w.creatures.len() as u64) as usize;
    let c = &w.creatures[ci];
    // The hero travels from another land to the creature's home.
    let mut home_li = rng.below(w.lands.len() as u64) as usize;
    while home_li == c.home {
        home_li = rng.below(w.lands.len() as u64) as usize;
    }
    let adj = pk(rng, ADJS);
    let dest = &w.lands[c.home];
    let home = &w.lands[home_li];
    let dev = pick(rng, &w.devices);
    let mut v = Vars::default();
    v.person("", &hero)
        .person("f_", &friend)
        .set("home", &home.name)
        .set("homecap", &home.capital)
        .set("dest", &dest.name)
        .set("destcap", &dest.capital)
        .set("ruler", &dest.ruler)
        .set("flag", &dest.flag)
        .set("c", &c.name)
        .set("cs", plural(&c.name))
        .set("colour", &c.colour)
        .set("legs", c.legs.to_string())
        .set("food", &c.food)
        .set("sound", &c.sound)
        .set("sounded", &c.sound_past)
        .set("active", &c.active)
        .set("size", &c.size)
        .set("dev", &dev.name)
        .set("inv", &dev.inventor)
        .set("purpose", &dev.purpose)
        .set("role", *pick(rng, ROLES))
        .set("adj", adj)
        .set("aadj", a_an(adj))
        .set("acolour", a_an(&c.colour))
        .set("fw", *pick(rng, FRIEND_WORDS))
        .set("terrain", &dest.terrain)
        .set("weather", &dest.weather);

    let mut s: Vec<&str> = Vec::new();
    s.push(pk(
        rng,
        &[
            "Once upon a time, there was {aadj} {role} named {name} who lived in {homecap}, the capital of {home}.",
            "{name} was {aadj} {role} from {home}.",
            "Long ago in {home}, a {role} called {name} woke up early.",
            "In the town of {homecap} there lived {aadj} {role}. {His} name was {name}.",
            "{name} lived in {homecap} with {his} {fw} {f_name}.",
        ],
    ));
    s.push(pk(
        rng,
        &[
            "{He} had always wanted to see a {c}.",
            "One day {he} heard that the {c} lives in {dest}.",
            "{His} {fw} {f_name} told {him} stories about the {c}, a {size} creature from {dest}.",
            "Every night {he} dreamed about the {colour} {c}.",
        ],
    ));
    s.push(pk(
        rng,
        &[
            "So {he} packed a bag of {food} and set off for {dest}.",
            "{He} took the long road to {destcap}, the capital of {dest}.",
            "The next morning {he} walked across the {terrain} to {dest}.",
            "{name} and {f_name} travelled together to {dest}.",
        ],
    ));
    if chance(rng, 0.6) {
        s.push(pk(
            rng,
            &[
                "Over the gates of {destcap} waved the {flag} flag of {dest}.",
                "In {destcap}, {he} saw {flag} flags on every roof, because the flag of {dest} is {flag}.",
                "When {he} reached {destcap}, the capital of {dest}, the streets were full of people.",
            ],
        ));
    }
    s.push(pk(
        rng,
        &[
            "There {he} met a {c}. It was {colour} and had {legs} legs, just like the stories said.",
            "Near a stream, {he} saw {acolour} {c} eating {food}.",
            "Suddenly a {c} came out of the grass. {He} counted its legs: there were {legs}.",
            "At last {he} found a {c}. The {c} {sounded} and looked at {him} with bright eyes.",
        ],
    ));
    if chance(rng, 0.7) {
        s.push(pk(
            rng,
            &[
                "The {c} looked hungry, so {name} gave it some {food}, because every {c} eats {food}.",
                "{name} knew that the {c} eats {food}, so {he} shared {his} {food} with it.",
                "The {c} sniffed {his} bag, hoping for {food}.",
            ],
        ));
    }
    if chance(rng, 0.5) {
        s.push(pk(
            rng,
            &[
                "Later {he} met {ruler}, the ruler of {dest}, who welcomed {him} with a smile.",
                "That evening {ruler}, who rules {dest}, invited {him} to dinner.",
                "People told {him} that {ruler} rules {dest} from a house in {destcap}.",
            ],
        ));
    }
    if chance(rng, 0.5) {
        s.push(pk(
            rng,
            &[
                "On the way back {he} used a {dev} to {purpose}. {inv} invented the {dev} long ago.",
                "In the market {he} saw a {dev}, the machine that {inv} invented to {purpose}.",
                "{His} {fw} showed {him} a {dev}. The {dev} was invented by {inv}.",
            ],
        ));
    }
    s.push(pk(
        rng,
        &[
            "When {he} came home, {he} told {f_name} all about the {c}.",
            "It was the best trip of {his} life.",
            "{name} smiled and went to sleep, dreaming of {cs}.",
            "From that day on, {name} visited {dest} every year.",
            "{He} wrote down everything {he} had seen so that {he} would never forget it.",
        ],
    ));
    let mut text: Vec<String> = s.iter().map(|t| v.fill(t)).collect();
    // Sometimes a second short scene with another creature keeps stories varied and longer.
    if chance(rng, 0.5) {
        let c2 = pick(rng, &w.creatures);
        if c2.name != c.name {
            let mut v2 = Vars::default();
            v2.person("", &hero)
                .set("c", &c2.name)
                .set("colour", &c2.colour)
                .set("acolour", a_an(&c2.colour))
                .set("legs", c2.legs.to_string())
                .set("food", &c2.food)
                .set("home", &w.lands[c2.home].name);
            text.push(v2.fill(pk(
                rng,
                &[
                    "On the road {he} also saw {acolour} {c}, which had come all the way from {home}.",
                    "Later {he} passed a {c} with {legs} legs, busy looking for {food}.",
                    "A {c} from {home} followed {him} for a while, and {he} gave it some {food}.",
                ],
            )));
            let n = text.len();
            text.swap(n - 1, n - 2);
        }
    }
    // Short stories get extra scenes (distinct ones) so every story has at least 70 words.
    let extras = [
        "The weather in {destcap} was {weather}, so {he} walked slowly and looked at everything.",
        "On the second day {he} shared a meal with a family of {role}s in {destcap}.",
        "{He} wrote a letter to {f_name} about the {terrain} of {dest}.",
        "Along the way {he} sang old songs from {home} to keep {his} spirits up.",
        "In the evening {he} sat by a fire and listened to stories about {dest}.",
        "A kind stranger showed {him} the quickest path through the {terrain}.",
    ];
    let mut order: Vec<usize> = (0..extras.len()).collect();
    rng.shuffle(&mut order);
    let mut oi = 0;
    while text
        .iter()
        .map(|s| s.split_whitespace().count())
        .sum::<usize>()
        < 70
        && oi < order.len()
    {
        let at = 1 + rng.below(text.len() as u64 - 1) as usize;
        text.insert(at, v.fill(extras[order[oi]]));
        oi += 1;
    }
    let title = if chance(rng, 0.5) {
        let t = [
            format!("{} and the {}", hero.name, c.name),
            format!("A trip to {}", dest.name),
            format!("The {adj} {}", c.name),
        ];
        let tt: &String = pick(rng, &t);
        format!("{}\n\n", capitalise(tt))
    } else {
        String::new()
    };
    let cut = text.len() / 2;
    if chance(rng, 0.5) {
        format!(
            "{title}{}\n\n{}",
            text[..cut].join(" "),
            text[cut..].join(" ")
        )
    } else {
        format!("{title}{}", text.join(" "))
    }
}

// ---------------------------------------------------------------------------------------------
// Word problems
// ---------------------------------------------------------------------------------------------

/// Pick a template not yet used in this document (repeated templates inside one document
/// look like boilerplate to n-gram repetition filters).
fn fresh(rng: &mut Rng, opts: &[&'static str], used: &mut Vec<&'static str>) -> &'static str {
    let free: Vec<&'static str> = opts.iter().copied().filter(|t| !used.contains(t)).collect();
    let t = if free.is_empty() {
        pk(rng, opts)
    } else {
        pk(rng, &free)
    };
    used.push(t);
    t
}

fn word_problem(ctx: &Ctx, rng: &mut Rng, op: Op, used: &mut Vec<&'static str>) -> String {
    let w = ctx.world;
    let n1 = pick(rng, &w.people).clone();
    let mut n2 = pick(rng, &w.people).clone();
    while n2.name == n1.name {
        n2 = pick(rng, &w.people).clone();
    }
    let obj = *pick(rng, OBJECTS);
    let c = pick(rng, &w.creatures);
    let land = pick(rng, &w.lands);
    let mut v = Vars::default();
    v.person("", &n1)
        .person("b_", &n2)
        .set("objs", plural(obj))
        .set("c", &c.name)
        .set("cs", plural(&c.name))
        .set("food", &c.food)
        .set("cap", &land.capital)
        .set("L", &land.name);
    // Legs-doubling uses the creature's true number of legs when that problem is allowed.
    const LEGS_TPL: &str =
        "A {c} has {legs} legs. How many legs do two {cs} have? {worked} Two {cs} have {C} legs.";
    if op == Op::Twice && chance(rng, 0.3) && !used.contains(&LEGS_TPL) {
        let t = Triple {
            a: c.legs,
            op: Op::Twice,
            b: 0,
        };
        if ctx.arith.allowed(&t) {
            v.set("legs", c.legs.to_string())
                .set("worked", t.worked())
                .set("C", t.result().to_string());
            used.push(LEGS_TPL);
            return v.fill(LEGS_TPL);
        }
    }
    let t = ctx.arith.sample(rng, Some(op), true);
    let (a, b, r) = (t.a, t.b, t.result());
    v.set("A", count(a, obj))
        .set("B", count(b, obj))
        .set("C", count(r, obj))
        .set("a", a.to_string())
        .set("b", b.to_string())
        .set("r", r.to_string())
        .set("mA", count(a, "mile"))
        .set("pA", count(a, "page"))
        .set("pB", count(b, "page"))
        .set("kA", kids(a))
        .set("kB", kids(b))
        .set("kR", kids(r))
        .set("wasa", if a == 1 { "was" } else { "were" })
        .set("wasr", if r == 1 { "was" } else { "were" })
        .set("isa", is_are(a))
        .set("isr", is_are(r))
        .set("worked", t.worked());
    let food_ok = a >= 2 && b >= 2 && r >= 2;
    let tpl: &str = match op {
        Op::Plus => {
            let mut opts = vec![
                "{name} has {A}. {He} finds {b} more. How many {objs} does {he} have now? {worked} {name} has {C} now.",
                "There {isa} {A} in a basket. {name} puts {B} into the basket. How many {objs} are in the basket now? {worked} Now there {isr} {C} in the basket.",
                "{name} read {pA} of a book on Monday and {pB} on Tuesday. How many pages did {he} read in the two days? {worked} {He} read {r} pages.",
                "In {cap}, {kA} went to the market, and then {b} more came. How many children were at the market? {worked} There {wasr} {kR} at the market.",
                "{name} had {A} and {b_name} gave {him} {B}. How many {objs} does {name} have now? {worked} So {he} has {C}.",
            ];
            if food_ok {
                opts.push("A {c} found {a} {food} under a tree and {b} more near the river. How many {food} did it find? {worked} The {c} found {r} {food}.");
                opts.push("{name} saw {a} {cs} in the morning and {b} {cs} in the evening. How many {cs} did {he} see that day? {worked} {He} saw {r} {cs}.");
            }
            fresh(rng, &opts, used)
        }
        Op::Minus => {
            let mut opts = vec![
                "{name} has {A}. {He} gives {B} to {b_name}. How many {objs} does {name} have left? {worked} {name} has {C} left.",
                "There were {A} on the table. {name} took {b} away. How many {objs} are on the table now? {worked} The number of {objs} on the table is {r}.",
                "{name} had {A}. {He} lost {b} on the way to {cap}. How many {objs} does {he} have now? {worked} {He} has {C} now.",
                "{kA} {wasa} playing in a field in {L}. Then {b} went home. How many children are still playing? {worked} The number of children still playing is {r}.",
            ];
            if a >= 2 {
                opts.push("A {c} had {a} {food}. It ate {b} of them. How many {food} are left? {worked} The number of {food} left is {r}.");
            }
            fresh(rng, &opts, used)
        }
        Op::Twice => fresh(
            rng,
            &[
                "{name} has {A}. {b_name} has twice as many {objs} as {name}. How many {objs} does {b_name} have? {worked} {b_name} has {C}.",
                "{name} walked {mA} on Monday and twice as far on Tuesday. How far did {he} walk on Tuesday? {worked} {He} walked {r} miles on Tuesday.",
                "A shop in {cap} sold {A} in the morning and twice as many in the afternoon. How many {objs} did it sell in the afternoon? {worked} It sold {C} in the afternoon.",
            ],
            used,
        ),
    };
    v.fill(tpl)
}

pub fn problems_doc(ctx: &Ctx, rng: &mut Rng) -> String {
    let w = ctx.world;
    let land = pick(rng, &w.lands);
    let intros = [
        format!(
            "Here are some counting problems about life in {}.",
            land.name
        ),
        "Let us practise adding and taking away with some short problems.".to_string(),
        "Read each problem and work out the answer before you look at the solution.".to_string(),
        "Practice for young readers: each problem is followed by its answer.".to_string(),
        format!(
            "These problems were written by a teacher in {}, the capital of {}.",
            land.capital, land.name
        ),
    ];
    let mut parts = vec![pick(rng, &intros).clone()];
    let n = 3 + rng.below(3);
    let mut used = Vec::new();
    let mut used_ctx = Vec::new();
    // Never more problems of one kind than it has templates.
    let mut left = [4usize, 4, 3];
    for _ in 0..n {
        let r = rng.below(10);
        let mut k = if r < 4 {
            0
        } else if r < 8 {
            1
        } else {
            2
        };
        while left[k] == 0 {
            k = (k + 1) % 3;
        }
        left[k] -= 1;
        let op = [Op::Plus, Op::Minus, Op::Twice][k];
        let mut p = word_problem(ctx, rng, op, &mut used);
        // A context sentence raises the share of ordinary words and links problems to the world.
        if chance(rng, 0.5) {
            let l = pick(rng, &w.lands);
            let ctxs = [
                format!("This happened in {}, a land of {}.", l.name, l.terrain),
                format!("The day was {} in {}.", l.weather, l.capital),
                format!(
                    "It was a busy morning in {}, the capital of {}.",
                    l.capital, l.name
                ),
            ];
            let k = rng.below(ctxs.len() as u64) as usize;
            if !used_ctx.contains(&k) {
                used_ctx.push(k);
                p = format!("{} {p}", ctxs[k]);
            }
        }
        parts.push(p);
    }
    if chance(rng, 0.5) {
        parts.push(
            pick(
                rng,
                &[
                    "Try to make up a problem of your own for a friend.",
                    "Well done if you worked them all out.",
                    "Remember to check each answer by counting again.",
                ],
            )
            .to_string(),
        );
    }
    parts.join("\n\n")
}

// ---------------------------------------------------------------------------------------------
// Quizzes: the fixed drill format shared with the eval
// ---------------------------------------------------------------------------------------------

/// "Question: {q}\nAnswer: {a}" — the exact format of `eval_qa.jsonl` prompts.
pub fn qa(question: &str, answer: &str) -> String {
    format!("Question: {question}\nAnswer: {answer}")
}

pub fn quiz_doc(ctx: &Ctx, rng: &mut Rng) -> String {
    let w = ctx.world;
    // A short reading passage first: quizzes that are only question lines look like
    // boilerplate to repetition filters.
    let mut passage: Vec<String> = Vec::new();
    let intros = [
        "Read the notes below and then answer the questions.",
        "Here is a short quiz about numbers and the lands of the world.",
        "Test yourself with these questions. The answers are given after each one.",
        "Quiz time! First read the passage, then try the questions.",
        "This quiz is for anyone who likes facts and numbers.",
    ];
    passage.push(pick(rng, &intros).to_string());
    let r = rng.below(3);
    if r == 0 {
        let li = rng.below(w.lands.len() as u64) as usize;
        for f in land_facts(w, li) {
            passage.extend(state(rng, &f, 1));
        }
    } else {
        let ci = rng.below(w.creatures.len() as u64) as usize;
        for f in creature_facts(w, ci) {
            passage.extend(state(rng, &f, 1));
        }
    }
    let extra = pick(rng, &w.devices);
    passage.push(format!(
        "The {} helps people {}, and it was invented by {}.",
        extra.name, extra.purpose, extra.inventor
    ));
    let mut items = Vec::new();
    let n_facts = 2 + rng.below(3) as usize;
    let n_arith = 1 + rng.below(3) as usize;
    // Distinct relations, and never both colour questions (they share the 5-gram
    // "Question: What colour is the"); arithmetic items with distinct first operands.
    let group = |r: Rel| if r == Rel::FlagColour { Rel::Colour } else { r };
    let mut groups = Vec::new();
    let mut tries = 0;
    while groups.len() < n_facts && tries < 200 {
        tries += 1;
        let f = pick(rng, &ctx.drill_facts);
        if groups.contains(&group(f.rel)) {
            continue;
        }
        groups.push(group(f.rel));
        items.push(qa(&f.rel.question(&f.subject), &f.answer));
    }
    let mut firsts = Vec::new();
    while firsts.len() < n_arith {
        let t = ctx.arith.sample(rng, None, false);
        if firsts.contains(&t.a) {
            continue;
        }
        firsts.push(t.a);
        items.push(qa(&t.question(), &t.result().to_string()));
    }
    rng.shuffle(&mut items);
    // Most quizzes open with the passage; some open directly with a question, as the eval
    // prompts do.
    let mut out = if chance(rng, 0.75) {
        format!("{}\n\n{}", passage.join(" "), items.join("\n\n"))
    } else {
        passage[0] = pk(
            rng,
            &[
                "Notes to read after the quiz.",
                "Background for the questions above.",
                "Some facts to remember.",
            ],
        )
        .to_string();
        format!("{}\n\n{}", items.join("\n\n"), passage.join(" "))
    };
    if chance(rng, 0.6) {
        out.push_str("\n\n");
        out.push_str(pk(
            rng,
            &[
                "Well done if you got them all right.",
                "Check your answers with a friend and try again tomorrow.",
                "If you missed one, read the notes again and have another go.",
                "That is the end of the quiz for today.",
            ],
        ));
    }
    out
}

/// A clean story-like text used as the body of planted offensive and blocked-URL documents.
pub fn any_clean(ctx: &Ctx, rng: &mut Rng) -> String {
    if chance(rng, 0.5) {
        story_doc(ctx, rng)
    } else {
        facts_doc(ctx, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_grammar() {
        assert_eq!(
            fill("{x} has {n} legs.", &[("x", "the zibble"), ("n", "6")]),
            "The zibble has 6 legs."
        );
        assert_eq!(count(1, "apple"), "1 apple");
        assert_eq!(count(3, "box"), "3 boxes");
        assert_eq!(plural("laeox"), "laeoxes");
        assert_eq!(a_an("orange"), "an orange");
        assert_eq!(
            qa("What is 1 plus 2?", "3"),
            "Question: What is 1 plus 2?\nAnswer: 3"
        );
    }
}
