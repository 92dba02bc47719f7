//! Personalization methods beyond the pruned-LoRA family of `personalize`: the pieces each one
//! contributes to the one training loop (`train::run_with`'s step hook, per-matrix learning
//! rates). The method interface that `personalize`, `reproduce`, `simulate` and the FFI choose
//! through grows here (issue 13); today: AdaLoRA's rank allocator.
pub mod adalora;
