//! A reproduction run's configuration (`configs/*.toml`): the data set and its protocol, the
//! encoder, the base model's FedAvg, the PSG's federated training and the evaluation grid.
//! Every field has the paper's value as its default where the paper has one.
use fedp2eft_core::method::{AdaLoraConfig, Fedl2pConfig, MethodKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fedp2eft_core::adapter::PriorConfig;
use fedp2eft_core::data::{NewsField, Pool, PoolProtocol};
use fedp2eft_core::federated::FedBaseConfig;
use fedp2eft_core::psg::PsgConfig;
use fedp2eft_core::train::TrainConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReproConfig {
    /// Names the run in tables and on the aggregation server.
    pub name: String,
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub base: FedBaseConfig,
    #[serde(default)]
    pub psg: PsgStage,
    #[serde(default)]
    pub eval: EvalConfig,
    /// FedL2P's federated meta-net (trained only when `fedl2p` is evaluated).
    #[serde(default)]
    pub fedl2p: Fedl2pStage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSet {
    Masakhanews,
    Sib200,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub set: DataSet,
    /// The data set's folder, relative to the directory `reproduce` runs in (the repository
    /// root for `../shared/data/...`); `--data-dir` overrides it.
    pub dir: PathBuf,
    /// Languages (folders) to use; empty = all (MasakhaNEWS only).
    #[serde(default)]
    pub languages: Vec<String>,
    /// MasakhaNEWS' input text (the paper: the headline).
    #[serde(default)]
    pub field: NewsField,
    #[serde(default)]
    pub protocol: PoolProtocol,
    /// Keep at most this many training / test examples per client (tiny configs only).
    #[serde(default)]
    pub max_train_per_client: Option<usize>,
    #[serde(default)]
    pub max_test_per_client: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `e5` (the embedded multilingual-e5-small), `minilm`, `mbert`, or a checkpoint path.
    pub encoder: String,
    /// Token limit per example (the paper: 256 for MasakhaNEWS' headline_text; headlines are
    /// far shorter, so nothing is cut at 128).
    pub max_len: usize,
    /// Seeds the classification head's initialisation.
    pub seed: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            encoder: "e5".into(),
            max_len: 128,
            seed: 42,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PsgStage {
    /// r_max of BT-LoRA during PSG training (the authors: 32, α = 64).
    pub r_max: usize,
    /// Rounds of PSG training (the paper: 150).
    pub rounds: u32,
    /// Seen clients selected per round (the paper: 16 of MasakhaNEWS' 160).
    pub clients_per_round: usize,
    /// Stage 1 (BT-LoRA with the priors): 2 local epochs, lr 1e-4 (A, B) and 1e-2 (λ).
    pub stage1: TrainConfig,
    pub priors: PriorConfig,
    /// The PSG network and stage 2 (10 Adam steps, lr 1e-4, of the L1 regression).
    pub net: PsgConfig,
    /// Seeds the server's client selection.
    pub seed: u64,
}

impl Default for PsgStage {
    fn default() -> Self {
        Self {
            r_max: 32,
            rounds: 150,
            clients_per_round: 16,
            stage1: TrainConfig::default(),
            priors: PriorConfig::default(),
            net: PsgConfig::default(),
            seed: 42,
        }
    }
}

/// FedL2P's federation (method.md §6): one learning-rate net per evaluated budget, trained over
/// the loopback server like the PSG. Its nets keep their own settings (`fedl2p/r<b>/`), so a
/// run may add the arm afterwards without retraining the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fedl2pStage {
    /// Rounds at most (the authors: 200).
    pub rounds: u32,
    /// Seen clients per round (the authors: as the PSG, 16 on MasakhaNEWS).
    pub clients_per_round: usize,
    /// Stop after this many rounds without a lower mean client validation loss (the
    /// authors: 50; 0 = never).
    pub patience: u32,
    /// The meta-net and its meta-training (hidden 100, 3 outer steps, val 20 %, Adam 1e-4 /
    /// 1e-6).
    pub meta: Fedl2pConfig,
    /// Seeds the net's init and the server's client selection.
    pub seed: u64,
}

impl Default for Fedl2pStage {
    fn default() -> Self {
        Self {
            rounds: 200,
            clients_per_round: 16,
            patience: 50,
            meta: Fedl2pConfig::default(),
            seed: 42,
        }
    }
}

/// A personalization method of the evaluation grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    /// The base model, not personalized.
    Base,
    /// Rank = budget on every layer, α = 2r, the paper's lr.
    Lora,
    /// LoRA with the lr of `lr_grid` chosen on the seen pool's training side.
    LoraTuned,
    /// λ learned per client with the priors (BayesTune), then pruned; no federation.
    BtLora,
    /// λ̂ from the federatedly trained PSG.
    Fedp2eft,
    /// The PSG's ranks with every λ = 1 (structure only).
    PsgRanks,
    /// FedP²EFT with the lr of `lr_grid` chosen as for `lora-tuned` (the head-to-head with it).
    Fedp2eftTuned,
    /// AdaLoRA (peft's, the authors' settings: `eval.adalora`), target rank = budget.
    Adalora,
    /// FedL2P: LoRA of rank = budget at per-matrix learning rates from the federated net.
    Fedl2p,
}

impl MethodName {
    pub fn label(self) -> &'static str {
        match self {
            MethodName::Base => "base",
            MethodName::Lora => "LoRA",
            MethodName::LoraTuned => "LoRA (tuned lr)",
            MethodName::BtLora => "BT-LoRA",
            MethodName::Fedp2eft => "FedP²EFT",
            MethodName::PsgRanks => "PSG ranks, λ = 1",
            MethodName::Fedp2eftTuned => "FedP²EFT (tuned lr)",
            MethodName::Adalora => "AdaLoRA",
            MethodName::Fedl2p => "FedL2P",
        }
    }

    /// The core method this arm runs (None for the base model, not personalized).
    pub fn kind(self) -> Option<MethodKind> {
        Some(match self {
            MethodName::Base => return None,
            MethodName::Lora | MethodName::LoraTuned => MethodKind::Lora,
            MethodName::BtLora => MethodKind::BtLora,
            MethodName::Fedp2eft | MethodName::PsgRanks | MethodName::Fedp2eftTuned => {
                MethodKind::Fedp2eft
            }
            MethodName::Adalora => MethodKind::Adalora,
            MethodName::Fedl2p => MethodKind::Fedl2p,
        })
    }

    /// The methods that read the PSG: their cells depend on `psg.rounds`.
    pub fn uses_psg(self) -> bool {
        matches!(
            self,
            MethodName::Fedp2eft | MethodName::PsgRanks | MethodName::Fedp2eftTuned
        )
    }

    /// The PSG round this method's cells record in a run whose PSG trained `rounds` rounds:
    /// `rounds` for the methods that read the PSG, none for the others.
    pub fn psg_round(self, rounds: u32) -> Option<u32> {
        self.uses_psg().then_some(rounds)
    }

    /// The methods whose fine-tune lr is chosen on `lr_grid`.
    pub fn is_tuned(self) -> bool {
        matches!(self, MethodName::LoraTuned | MethodName::Fedp2eftTuned)
    }

    /// The method this one is compared with in the tables (Δ = rival − this): FedP²EFT,
    /// except that tuned-lr LoRA meets tuned-lr FedP²EFT when both are evaluated.
    pub fn rival(self, methods: &[MethodName]) -> Option<MethodName> {
        let ours = match self {
            MethodName::LoraTuned if methods.contains(&MethodName::Fedp2eftTuned) => {
                MethodName::Fedp2eftTuned
            }
            MethodName::Fedp2eft | MethodName::Fedp2eftTuned => return None,
            _ => MethodName::Fedp2eft,
        };
        methods.contains(&ours).then_some(ours)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub pools: Vec<Pool>,
    /// Evaluate at most this many clients per language and pool (all when absent, the paper).
    pub clients_per_language: Option<usize>,
    pub budgets: Vec<usize>,
    /// Personalization seeds: each changes the LoRA initialisation and the data order of
    /// every fine-tune (the base model and the PSG are trained once).
    pub seeds: Vec<u64>,
    pub methods: Vec<MethodName>,
    /// AdaLoRA's settings (its own lr, 1e-3, and schedule; the seed follows `seeds`).
    pub adalora: AdaLoraConfig,
    /// The fine-tune after pruning: 2 epochs, lr 1e-4, batch 32 (λ frozen, CE only).
    pub finetune: TrainConfig,
    /// Learning rates tried for the tuned methods (`lora-tuned`, `fedp2eft-tuned`).
    #[serde(alias = "lora_lr_grid")]
    pub lr_grid: Vec<f64>,
    /// Seen clients per language on whose training side (80 / 20) the grid is scored.
    pub grid_clients_per_language: usize,
    /// Bootstrap resamples of the paired CI.
    pub bootstrap: usize,
    /// Narrower grids for some methods (e.g. the secondary baselines at r = 2 and one seed),
    /// keyed by method name.
    pub only: BTreeMap<MethodName, Only>,
    /// Fewer clients at some budgets, for every method evaluated there (the tighter of this
    /// and the method's `only` limit holds).
    pub at_budget: Vec<AtBudget>,
}

/// A budget evaluated on only the first k clients of each language and pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtBudget {
    pub budget: usize,
    pub clients_per_language: usize,
}

/// A method's budgets and seeds when they are a subset of the evaluation's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Only {
    pub budgets: Option<Vec<usize>>,
    pub seeds: Option<Vec<u64>>,
    /// Only the first k evaluated clients of each language and pool.
    pub clients_per_language: Option<usize>,
}

impl EvalConfig {
    pub fn budgets_of(&self, m: MethodName) -> Vec<usize> {
        match self.only.get(&m).and_then(|o| o.budgets.clone()) {
            Some(b) => b,
            None => self.budgets.clone(),
        }
    }
    pub fn seeds_of(&self, m: MethodName) -> Vec<u64> {
        match self.only.get(&m).and_then(|o| o.seeds.clone()) {
            Some(s) => s,
            None => self.seeds.clone(),
        }
    }
    /// Whether the grid holds this cell for the client of rank `k` (0-based) in its
    /// language's evaluated clients.
    pub fn runs(&self, m: MethodName, budget: usize, seed: u64, k: usize) -> bool {
        let within = self.only.get(&m).and_then(|o| o.clients_per_language);
        let mut at = self.at_budget.iter().filter(|a| a.budget == budget);
        self.methods.contains(&m)
            && self.budgets_of(m).contains(&budget)
            && self.seeds_of(m).contains(&seed)
            && within.is_none_or(|n| k < n)
            && at.all(|a| k < a.clients_per_language)
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            pools: vec![Pool::Seen, Pool::Unseen],
            clients_per_language: None,
            budgets: vec![2, 4, 8, 16],
            seeds: vec![42],
            methods: vec![
                MethodName::Base,
                MethodName::Lora,
                MethodName::BtLora,
                MethodName::Adalora,
                MethodName::Fedp2eft,
                MethodName::PsgRanks,
            ],
            finetune: TrainConfig::default(),
            adalora: AdaLoraConfig::default(),
            lr_grid: vec![1e-4, 3e-4, 1e-3, 3e-3],
            grid_clients_per_language: 1,
            bootstrap: 10_000,
            only: BTreeMap::new(),
            at_budget: Vec::new(),
        }
    }
}

impl ReproConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// This configuration with the evaluation grid's extent reset (pools, clients per language,
    /// budgets, seeds, methods, `only`, bootstrap) and FedL2P's stage (whose nets check their
    /// own settings) and the PSG's number of rounds: what every other stage's output depends
    /// on. Two configurations that agree here share the partition, the base, the PSG's rounds
    /// and every cell already evaluated (the fine-tune, the lr grid and its clients are kept),
    /// so a run's grid may grow — a method added — without retraining anything, and its PSG
    /// may train on from its last round (the cells that read the PSG are keyed by its round).
    pub fn trained_part(&self) -> ReproConfig {
        let e = &self.eval;
        let mut c = self.clone();
        c.fedl2p = Fedl2pStage::default();
        c.psg.rounds = 0;
        c.eval = EvalConfig {
            finetune: e.finetune.clone(),
            adalora: e.adalora.clone(),
            lr_grid: e.lr_grid.clone(),
            grid_clients_per_language: e.grid_clients_per_language,
            ..EvalConfig::default()
        };
        c
    }

    /// Values that parse but cannot run.
    pub fn check(&self) -> Result<()> {
        let r_max = self.psg.r_max;
        if let Some(&r) = self.eval.budgets.iter().find(|&&r| r == 0 || r > r_max) {
            bail!("budget {r} outside 1..={r_max} (psg.r_max)");
        }
        if self.eval.seeds.is_empty() || self.eval.methods.is_empty() {
            bail!("eval needs at least one seed and one method");
        }
        if self.eval.methods.iter().any(|m| m.is_tuned()) && self.eval.lr_grid.is_empty() {
            bail!("the tuned methods need eval.lr_grid");
        }
        for (m, o) in &self.eval.only {
            let bad_b = o
                .budgets
                .iter()
                .flatten()
                .any(|b| !self.eval.budgets.contains(b));
            let bad_s = o
                .seeds
                .iter()
                .flatten()
                .any(|s| !self.eval.seeds.contains(s));
            if bad_b || bad_s {
                bail!(
                    "eval.only.{m:?}: budgets and seeds must come from eval.budgets / eval.seeds"
                );
            }
        }
        if let Some(a) = self
            .eval
            .at_budget
            .iter()
            .find(|a| !self.eval.budgets.contains(&a.budget))
        {
            bail!("eval.at_budget: budget {} is not in eval.budgets", a.budget);
        }
        if self.eval.methods.contains(&MethodName::Fedl2p) {
            let f = &self.fedl2p;
            if f.rounds == 0 || f.clients_per_round == 0 {
                bail!("fedl2p needs rounds ≥ 1 and clients_per_round ≥ 1");
            }
            f.meta.validate()?;
        }
        if self.data.set == DataSet::Sib200 && self.data.languages.is_empty() {
            bail!("SIB-200 needs data.languages");
        }
        let novel = !self.data.protocol.novel_languages.is_empty();
        if novel != self.eval.pools.contains(&Pool::Novel) {
            bail!(
                "data.protocol.novel_languages and the \"novel\" entry of eval.pools go together \
                 (novel languages: {:?}, eval.pools: {:?})",
                self.data.protocol.novel_languages,
                self.eval.pools
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped configuration parses and passes its checks.
    #[test]
    fn shipped_configs_are_valid() -> Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "toml") {
                let cfg = ReproConfig::load(&path)?;
                assert!(!cfg.name.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 4, "configs/ holds {n} configurations");
        Ok(())
    }

    #[test]
    fn bad_grids_are_refused() -> Result<()> {
        let base = r#"name = "x"
[data]
set = "masakhanews"
dir = "d"
"#;
        let parse = |extra: &str| -> Result<ReproConfig> {
            let cfg: ReproConfig = toml::from_str(&format!("{base}{extra}"))?;
            cfg.check()?;
            Ok(cfg)
        };
        let ok = parse("")?;
        assert_eq!(
            (ok.psg.r_max, ok.psg.rounds, ok.base.rounds),
            (32, 150, 100)
        );
        assert!(
            parse("[eval]\nbudgets = [64]\n").is_err(),
            "budget above r_max"
        );
        assert!(parse("[eval]\nseeds = []\n").is_err());
        assert!(
            parse("[eval.only.bt-lora]\nbudgets = [3]\n").is_err(),
            "not in budgets"
        );
        assert!(parse("[eval]\ntypo = 1\n").is_err(), "unknown field");
        let o = parse("[eval]\nbudgets = [2, 8]\n[eval.only.bt-lora]\nbudgets = [2]\n")?;
        let runs = |m, b| o.eval.runs(m, b, 42, 0);
        assert!(runs(MethodName::BtLora, 2) && !runs(MethodName::BtLora, 8));
        assert!(runs(MethodName::Lora, 8));
        let novel = "[data.protocol]\nnovel_languages = [\"yor\"]\n";
        assert!(
            parse(novel).is_err(),
            "novel languages but no novel pool evaluated"
        );
        assert!(parse("[eval]\npools = [\"seen\", \"novel\"]\n").is_err());
        let n = parse(&format!(
            "{novel}[eval]\npools = [\"seen\", \"unseen\", \"novel\"]\n"
        ))?;
        assert_eq!(n.eval.pools.last(), Some(&Pool::Novel));
        let grown = parse("[eval]\nmethods = [\"lora\", \"fedp2eft-tuned\"]\nseeds = [1, 2]\n")?;
        assert_eq!(grown.trained_part(), ok.trained_part(), "a grown grid");
        for other in [
            "[eval.finetune]\nlr_ab = 1e-3\n",
            "[eval]\nlr_grid = [1e-3]\n",
        ] {
            assert_ne!(parse(other)?.trained_part(), ok.trained_part(), "{other}");
        }
        let old: ReproConfig = toml::from_str(&format!("{base}[eval]\nlora_lr_grid = [1e-3]\n"))?;
        assert_eq!(
            old.eval.lr_grid,
            vec![1e-3],
            "the field's old name still reads"
        );
        let o = parse("[eval.only.psg-ranks]\nclients_per_language = 1\n")?;
        assert!(o.eval.runs(MethodName::PsgRanks, 2, 42, 0));
        assert!(!o.eval.runs(MethodName::PsgRanks, 2, 42, 1));
        let at =
            "[eval]\nbudgets = [2, 8]\n[[eval.at_budget]]\nbudget = 8\nclients_per_language = 2\n";
        let a = parse(&format!("{at}[eval.only.lora]\nclients_per_language = 1\n"))?;
        assert!(a.eval.runs(MethodName::Fedp2eft, 8, 42, 1));
        assert!(
            !a.eval.runs(MethodName::Fedp2eft, 8, 42, 2),
            "r = 8 on 2 clients"
        );
        assert!(a.eval.runs(MethodName::Fedp2eft, 2, 42, 3), "r = 2 on all");
        assert!(
            !a.eval.runs(MethodName::Lora, 8, 42, 1),
            "the tighter limit holds"
        );
        assert_eq!(
            a.trained_part(),
            ok.trained_part(),
            "at_budget is the grid's extent"
        );
        assert!(
            parse(&at.replace("budget = 8", "budget = 4")).is_err(),
            "not a budget"
        );
        let f = parse("[eval]\nmethods = [\"lora\", \"fedl2p\"]\n[fedl2p]\nrounds = 5\n")?;
        assert_eq!(
            f.trained_part(),
            ok.trained_part(),
            "FedL2P's nets keep their own settings"
        );
        let bad = "[eval]\nmethods = [\"fedl2p\"]\n";
        assert!(parse(&format!("{bad}[fedl2p]\nrounds = 0\n")).is_err());
        assert!(parse(&format!("{bad}[fedl2p.meta]\nval_ratio = 1.0\n")).is_err());
        assert!(
            parse("[fedl2p]\nrounds = 0\n").is_ok(),
            "unchecked while FedL2P is not evaluated"
        );
        Ok(())
    }
}
