//! Learning-rate schedules, evaluated at a fractional epoch so warm-up and cosine move every step.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// `step` (× gamma at each milestone epoch: the paper's 150/180/210 of 240), `cosine`, `constant`.
    pub kind: ScheduleKind,
    pub milestones: Vec<usize>,
    pub gamma: f64,
    /// Linear warm-up from 0 over this many epochs (any kind).
    pub warmup_epochs: f64,
    /// Cosine floor as a fraction of the base lr.
    pub min_lr_ratio: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Step,
    Cosine,
    Constant,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: ScheduleKind::Step,
            milestones: vec![150, 180, 210],
            gamma: 0.1,
            warmup_epochs: 0.0,
            min_lr_ratio: 0.0,
        }
    }
}

impl ScheduleConfig {
    /// Learning rate at `epoch` (0-based, fractional) of `total` epochs for base rate `base`.
    pub fn lr_at(&self, base: f64, epoch: f64, total: usize) -> f64 {
        if self.warmup_epochs > 0.0 && epoch < self.warmup_epochs {
            return base * (epoch / self.warmup_epochs).max(1e-3);
        }
        match self.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::Step => {
                let passed = self
                    .milestones
                    .iter()
                    .filter(|&&m| epoch.floor() as usize >= m)
                    .count();
                base * self.gamma.powi(passed as i32)
            }
            ScheduleKind::Cosine => {
                let span = (total as f64 - self.warmup_epochs).max(1e-9);
                let t = ((epoch - self.warmup_epochs) / span).clamp(0.0, 1.0);
                let floor = base * self.min_lr_ratio;
                floor + (base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_step_schedule() {
        let s = ScheduleConfig::default();
        assert_eq!(s.lr_at(0.01, 0.0, 240), 0.01);
        assert_eq!(s.lr_at(0.01, 149.9, 240), 0.01);
        assert!((s.lr_at(0.01, 150.0, 240) - 0.001).abs() < 1e-12);
        assert!((s.lr_at(0.01, 185.0, 240) - 0.0001).abs() < 1e-12);
        assert!((s.lr_at(0.01, 239.0, 240) - 0.00001).abs() < 1e-12);
    }

    #[test]
    fn cosine_with_warmup() {
        let s = ScheduleConfig {
            kind: ScheduleKind::Cosine,
            warmup_epochs: 1.0,
            ..Default::default()
        };
        assert!((s.lr_at(1.0, 0.5, 11) - 0.5).abs() < 1e-12);
        assert!((s.lr_at(1.0, 1.0, 11) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(1.0, 6.0, 11) - 0.5).abs() < 1e-12);
        assert!(s.lr_at(1.0, 11.0, 11).abs() < 1e-12);
    }
}
