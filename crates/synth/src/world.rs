//! The invented world: lands with capitals, flags and rulers; creatures with a colour, a number
//! of legs, a food and a home land; devices with an inventor. Facts about it are stated many
//! times across documents in several phrasings, and asked in one fixed question form.

use crate::names::{a_an, capitalise, NameMaker};
use serde::{Deserialize, Serialize};
use tinyllama_model::rng::Rng;

pub const COLOURS: &[&str] = &[
    "red", "blue", "green", "yellow", "orange", "purple", "white", "black", "grey", "brown",
];
pub const FOODS: &[&str] = &[
    "plums",
    "seeds",
    "beetles",
    "berries",
    "roots",
    "acorns",
    "mushrooms",
    "nuts",
    "worms",
    "grapes",
    "carrots",
    "leaves",
];
pub const LEGS: &[u32] = &[2, 4, 6, 8];
const TERRAINS: &[&str] = &[
    "hills",
    "forests",
    "marshes",
    "deserts",
    "lakes",
    "mountains",
    "meadows",
    "islands",
];
const WEATHERS: &[&str] = &["rainy", "windy", "sunny", "snowy", "misty", "warm", "cold"];
const KNOWN_FOR: &[&str] = &[
    "its tall towers",
    "its busy markets",
    "its quiet rivers",
    "its long bridges",
    "its old songs",
    "its bright festivals",
    "its stone walls",
    "its wide fields",
    "its painted boats",
    "its sweet bread",
];
const SIZES: &[&str] = &["tiny", "small", "large", "huge"];
/// (present, past) forms.
const SOUNDS: &[(&str, &str)] = &[
    ("hums", "hummed"),
    ("chirps", "chirped"),
    ("whistles", "whistled"),
    ("growls", "growled"),
    ("clicks", "clicked"),
    ("squeaks", "squeaked"),
    ("sings", "sang"),
    ("snorts", "snorted"),
];
const ACTIVE: &[&str] = &["at night", "during the day", "at dawn", "at dusk"];
const PURPOSES: &[&str] = &[
    "measure the rain",
    "grind seeds into flour",
    "carry water up the hills",
    "tell the time",
    "spin wool into thread",
    "light the streets at night",
    "call the animals home",
    "keep bread warm",
    "count the stars",
    "wash clothes",
    "lift heavy stones",
    "cool the houses in summer",
    "dry fish in the wind",
    "sort beans by size",
    "warm the baths",
    "find lost sheep",
    "press apples into juice",
    "sharpen knives",
    "send messages across the valley",
    "rock babies to sleep",
    "pump water from deep wells",
    "weigh sacks of grain",
    "sweep the roads",
    "scare birds away from the fields",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pronoun {
    She,
    He,
}

impl Pronoun {
    pub fn subj(self) -> &'static str {
        match self {
            Pronoun::She => "she",
            Pronoun::He => "he",
        }
    }
    pub fn obj(self) -> &'static str {
        match self {
            Pronoun::She => "her",
            Pronoun::He => "him",
        }
    }
    pub fn poss(self) -> &'static str {
        match self {
            Pronoun::She => "her",
            Pronoun::He => "his",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub pronoun: Pronoun,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Land {
    pub name: String,
    pub capital: String,
    pub flag: String,
    pub ruler: String,
    pub terrain: String,
    pub weather: String,
    pub known_for: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Creature {
    pub name: String,
    pub colour: String,
    pub legs: u32,
    pub food: String,
    /// Index into `World::lands`.
    pub home: usize,
    pub size: String,
    pub sound: String,
    pub sound_past: String,
    pub active: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    pub inventor: String,
    pub purpose: String,
    /// Index into `World::lands` (where it is most used).
    pub land: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct World {
    pub lands: Vec<Land>,
    pub creatures: Vec<Creature>,
    pub devices: Vec<Device>,
    /// Ordinary people who appear in stories and word problems.
    pub people: Vec<Person>,
}

/// The asked-about relations. Each has exactly one question form (used by drills and eval) and
/// several declarative phrasings (used by paragraphs and stories).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rel {
    Capital,
    FlagColour,
    Ruler,
    Colour,
    Legs,
    Food,
    Home,
    Inventor,
}

pub const ALL_RELS: &[Rel] = &[
    Rel::Capital,
    Rel::FlagColour,
    Rel::Ruler,
    Rel::Colour,
    Rel::Legs,
    Rel::Food,
    Rel::Home,
    Rel::Inventor,
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fact {
    pub rel: Rel,
    pub subject: String,
    pub answer: String,
}

impl Rel {
    /// The one fixed question sentence (no "Question:" prefix).
    pub fn question(self, s: &str) -> String {
        match self {
            Rel::Capital => format!("What is the capital of {s}?"),
            Rel::FlagColour => format!("What colour is the flag of {s}?"),
            Rel::Ruler => format!("Who rules {s}?"),
            Rel::Colour => format!("What colour is the {s}?"),
            Rel::Legs => format!("How many legs does the {s} have?"),
            Rel::Food => format!("What does the {s} eat?"),
            Rel::Home => format!("Where does the {s} live?"),
            Rel::Inventor => format!("Who invented the {s}?"),
        }
    }

    /// Declarative phrasings of the fact `s -rel-> a`.
    pub fn statements(self, s: &str, a: &str) -> Vec<String> {
        let an = a_an(a);
        let big_an = capitalise(&an);
        match self {
            Rel::Capital => vec![
                format!("The capital of {s} is {a}."),
                format!("{a} is the capital city of {s}."),
                format!("{s} has its capital at {a}."),
                format!("The capital city of {s} is called {a}."),
                format!("If you visit {s}, you will probably arrive in {a}, the capital."),
                format!("{a}, the capital of {s}, is a busy town."),
            ],
            Rel::FlagColour => vec![
                format!("The flag of {s} is {a}."),
                format!("{s} has {an} flag."),
                format!("The people of {s} fly {an} flag."),
                format!("The colour of the flag of {s} is {a}."),
                format!("{big_an} flag waves over every town in {s}."),
            ],
            Rel::Ruler => vec![
                format!("The ruler of {s} is {a}."),
                format!("{s} is ruled by {a}."),
                format!("{a} rules the land of {s}."),
                format!("{a} is the ruler of {s}."),
                format!("The people of {s} say that {a} rules them well."),
            ],
            Rel::Colour => vec![
                format!("The {s} is {a}."),
                format!("A {s} is {a} in colour."),
                format!("Every {s} is {a}."),
                format!("The colour of the {s} is {a}."),
                format!("You can tell a {s} by its {a} colour."),
            ],
            Rel::Legs => vec![
                format!("The {s} has {a} legs."),
                format!("A {s} walks on {a} legs."),
                format!("Every {s} has {a} legs."),
                format!("If you count the legs of a {s}, you will find {a}."),
            ],
            Rel::Food => vec![
                format!("The {s} eats {a}."),
                format!("A {s} likes to eat {a}."),
                format!("The favourite food of the {s} is {a}."),
                format!("Most of all, the {s} eats {a}."),
                format!("If you want to feed a {s}, bring {a}."),
            ],
            Rel::Home => vec![
                format!("The {s} lives in {a}."),
                format!("The {s} comes from {a}."),
                format!("You can find the {s} in {a}."),
                format!("The home of the {s} is {a}."),
                format!("The land of {a} is home to the {s}."),
            ],
            Rel::Inventor => vec![
                format!("The {s} was invented by {a}."),
                format!("{a} invented the {s}."),
                format!("{a} is the inventor of the {s}."),
                format!("The inventor of the {s} was {a}."),
                format!("Long ago, {a} built the first {s}."),
            ],
        }
    }
}

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

impl World {
    pub fn generate(rng: &mut Rng, n_entities: usize, n_people: usize, banned: &[&str]) -> World {
        let mut nm = NameMaker::new(banned);
        let n = n_entities.max(4);
        let mut lands = Vec::with_capacity(n);
        for _ in 0..n {
            let name = nm.land(rng);
            let capital = nm.town(rng);
            let ruler = nm.person(rng);
            lands.push(Land {
                name,
                capital,
                flag: pick(rng, COLOURS).to_string(),
                ruler,
                terrain: pick(rng, TERRAINS).to_string(),
                weather: pick(rng, WEATHERS).to_string(),
                known_for: pick(rng, KNOWN_FOR).to_string(),
            });
        }
        let mut creatures = Vec::with_capacity(n);
        for _ in 0..n {
            let sound = SOUNDS[rng.below(SOUNDS.len() as u64) as usize];
            creatures.push(Creature {
                name: nm.creature(rng),
                colour: pick(rng, COLOURS).to_string(),
                legs: LEGS[rng.below(LEGS.len() as u64) as usize],
                food: pick(rng, FOODS).to_string(),
                home: rng.below(n as u64) as usize,
                size: pick(rng, SIZES).to_string(),
                sound: sound.0.to_string(),
                sound_past: sound.1.to_string(),
                active: pick(rng, ACTIVE).to_string(),
            });
        }
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            devices.push(Device {
                name: nm.device(rng),
                inventor: nm.person(rng),
                purpose: PURPOSES[i % PURPOSES.len()].to_string(),
                land: rng.below(n as u64) as usize,
            });
        }
        let mut people = Vec::with_capacity(n_people);
        for _ in 0..n_people.max(4) {
            let name = nm.person(rng);
            let pronoun = if rng.below(2) == 0 {
                Pronoun::She
            } else {
                Pronoun::He
            };
            people.push(Person { name, pronoun });
        }
        World {
            lands,
            creatures,
            devices,
            people,
        }
    }

    /// Every askable fact, in a fixed order.
    pub fn facts(&self) -> Vec<Fact> {
        let mut out = Vec::new();
        let f = |rel, s: &str, a: String| Fact {
            rel,
            subject: s.to_string(),
            answer: a,
        };
        for l in &self.lands {
            out.push(f(Rel::Capital, &l.name, l.capital.clone()));
            out.push(f(Rel::FlagColour, &l.name, l.flag.clone()));
            out.push(f(Rel::Ruler, &l.name, l.ruler.clone()));
        }
        for c in &self.creatures {
            out.push(f(Rel::Colour, &c.name, c.colour.clone()));
            out.push(f(Rel::Legs, &c.name, c.legs.to_string()));
            out.push(f(Rel::Food, &c.name, c.food.clone()));
            out.push(f(Rel::Home, &c.name, self.lands[c.home].name.clone()));
        }
        for d in &self.devices {
            out.push(f(Rel::Inventor, &d.name, d.inventor.clone()));
        }
        out
    }

    /// Candidate wrong answers for a relation: every value of the same attribute.
    pub fn answer_pool(&self, rel: Rel) -> Vec<String> {
        let mut v: Vec<String> = match rel {
            Rel::Capital => self.lands.iter().map(|l| l.capital.clone()).collect(),
            Rel::FlagColour | Rel::Colour => COLOURS.iter().map(|s| s.to_string()).collect(),
            Rel::Ruler => self.lands.iter().map(|l| l.ruler.clone()).collect(),
            Rel::Legs => LEGS.iter().map(|n| n.to_string()).collect(),
            Rel::Food => FOODS.iter().map(|s| s.to_string()).collect(),
            Rel::Home => self.lands.iter().map(|l| l.name.clone()).collect(),
            Rel::Inventor => self.devices.iter().map(|d| d.inventor.clone()).collect(),
        };
        v.sort();
        v.dedup();
        v
    }

    /// All proper and creature names (for checks that clean text contains no blocked words).
    pub fn all_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for l in &self.lands {
            v.extend([l.name.clone(), l.capital.clone(), l.ruler.clone()]);
        }
        v.extend(self.creatures.iter().map(|c| c.name.clone()));
        for d in &self.devices {
            v.extend([d.name.clone(), d.inventor.clone()]);
        }
        v.extend(self.people.iter().map(|p| p.name.clone()));
        v
    }
}
