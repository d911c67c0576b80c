//! A vendor build of `tessera-agent`, made the way agent/README.md tells a vendor to: a `main` of its own that
//! compiles in the vendor's public keyset and product id. This one trusts the public test keyset
//! (`keys/test/keyset.json`) and the e2e suite's product; the suite drives it as a customer would.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    let vendor = tessera_agent::vendor::VendorBuild::from_parts(
        include_str!("../../keys/test/keyset.json"),
        tessera_test_support::vendor::PRODUCT_ID,
        Some(tessera_test_support::vendor::MAX_CLOCK_TOLERANCE_SECS),
        Some("Tessera e2e"),
    );
    tessera_agent::cli::main(vendor.map(Into::into))
}
