//! The validation split: a deterministic, seeded share of the conversations held out by a
//! hash of their text, so reruns and resumed runs hold out the same ones whatever the order.

use tinyllama_infer::chat_template::Message;

/// A stable 64-bit hash of a conversation's roles and texts (FNV-1a; the same on every
/// platform and build).
pub fn messages_key(messages: &[Message]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for m in messages {
        eat(m.role.as_bytes());
        eat(&[0]);
        eat(m.content.as_bytes());
        eat(&[0x1e]);
    }
    h
}

/// A bijective mix of 64 bits (splitmix64's finaliser).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether an item with this key is held out for validation.
pub fn is_held_out(key: u64, fraction: f64, seed: u64) -> bool {
    let u = (mix(key ^ mix(seed)) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// Splits `items` into (train, validation): an item is held out when the seeded hash of its
/// key falls in the `fraction` share. Order within each part is kept.
pub fn split_validation<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> u64,
    fraction: f64,
    seed: u64,
) -> (Vec<T>, Vec<T>) {
    assert!(
        (0.0..=1.0).contains(&fraction),
        "validation fraction {fraction} is outside 0..=1"
    );
    let mut train = Vec::new();
    let mut valid = Vec::new();
    for it in items {
        if is_held_out(key(&it), fraction, seed) {
            valid.push(it);
        } else {
            train.push(it);
        }
    }
    (train, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_order_free_and_near_the_fraction() {
        let items: Vec<u64> = (0..10_000).collect();
        let (train, valid) = split_validation(items.clone(), |&k| k, 0.1, 7);
        assert_eq!(train.len() + valid.len(), 10_000);
        assert!((900..1100).contains(&valid.len()), "{}", valid.len());
        // Same seed, reversed order: the same items are held out.
        let rev: Vec<u64> = items.iter().rev().copied().collect();
        let (_, mut valid2) = split_validation(rev, |&k| k, 0.1, 7);
        valid2.reverse();
        assert_eq!(valid, valid2);
        // Another seed holds out others.
        let (_, valid3) = split_validation(items.clone(), |&k| k, 0.1, 8);
        assert_ne!(valid, valid3);
        // The edges.
        assert!(split_validation(items.clone(), |&k| k, 0.0, 1).1.is_empty());
        assert!(split_validation(items, |&k| k, 1.0, 1).0.is_empty());
    }

    #[test]
    fn key_depends_on_roles_and_text() {
        let a = [Message::new("user", "hi"), Message::new("assistant", "yo")];
        let b = [Message::new("user", "hi"), Message::new("user", "yo")];
        let c = [Message::new("user", "hiy"), Message::new("assistant", "o")];
        assert_ne!(messages_key(&a), messages_key(&b));
        assert_ne!(messages_key(&a), messages_key(&c));
        assert_eq!(messages_key(&a), messages_key(&a.clone()));
        // Pinned so a change of the hash (which would move the split) is noticed.
        assert_eq!(messages_key(&[]), 0xcbf2_9ce4_8422_2325);
    }
}
