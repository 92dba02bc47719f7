//! The `Personalizer` object and the records it exchanges.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fedp2eft_core::adapter::export_peft;
use fedp2eft_core::adapter::{AdapterInit, PriorConfig};
use fedp2eft_core::control::{CancelToken, Control, Stage};
use fedp2eft_core::data::{load_emoji, ClientData, EmojiConfig, Pool};
use fedp2eft_core::method::{build, learn_lambda, Inputs, LrNet, MethodKind, BASELINE_LAMBDA_INIT};
use fedp2eft_core::model::spec::save_model;
use fedp2eft_core::model::{load_base, load_pretrained, LoadedModel, ModelSpec};
use fedp2eft_core::personalize::{personalize, PersonalizeConfig};
use fedp2eft_core::psg::Psg;
use fedp2eft_core::train::{encode_all, Dataset};

use crate::FedError;

/// One labelled local example.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Example {
    pub text: String,
    pub label: u32,
}

/// Fine-tune settings; the defaults are the paper's.
#[derive(Debug, Clone, uniffi::Record)]
pub struct PersonalizeOptions {
    /// Epochs of the pruned-LoRA fine-tune.
    #[uniffi(default = 2)]
    pub epochs: u32,
    #[uniffi(default = 32)]
    pub batch_size: u32,
    /// Examples per forward and backward pass: each step's gradient is accumulated over
    /// micro-batches of this size, the same step in a fraction of the activation memory (4
    /// keeps e5-small under 500 MB; ≥ `batch_size`: whole batches).
    #[uniffi(default = 4)]
    pub micro_batch: u32,
    /// Learning rate of LoRA A and B.
    #[uniffi(default = 1e-4)]
    pub learning_rate: f64,
    /// Folder for the merged model (`merged/`) and the PEFT adapter (`adapter/`); none: keep
    /// nothing on disk.
    #[uniffi(default = None)]
    pub out_dir: Option<String>,
    /// "fedp2eft" (needs a PSG), "lora", "bt-lora" (λ learned on the examples first),
    /// "adalora" (its own lr, the authors' 1e-3, replaces `learning_rate`) or "fedl2p" (needs
    /// `lr_net_path`); none: fedp2eft when a PSG is loaded, else lora.
    #[uniffi(default = None)]
    pub method: Option<String>,
    /// FedL2P's learning-rate net for this budget (safetensors, from `fedp2eft reproduce`'s
    /// `fedl2p/r<budget>/`): it gives every A and B matrix its own learning rate.
    #[uniffi(default = None)]
    pub lr_net_path: Option<String>,
}

/// One progress tick: `done` of `total` units of a stage ("features", "train", "evaluate",
/// "psg", "merge"), with the last training loss.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Progress {
    pub stage: String,
    pub phase: String,
    pub done: u64,
    pub total: u64,
    pub loss: Option<f32>,
}

/// Implemented by the app to follow a run.
#[uniffi::export(with_foreign)]
pub trait ProgressListener: Send + Sync {
    fn on_progress(&self, progress: Progress);
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct LayerRank {
    pub name: String,
    pub rank: u32,
}

/// What a run did and measured.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Report {
    pub budget: u32,
    pub r_max: u32,
    /// Ranks kept per adapted layer (module order), summing to budget · layers.
    pub ranks: Vec<LayerRank>,
    pub total_rank: u32,
    /// Held-out accuracy of the base model and of the personalised one, in [0, 1].
    pub accuracy_before: f64,
    pub accuracy_after: f64,
    pub test_examples: u32,
    pub train_steps: u32,
    pub seconds: f64,
    pub peak_rss_bytes: Option<u64>,
    /// Where the merged model and the PEFT adapter were written, if `out_dir` was given.
    pub merged_dir: Option<String>,
    pub adapter_dir: Option<String>,
}

#[derive(uniffi::Object)]
pub struct Personalizer {
    base_dir: PathBuf,
    pub(crate) model: LoadedModel,
    /// Replaced by `join_round` once the federated run has finished.
    pub(crate) psg: Mutex<Option<Psg>>,
    pub(crate) data: Mutex<Option<ClientData>>,
    cancel: Mutex<CancelToken>,
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Features => "features",
        Stage::Train => "train",
        Stage::Evaluate => "evaluate",
        Stage::Psg => "psg",
        Stage::Merge => "merge",
    }
}

fn convert(
    examples: Vec<Example>,
    num_labels: usize,
) -> Result<Vec<fedp2eft_core::data::Example>, FedError> {
    examples
        .into_iter()
        .map(|e| {
            if e.label as usize >= num_labels {
                return Err(FedError::Data {
                    detail: format!("label {} outside the model's {num_labels} labels", e.label),
                });
            }
            Ok(fedp2eft_core::data::Example {
                text: e.text,
                label: e.label as usize,
                client: "local".into(),
                language: String::new(),
            })
        })
        .collect()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, FedError> {
    m.lock().map_err(|_| FedError::Internal {
        detail: "a previous call panicked while holding the personalizer".into(),
    })
}

impl Personalizer {
    /// A fresh cancellation token for the call that starts now (so a `cancel()` aimed at an
    /// earlier run does not stop this one), with the listener's progress forwarded.
    pub(crate) fn control(
        &self,
        listener: Option<Arc<dyn ProgressListener>>,
    ) -> Result<Control, FedError> {
        let token = CancelToken::new();
        *lock(&self.cancel)? = token.clone();
        let ctl = match listener {
            Some(l) => Control::new(move |p| {
                l.on_progress(Progress {
                    stage: stage_name(p.stage).into(),
                    phase: p.phase.clone(),
                    done: p.done as u64,
                    total: p.total as u64,
                    loss: p.loss,
                })
            }),
            None => Control::default(),
        };
        Ok(ctl.with_cancel(token))
    }

    /// The user's examples, or a typed error when `set_examples` was not called.
    pub(crate) fn examples(&self) -> Result<ClientData, FedError> {
        lock(&self.data)?.clone().ok_or_else(|| FedError::Data {
            detail: "no examples: call set_examples first".into(),
        })
    }
}

#[uniffi::export]
impl Personalizer {
    /// Loads a base model saved by `fedp2eft train-base` (HF files + `fedp2eft.json`) and,
    /// optionally, a PSG trained by the federation. Without a PSG, `personalize` runs plain
    /// LoRA with rank = budget on every layer.
    #[uniffi::constructor]
    pub fn new(base_dir: String, psg_path: Option<String>) -> Result<Arc<Self>, FedError> {
        let _compute = fedp2eft_core::runtime::enter();
        let base_dir = PathBuf::from(base_dir);
        let model = load_base(&base_dir)?;
        let psg = psg_path.map(|p| Psg::load(Path::new(&p))).transpose()?;
        if let Some(p) = &psg {
            p.check_compatible(&model.model.model_id(), model.model.num_adapted())?;
        }
        Ok(Arc::new(Self {
            base_dir,
            model,
            psg: Mutex::new(psg),
            data: Mutex::new(None),
            cancel: Mutex::new(CancelToken::new()),
        }))
    }

    /// A pretrained encoder (a Hugging Face checkpoint folder or an E5S1 file) with a fresh,
    /// seeded classification head of `num_labels` classes, personalised with plain LoRA.
    #[uniffi::constructor]
    pub fn from_pretrained(
        model_path: String,
        num_labels: u32,
        seed: u64,
    ) -> Result<Arc<Self>, FedError> {
        let _compute = fedp2eft_core::runtime::enter();
        let path = PathBuf::from(&model_path);
        let spec = if path.is_dir() {
            ModelSpec::Hf(path.clone())
        } else {
            ModelSpec::E5s1(path.clone())
        };
        if num_labels == 0 {
            return Err(FedError::Data {
                detail: "the classification head needs at least one label".into(),
            });
        }
        let labels: Vec<String> = (0..num_labels).map(|i| i.to_string()).collect();
        let model = load_pretrained(&spec, &labels, seed)?;
        Ok(Arc::new(Self {
            base_dir: path,
            model,
            psg: Mutex::new(None),
            data: Mutex::new(None),
            cancel: Mutex::new(CancelToken::new()),
        }))
    }

    /// Number of classes of the model's head (labels are 0..num_labels).
    pub fn num_labels(&self) -> u32 {
        self.model.model.num_labels() as u32
    }

    /// The base model's identity as a PSG records it (`name|type|L|hidden|labels`): a run's
    /// operator creates the run for this id.
    pub fn model_id(&self) -> String {
        self.model.model.model_id()
    }

    /// Whether `personalize` will use a PSG (given at creation or installed by `join_round`
    /// when a run finished); without one it runs plain LoRA.
    pub fn has_psg(&self) -> bool {
        self.psg.lock().map(|p| p.is_some()).unwrap_or(false)
    }

    /// L: the number of adapted linear layers.
    pub fn num_layers(&self) -> u32 {
        self.model.model.num_adapted() as u32
    }

    /// The user's local examples: `train` for the fine-tune (and the PSG features), `test`
    /// held out for the accuracy before and after.
    pub fn set_examples(&self, train: Vec<Example>, test: Vec<Example>) -> Result<(), FedError> {
        let n = self.model.model.num_labels();
        let data = ClientData {
            id: "local".into(),
            language: String::new(),
            pool: Pool::Seen,
            train: convert(train, n)?,
            test: convert(test, n)?,
        };
        *lock(&self.data)? = Some(data);
        Ok(())
    }

    /// Personalises the model with an average of `budget` ranks per layer: features → PSG (or
    /// plain LoRA) → prune → fine-tune → merge, then evaluates. Blocks until done.
    pub fn personalize(
        &self,
        budget: u32,
        options: PersonalizeOptions,
        listener: Option<Arc<dyn ProgressListener>>,
    ) -> Result<Report, FedError> {
        let _compute = fedp2eft_core::runtime::enter();
        let data = self.examples()?;
        let ctl = self.control(listener)?;
        let psg = lock(&self.psg)?.clone();
        let mut cfg = PersonalizeConfig::new(budget as usize);
        if let Some(p) = &psg {
            cfg.lora.r = p.meta.r_max;
            cfg.lora.lora_alpha = 2.0 * p.meta.r_max as f64;
        }
        cfg.train.epochs = options.epochs as usize;
        cfg.train.batch_size = options.batch_size as usize;
        cfg.train.micro_batch = Some(options.micro_batch as usize);
        cfg.train.lr_ab = options.learning_rate;
        // A wrong name, or a method without its input, is core's Error::Method: InvalidOption.
        let kind = match options.method.as_deref() {
            Some(name) => name.parse()?,
            None if psg.is_some() => MethodKind::Fedp2eft,
            None => MethodKind::Lora,
        };
        let lm = &self.model;
        let priors = PriorConfig::default();
        let learned = match kind {
            MethodKind::BtLora => {
                let enc = encode_all(
                    &data.train,
                    lm.tokenizer.as_ref(),
                    cfg.train.max_len,
                    lm.model.num_labels(),
                )?;
                let set = Dataset {
                    examples: &enc,
                    pad_id: lm.tokenizer.pad_id(),
                };
                let init = AdapterInit::new(&lm.model, cfg.lora.clone())?;
                let lam0 = vec![BASELINE_LAMBDA_INIT; cfg.lora.r * lm.model.num_adapted()];
                let stage = cfg.train.clone();
                Some(learn_lambda(&lm.model, &set, &init, &lam0, &stage, &priors, &ctl)?.raw)
            }
            _ => None,
        };
        let lr_net = match (kind, &options.lr_net_path) {
            (MethodKind::Fedl2p, Some(p)) => Some(LrNet::load(Path::new(p))?),
            _ => None,
        };
        let inputs = Inputs {
            psg: psg.as_ref(),
            learned: learned.as_deref(),
            priors: Some(&priors),
            lr_net: lr_net.as_ref(),
            ..Inputs::default()
        };
        let method = build(kind, &inputs)?;
        cfg.train.lr_ab = inputs.lr(kind, cfg.train.lr_ab);
        let out = personalize(
            &lm.model,
            lm.tokenizer.as_ref(),
            &data,
            method.as_ref(),
            &cfg,
            &ctl,
        )?;
        let (mut merged_dir, mut adapter_dir) = (None, None);
        if let Some(dir) = options.out_dir.map(PathBuf::from) {
            save_model(&out.merged, &lm.manifest, &dir.join("merged"))?;
            export_peft(
                &out.adapted,
                &dir.join("adapter"),
                &self.base_dir.to_string_lossy(),
            )?;
            merged_dir = Some(dir.join("merged").to_string_lossy().into_owned());
            adapter_dir = Some(dir.join("adapter").to_string_lossy().into_owned());
        }
        let r = out.report;
        Ok(Report {
            budget: r.budget as u32,
            r_max: r.r_max as u32,
            ranks: r
                .ranks
                .iter()
                .map(|l| LayerRank {
                    name: l.name.clone(),
                    rank: l.rank as u32,
                })
                .collect(),
            total_rank: r.total_rank as u32,
            accuracy_before: r.accuracy_before.percent() / 100.0,
            accuracy_after: r.accuracy_after.percent() / 100.0,
            test_examples: r.accuracy_after.total as u32,
            train_steps: r.finetune.steps as u32,
            seconds: r.timings.total_s,
            peak_rss_bytes: r.peak_rss_bytes,
            merged_dir,
            adapter_dir,
        })
    }

    /// Stops the running `personalize` at its next step (it then fails with `Cancelled`).
    pub fn cancel(&self) {
        if let Ok(t) = self.cancel.lock() {
            t.cancel();
        }
    }
}

/// A user's local examples.
#[derive(Debug, Clone, uniffi::Record)]
pub struct LocalData {
    pub language: String,
    pub train: Vec<Example>,
    pub test: Vec<Example>,
}

/// One client of the multilingual emoji benchmark (`fedp2eft fetch` installs its data), e.g.
/// `seen-en-0`: real local data for demos and tests.
#[uniffi::export]
pub fn emoji_benchmark_client(client_id: String) -> Result<LocalData, FedError> {
    let bench = load_emoji(
        &fedp2eft_core::home::emojibase_dir(),
        &EmojiConfig::default(),
    )?;
    let c = bench
        .clients
        .iter()
        .find(|c| c.id == client_id)
        .ok_or_else(|| FedError::Data {
            detail: format!("no client `{client_id}` in the emoji benchmark"),
        })?;
    let back = |v: &[fedp2eft_core::data::Example]| {
        v.iter()
            .map(|e| Example {
                text: e.text.clone(),
                label: e.label as u32,
            })
            .collect()
    };
    Ok(LocalData {
        language: c.language.clone(),
        train: back(&c.train),
        test: back(&c.test),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedp2eft_core::method::{Fedl2pConfig, LrNetMeta};

    /// FedL2P through the options: a net of the base model's layout gives the fine-tune its
    /// per-matrix rates; without one the option is refused. Needs `fedp2eft fetch` (MiniLM and
    /// the emoji data), as the binding tests.
    #[test]
    fn fedl2p_runs_with_its_net_and_is_refused_without() -> Result<(), FedError> {
        let minilm = fedp2eft_core::home::minilm_dir();
        let p = Personalizer::from_pretrained(minilm.to_string_lossy().into(), 8, 42)?;
        let c = emoji_benchmark_client("seen-en-0".into())?;
        p.set_examples(c.train, c.test)?;
        let fast = |net: Option<String>| PersonalizeOptions {
            epochs: 1,
            batch_size: 16,
            micro_batch: 4,
            learning_rate: 1e-3,
            out_dir: None,
            method: Some("fedl2p".into()),
            lr_net_path: net,
        };
        let refused = p.personalize(2, fast(None), None);
        assert!(
            matches!(&refused, Err(FedError::InvalidOption { detail }) if detail.contains("learning-rate net")),
            "{refused:?}"
        );
        let dir = tempfile::tempdir().map_err(|e| FedError::Internal {
            detail: e.to_string(),
        })?;
        let path = dir.path().join("net.safetensors");
        let meta = LrNetMeta::new(p.model_id(), p.num_layers() as usize);
        LrNet::new(meta, Fedl2pConfig::default(), 7)?.save(&path)?;
        let report = p.personalize(2, fast(Some(path.to_string_lossy().into())), None)?;
        assert_eq!(report.total_rank, 2 * p.num_layers());
        assert!(report.train_steps >= 1);
        let wrong = LrNetMeta::new("another-model", p.num_layers() as usize);
        LrNet::new(wrong, Fedl2pConfig::default(), 7)?.save(&path)?;
        let other = p.personalize(2, fast(Some(path.to_string_lossy().into())), None);
        assert!(other.is_err(), "a net of another model was used");
        Ok(())
    }
}
