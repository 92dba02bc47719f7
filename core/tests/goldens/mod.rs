//! Reading the golden files of `tests/golden/` that the Python reference scripts write.
use serde_json::Value;

/// `tests/golden/<name>` parsed.
pub fn golden(name: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name),
    )?;
    Ok(serde_json::from_str(&text)?)
}

/// A JSON array of token ids (not every test that includes this module reads token ids).
#[allow(dead_code)]
pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as u32)
        .collect()
}
