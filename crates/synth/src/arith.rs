//! Small-number arithmetic: the universe of problems and the held-out split.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tinyllama_model::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Plus,
    Minus,
    /// Unary: `twice a`; `b` is 0 and ignored.
    Twice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Triple {
    pub a: u32,
    pub op: Op,
    pub b: u32,
}

impl Triple {
    pub fn result(&self) -> u32 {
        match self.op {
            Op::Plus => self.a + self.b,
            Op::Minus => self.a - self.b,
            Op::Twice => 2 * self.a,
        }
    }

    /// The phrase used in drills, eval questions and worked steps: "7 plus 5", "twice 6".
    pub fn phrase(&self) -> String {
        match self.op {
            Op::Plus => format!("{} plus {}", self.a, self.b),
            Op::Minus => format!("{} minus {}", self.a, self.b),
            Op::Twice => format!("twice {}", self.a),
        }
    }

    /// The fixed drill/eval question sentence (no "Question:" prefix).
    pub fn question(&self) -> String {
        format!("What is {}?", self.phrase())
    }

    /// "7 plus 5 is 12." / "Twice 6 is 12."
    pub fn worked(&self) -> String {
        let p = self.phrase();
        let p = crate::names::capitalise(&p);
        format!("{p} is {}.", self.result())
    }
}

/// Every problem with operands in `0..=max`: `a plus b`, `a minus b` with `b <= a`, `twice a`.
pub fn universe(max: u32) -> Vec<Triple> {
    let mut v = Vec::new();
    for a in 0..=max {
        for b in 0..=max {
            v.push(Triple { a, op: Op::Plus, b });
        }
    }
    for a in 0..=max {
        for b in 0..=a {
            v.push(Triple {
                a,
                op: Op::Minus,
                b,
            });
        }
    }
    for a in 0..=max {
        v.push(Triple {
            a,
            op: Op::Twice,
            b: 0,
        });
    }
    v
}

/// The split: which problems are held out (never written anywhere in the training corpus).
#[derive(Clone, Debug)]
pub struct ArithSplit {
    pub held_out: BTreeSet<Triple>,
    pub train: Vec<Triple>,
    by_op: [Vec<Triple>; 3],
}

impl ArithSplit {
    /// Holds out `frac` of the problems of each operator (at least one each). With
    /// `commuted`, `a plus b` and `b plus a` are held out together (the pair is chosen as an
    /// unordered pair), so the eval cannot be answered by recalling the swapped sum.
    pub fn new(rng: &mut Rng, max: u32, frac: f64, commuted: bool) -> ArithSplit {
        let all = universe(max);
        let mut held_out = BTreeSet::new();
        for op in [Op::Plus, Op::Minus, Op::Twice] {
            let mut cands: Vec<Triple> = all
                .iter()
                .copied()
                .filter(|t| t.op == op && (!(commuted && op == Op::Plus) || t.a <= t.b))
                .collect();
            rng.shuffle(&mut cands);
            let k = ((cands.len() as f64 * frac).round() as usize).clamp(1, cands.len() - 1);
            for t in &cands[..k] {
                held_out.insert(*t);
                if commuted && op == Op::Plus {
                    held_out.insert(Triple { a: t.b, op, b: t.a });
                }
            }
        }
        let train: Vec<Triple> = all.into_iter().filter(|t| !held_out.contains(t)).collect();
        let by_op = [Op::Plus, Op::Minus, Op::Twice]
            .map(|o| train.iter().copied().filter(|t| t.op == o).collect());
        ArithSplit {
            held_out,
            train,
            by_op,
        }
    }

    pub fn allowed(&self, t: &Triple) -> bool {
        !self.held_out.contains(t)
    }

    /// A random training problem with the given operator, optionally with `a >= 1, b >= 1`
    /// (word problems avoid "0 apples").
    pub fn sample(&self, rng: &mut Rng, op: Option<Op>, positive: bool) -> Triple {
        let pool = match op {
            None => &self.train,
            Some(o) => &self.by_op[o as usize],
        };
        loop {
            let t = pool[rng.below(pool.len() as u64) as usize];
            if positive && (t.a == 0 || (t.op != Op::Twice && t.b == 0)) {
                continue;
            }
            return t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universe_and_split() {
        let u = universe(20);
        assert_eq!(u.len(), 21 * 21 + 21 * 22 / 2 + 21);
        let s = ArithSplit::new(&mut Rng::new(5), 20, 0.1, true);
        assert_eq!(s.train.len() + s.held_out.len(), u.len());
        for t in &s.held_out {
            if t.op == Op::Plus {
                let twin = Triple {
                    a: t.b,
                    op: Op::Plus,
                    b: t.a,
                };
                assert!(s.held_out.contains(&twin));
            }
        }
        for op in [Op::Plus, Op::Minus, Op::Twice] {
            assert!(s.held_out.iter().any(|t| t.op == op));
            assert!(s.train.iter().any(|t| t.op == op));
        }
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let t = s.sample(&mut r, None, true);
            assert!(s.allowed(&t) && t.a > 0);
        }
    }

    #[test]
    fn phrases() {
        let t = Triple {
            a: 7,
            op: Op::Plus,
            b: 5,
        };
        assert_eq!(t.question(), "What is 7 plus 5?");
        assert_eq!(t.worked(), "7 plus 5 is 12.");
        let t = Triple {
            a: 6,
            op: Op::Twice,
            b: 0,
        };
        assert_eq!(t.question(), "What is twice 6?");
        assert_eq!(t.worked(), "Twice 6 is 12.");
        let t = Triple {
            a: 12,
            op: Op::Minus,
            b: 5,
        };
        assert_eq!(t.result(), 7);
    }
}
