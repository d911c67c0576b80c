//! placeholder crate root; filled by the e2e issue
