//! Union-find over the documents that appear in candidate pairs only (a sparse map, so memory
//! follows the number of duplicates, not the corpus). The root of every cluster is its
//! smallest document index — the deterministic representative that is kept.

use crate::hashing::MixBuildHasher;
use std::collections::HashMap;

#[derive(Default)]
pub struct UnionFind {
    parent: HashMap<u64, u64, MixBuildHasher>,
}

impl UnionFind {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn find(&mut self, x: u64) -> u64 {
        let mut root = x;
        while let Some(&p) = self.parent.get(&root) {
            if p == root {
                break;
            }
            root = p;
        }
        // Path compression.
        let mut cur = x;
        while cur != root {
            let next = self.parent[&cur];
            self.parent.insert(cur, root);
            cur = next;
        }
        root
    }

    pub fn union(&mut self, a: u64, b: u64) {
        self.parent.entry(a).or_insert(a);
        self.parent.entry(b).or_insert(b);
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent.insert(hi, lo);
        }
    }

    /// Documents in any cluster.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// Every member with its cluster root, members in ascending order.
    pub fn members(&mut self) -> Vec<(u64, u64)> {
        let mut keys: Vec<u64> = self.parent.keys().copied().collect();
        keys.sort_unstable();
        keys.into_iter().map(|k| (k, self.find(k))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn roots_are_minimum() {
        let mut u = UnionFind::new();
        u.union(5, 9);
        u.union(9, 2);
        u.union(7, 8);
        assert_eq!(u.find(5), 2);
        assert_eq!(u.find(9), 2);
        assert_eq!(u.find(8), 7);
        u.union(8, 5);
        assert_eq!(u.find(7), 2);
        assert_eq!(u.members().len(), 5);
    }
}
