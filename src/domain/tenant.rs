//! Tenants: the unit of isolation. Every stored item, index, taxonomy and
//! report belongs to exactly one tenant; API keys are bound to one.

use std::fmt;

/// The longest tenant name, in bytes.
pub const MAX_TENANT_BYTES: usize = 63;

/// A tenant name: 1 to 63 characters of `[a-z0-9_-]`, starting with a letter
/// or digit. It names a folder under the data directory, so it can never
/// hold a path separator or a dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant of anonymous access (`--auth off`) and of keys created
    /// with `--tenant default`: its data lives at the root of the data
    /// directory, where a single-tenant server keeps it.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(raw: &str) -> Result<TenantId, String> {
        let valid_first = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if raw.is_empty() || raw.len() > MAX_TENANT_BYTES || !valid_first {
            return Err(format!(
                "a tenant name has 1 to {MAX_TENANT_BYTES} characters of [a-z0-9_-] and starts with a letter or digit, got {raw:?}"
            ));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(format!(
                "a tenant name may only hold [a-z0-9_-], got {raw:?}"
            ));
        }
        Ok(TenantId(raw.to_string()))
    }

    pub fn default_tenant() -> TenantId {
        TenantId(Self::DEFAULT.to_string())
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        for good in [
            "default",
            "acme",
            "acme-eu",
            "t_1",
            "9lives",
            &"a".repeat(63),
        ] {
            assert_eq!(TenantId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "_x",
            "a/b",
            "..",
            "a.b",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TenantId::default_tenant().is_default());
    }
}
