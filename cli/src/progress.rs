//! Terminal progress: spinners for the CLI's own steps and bars driven by core `Progress`
//! events. indicatif hides everything when stderr is not a terminal, so logs and tests stay clean.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fedp2eft_core::{Control, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// A ticking spinner for one step whose length is unknown (a download, a model load).
pub fn spinner(msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.into());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} {msg} [{elapsed}<{eta}]")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// One bar per (stage, phase) of core progress events, created on its first event and
/// finished when it reaches its total.
#[derive(Clone, Default)]
pub struct Bars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<String, ProgressBar>>>,
}

impl Bars {
    pub fn new() -> Self {
        Self::default()
    }

    /// Draws one event.
    pub fn update(&self, p: &Progress) {
        let key = format!("{:?}/{}", p.stage, p.phase);
        // A poisoned lock only means another bar update panicked; the map is still usable.
        let mut bars = self.bars.lock().unwrap_or_else(PoisonError::into_inner);
        let bar = bars.entry(key).or_insert_with(|| {
            let pb = self.multi.add(ProgressBar::new(p.total as u64));
            pb.set_style(bar_style());
            pb.set_prefix(p.phase.clone());
            pb
        });
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        if let Some(loss) = p.loss {
            bar.set_message(format!("loss {loss:.4}"));
        }
        if p.done >= p.total {
            bar.finish();
        }
    }

    /// A core `Control` whose progress callback draws on these bars.
    pub fn control(&self) -> Control {
        let bars = self.clone();
        Control::new(move |p| bars.update(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedp2eft_core::Stage;

    #[test]
    fn one_bar_per_phase_finished_at_total() {
        let bars = Bars::new();
        let ctl = bars.control();
        for done in 1..=3 {
            ctl.report(Progress {
                stage: Stage::Train,
                phase: "fine-tune".into(),
                done,
                total: 3,
                loss: Some(0.5),
            });
        }
        ctl.report(Progress {
            stage: Stage::Evaluate,
            phase: "evaluate".into(),
            done: 1,
            total: 2,
            loss: None,
        });
        let map = bars.bars.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(map.len(), 2);
        assert!(map["Train/fine-tune"].is_finished());
        assert!(!map["Evaluate/evaluate"].is_finished());
    }
}
