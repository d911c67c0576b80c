//! Countries of client addresses from a GeoIP database (MaxMind DB format), for `GEOGRAPHIC` restrictions.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::PathElement;

/// A loaded country database. Lookups are pure reads of the in-memory file.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl GeoIp {
    /// Loads the database at `path`; the error names the file and what is wrong with it.
    pub fn open(path: &Path) -> Result<GeoIp, String> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| format!("the GeoIP database {} cannot be read: {e}", path.display()))?;
        Ok(GeoIp { reader })
    }

    /// The ISO 3166-1 alpha-2 code (upper case) of the country the database places `ip` in; `None` when it
    /// has none (private and reserved ranges, unknown networks, an IPv6 address in an IPv4-only database).
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(ip).ok()?;
        let code: Option<&str> =
            found.decode_path(&[PathElement::Key("country"), PathElement::Key("iso_code")]).ok().flatten();
        code.filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic())).map(str::to_ascii_uppercase)
    }
}
