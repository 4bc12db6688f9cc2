//! Learning-rate schedules, indexed by optimizer step (TinyLlama's script indexed its schedule
//! by micro-step, which silently stretched warmup by the accumulation factor).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Linear warmup, then cosine decay from `lr` to `min_lr` at `total_steps`.
    Cosine,
    /// Linear warmup, then linear decay to `min_lr` at `total_steps`.
    Linear,
    /// Linear warmup, then constant.
    Constant,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Schedule {
    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = (((step - self.warmup_steps) as f64) / span).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Linear => self.lr + (self.min_lr - self.lr) * progress,
            ScheduleKind::Cosine => {
                self.min_lr
                    + 0.5
                        * (self.lr - self.min_lr)
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn warmup_then_cosine_to_min() {
        let s = Schedule {
            kind: ScheduleKind::Cosine,
            lr: 4e-4,
            min_lr: 4e-5,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert!((s.lr_at(0) - 4e-5).abs() < 1e-12);
        assert!((s.lr_at(9) - 4e-4).abs() < 1e-12);
        assert!((s.lr_at(10) - 4e-4).abs() < 1e-12);
        assert!((s.lr_at(60) - 2.2e-4).abs() < 1e-9);
        assert!((s.lr_at(110) - 4e-5).abs() < 1e-12);
        assert!((s.lr_at(500) - 4e-5).abs() < 1e-12);
        let l = Schedule {
            kind: ScheduleKind::Linear,
            ..s.clone()
        };
        assert!((l.lr_at(60) - 2.2e-4).abs() < 1e-9);
        let c = Schedule {
            kind: ScheduleKind::Constant,
            ..s
        };
        assert_eq!(c.lr_at(100), 4e-4);
    }
}
