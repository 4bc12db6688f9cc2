//! Stop strings on streamed text. Text that could be the start of a stop string is held back
//! until it is clearly not one, so a client never sees part of a stop string.

/// Watches streamed text for any of a set of stop strings.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would match everywhere).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
            stopped: false,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds new text; returns the text that is safe to emit and whether a stop string was
    /// found (everything from the stop string on is discarded).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.pending.push_str(text);
        // The earliest complete match wins.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > hold && self.pending.ends_with(&s[..i]) {
                    hold = i;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// The held-back text once generation has ended without a stop string.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut out = String::new();
        for p in pieces {
            let (t, stop) = m.push(p);
            out.push_str(&t);
            if stop {
                return (out, true);
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stops_across_pieces_and_holds_prefixes() {
        assert_eq!(
            run(&["</s>"], &["Hello", " wor", "ld<", "/s", ">tail"]),
            ("Hello world".into(), true)
        );
        assert_eq!(run(&["</s>"], &["a<", "b"]), ("a<b".into(), false));
        assert_eq!(
            run(&["\n\n", "END"], &["x\n", "y", "EN", "D"]),
            ("x\ny".into(), true)
        );
        assert_eq!(run(&[], &["abc"]), ("abc".into(), false));
        // Multi-byte characters are never split.
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
        let mut m = StopMatcher::new(&["<|".into()]);
        assert_eq!(m.push("ab<"), ("ab".into(), false));
        assert_eq!(m.push("x"), ("<x".into(), false));
    }
}
