//! What a build of the agent trusts: the vendor's keyset, product id and policy limits, compiled in.
//!
//! A customer controls the machine the agent runs on: flags, environment and files. If the keyset came from
//! any of them, a customer could run their own `tessera-server`, sign themselves a license and point the agent
//! at its keys. So a **vendor build** trusts only what was compiled into it ([`Trust::Vendor`]) and refuses every
//! runtime override of it; a build without a compiled-in keyset is a **development build**
//! ([`Trust::Development`]), takes the keyset and product from flags, and says so in every output.
//!
//! Two ways to make a vendor build (agent/README.md, "Vendor builds"):
//! - build this crate's binary with `TESSERA_VENDOR_KEYSET=keyset.json TESSERA_VENDOR_PRODUCT_ID=…` (build.rs);
//! - or write a three-line `main` of your own that calls [`crate::cli::main`] with
//!   [`VendorBuild::from_parts`] over `include_str!("keyset.json")`.
//!
//! Applications that embed the library pass their keyset from their own code ([`crate::AgentConfig::new`]):
//! the strongest mode, since the keyset then lives in the vendor's own binary.

use chrono::Duration;
use tessera_core::PublicKeyset;
use uuid::Uuid;

use crate::error::AgentError;

/// The constants build.rs compiles in.
#[derive(Debug, Clone, Copy)]
pub struct CompiledIn {
    pub keyset_json: &'static str,
    pub product_id: &'static str,
    pub max_clock_tolerance_secs: i64,
    pub name: Option<&'static str>,
}

mod compiled {
    include!(concat!(env!("OUT_DIR"), "/vendor.rs"));
}

/// A vendor build's trust anchors.
#[derive(Debug, Clone)]
pub struct VendorBuild {
    pub name: Option<String>,
    pub keyset: PublicKeyset,
    pub product_id: Uuid,
    /// The most clock tolerance a user may choose; the default tolerance is this too.
    pub max_clock_tolerance: Duration,
}

/// What this build trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    Vendor(VendorBuild),
    Development,
}

impl From<VendorBuild> for Trust {
    fn from(v: VendorBuild) -> Trust {
        Trust::Vendor(v)
    }
}

impl VendorBuild {
    /// A vendor build from its parts (a vendor's own `main`, or build.rs's constants).
    pub fn from_parts(
        keyset_json: &str,
        product_id: &str,
        max_clock_tolerance_secs: Option<i64>,
        name: Option<&str>,
    ) -> Result<VendorBuild, AgentError> {
        let keyset = PublicKeyset::from_json(keyset_json)
            .map_err(|e| AgentError::Config(format!("the vendor keyset compiled into this build is not valid ({e}): rebuild it with the JSON from `tessera-server keys export`")))?;
        let product_id = Uuid::parse_str(product_id.trim()).map_err(|_| {
            AgentError::Config(format!(
                "the product id compiled into this build ({product_id:?}) is not a UUID: rebuild it"
            ))
        })?;
        let secs = max_clock_tolerance_secs.unwrap_or(crate::DEFAULT_CLOCK_TOLERANCE_SECS).clamp(0, 7 * 86_400);
        Ok(VendorBuild {
            name: name.map(str::to_string),
            keyset,
            product_id,
            max_clock_tolerance: Duration::seconds(secs),
        })
    }

    /// The key ids of the compiled-in keyset, in keyset order.
    pub fn key_ids(&self) -> Vec<String> {
        self.keyset.keys().iter().map(|k| k.key_id().to_string()).collect()
    }

    /// One line naming the build: vendor, product and the keys it trusts.
    pub fn describe(&self) -> String {
        format!(
            "vendor build{} for product {}, trusting key{} {}",
            self.name.as_deref().map(|n| format!(" of {n}")).unwrap_or_default(),
            self.product_id,
            if self.key_ids().len() == 1 { "" } else { "s" },
            self.key_ids().join(", ")
        )
    }
}

impl Trust {
    /// What build.rs compiled in: a vendor build, or a development build when nothing was.
    pub fn from_build() -> Result<Trust, AgentError> {
        match compiled::VENDOR {
            None => Ok(Trust::Development),
            Some(c) => Ok(Trust::Vendor(VendorBuild::from_parts(
                c.keyset_json,
                c.product_id,
                Some(c.max_clock_tolerance_secs),
                c.name,
            )?)),
        }
    }

    pub fn is_vendor(&self) -> bool {
        matches!(self, Trust::Vendor(_))
    }

    /// One line for `--version`, `status` and warnings.
    pub fn describe(&self) -> String {
        match self {
            Trust::Vendor(v) => v.describe(),
            Trust::Development => DEVELOPMENT_NOTICE.to_string(),
        }
    }
}

/// What a development build says in every output.
pub const DEVELOPMENT_NOTICE: &str =
    "development build: the keyset and product come from flags or the environment, so \
     whoever controls this machine chooses what it trusts; vendors ship a vendor build (agent/README.md)";

#[cfg(test)]
mod tests {
    use super::*;

    const KEYSET: &str = include_str!("../../keys/test/keyset.json");

    #[test]
    fn a_vendor_build_names_its_keys_and_product() {
        let v = VendorBuild::from_parts(KEYSET, "0192b6a4-0000-7000-8000-000000000001", None, Some("Acme")).unwrap();
        assert_eq!(v.key_ids(), ["6c52680b2e47bc41", "179b0de8f3a372f5", "a4d7f93ffc5a1ce0"]);
        assert_eq!(v.max_clock_tolerance, Duration::seconds(crate::DEFAULT_CLOCK_TOLERANCE_SECS));
        let d = v.describe();
        assert!(d.contains("Acme") && d.contains("6c52680b2e47bc41") && d.contains("0192b6a4-"), "{d}");
    }

    #[test]
    fn bad_compiled_in_parts_are_refused_with_what_to_do() {
        let e = VendorBuild::from_parts("{}", "0192b6a4-0000-7000-8000-000000000001", None, None).unwrap_err();
        assert!(e.to_string().contains("rebuild"), "{e}");
        let e = VendorBuild::from_parts(KEYSET, "not-a-uuid", None, None).unwrap_err();
        assert!(e.to_string().contains("not a UUID"), "{e}");
    }

    #[test]
    fn this_build_is_what_build_rs_compiled_in() {
        // Plain `cargo test` builds a development build; a vendor pipeline that sets TESSERA_VENDOR_KEYSET runs
        // this test too and then checks that its keyset parses.
        let t = Trust::from_build().unwrap();
        assert_eq!(
            t.is_vendor(),
            std::env::var_os("TESSERA_VENDOR_KEYSET").is_some() && option_env!("TESSERA_VENDOR_KEYSET").is_some()
        );
    }
}
