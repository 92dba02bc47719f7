//! Run names and client ids appear in URL paths and in payload metadata. Restricting them to
//! a URL-safe alphabet means nobody has to escape them and no id can be a `.`/`..` segment.
use crate::{Error, Result};

pub const MAX_ID_LEN: usize = 64;

/// 1..=64 ASCII letters, digits, `-`, `_`, `.`; not starting with `.`.
pub fn check_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::field(
            field,
            format!("must be 1..={MAX_ID_LEN} characters, got {}", id.len()),
        ));
    }
    if id.starts_with('.') {
        return Err(Error::field(field, "must not start with `.`"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::field(
            field,
            format!("character {c:?} not allowed (letters, digits, - _ . only)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_url_safe() {
        for ok in ["c0", "client-17", "xnli_seen.3", "A"] {
            assert!(check_id("client", ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in ["", "..", ".x", "a/b", "a b", "é", "a?b", long.as_str()] {
            assert!(
                matches!(
                    check_id("client", bad),
                    Err(Error::InvalidField {
                        field: "client",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
