//! Helpers shared by the integration tests that call the Python reference stack.
use std::path::{Path, PathBuf};

use anyhow::bail;

/// The reference python: `$FEDP2EFT_PY`, else `.venv-ref/bin/python` in the repository root.
pub fn reference_python() -> anyhow::Result<PathBuf> {
    if let Some(py) = std::env::var_os("FEDP2EFT_PY").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(py));
    }
    let venv = repo_root().join(".venv-ref/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    bail!(
        "no reference python: run scripts/reference/setup-venv.sh (creates .venv-ref with torch, \
         transformers and peft) or set FEDP2EFT_PY to a python that has them"
    )
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
