//! The protocol version. JSON control messages are versioned by the URL prefix (`/v1/...`);
//! tensor payloads carry the version in their metadata because they are stored and outlive
//! the request that brought them.
use crate::{Error, Result};

/// Bumped on any change an older peer could misread (see docs/protocol.md, "Versioning").
pub const PROTOCOL_VERSION: u32 = 1;

/// Path prefix of every API route of this protocol version.
pub const API_PREFIX: &str = "/v1";

pub fn check_protocol(found: u32) -> Result<()> {
    if found == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Error::WrongProtocol {
            found,
            expected: PROTOCOL_VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_names_the_version() {
        assert_eq!(API_PREFIX, format!("/v{PROTOCOL_VERSION}"));
        assert!(check_protocol(PROTOCOL_VERSION).is_ok());
        assert!(matches!(
            check_protocol(PROTOCOL_VERSION + 1),
            Err(Error::WrongProtocol { .. })
        ));
    }
}
