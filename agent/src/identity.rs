//! Device fingerprint collection and the pinned identity mode for containers.
//!
//! Raw values never leave this module except through [`RawComponent`] (shown locally by
//! `tessera-agent fingerprint --show-raw`); what is sent and stored is the salted hash from
//! [`tessera_core::fingerprint::Component::hash_raw`].

use std::path::{Path, PathBuf};

use serde::Serialize;
use tessera_core::fingerprint::{Component, ComponentKind, Fingerprint};
use uuid::Uuid;

use crate::error::AgentError;

/// Environment variable holding a pinned identity value (containers).
pub const IDENTITY_ENV: &str = "TESSERA_AGENT_IDENTITY";
/// Environment variable naming a file whose content is the pinned identity (containers).
pub const IDENTITY_FILE_ENV: &str = "TESSERA_AGENT_IDENTITY_FILE";

/// How the device is identified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IdentityMode {
    /// Hardware components (machine id, MACs, CPU, memory, OS, hostname, root disk).
    #[default]
    Hardware,
    /// A pinned identity read from a file (e.g. a mounted `/etc/machine-id` or a Kubernetes secret).
    PinnedFile(PathBuf),
    /// A pinned identity given directly (e.g. from `TESSERA_AGENT_IDENTITY`).
    PinnedValue(String),
}

impl IdentityMode {
    /// `TESSERA_AGENT_IDENTITY` (a value) or `TESSERA_AGENT_IDENTITY_FILE` (a path) when set, else hardware.
    pub fn from_env() -> IdentityMode {
        if let Ok(v) = std::env::var(IDENTITY_ENV) {
            if !v.trim().is_empty() {
                return IdentityMode::PinnedValue(v);
            }
        }
        if let Ok(p) = std::env::var(IDENTITY_FILE_ENV) {
            if !p.trim().is_empty() {
                return IdentityMode::PinnedFile(PathBuf::from(p));
            }
        }
        IdentityMode::Hardware
    }
}

/// The host's DNS domain: the domain part of a fully qualified host name, else the first `domain` / `search`
/// entry of `/etc/resolv.conf`. `None` when the host has none. Reported for DOMAIN restrictions; the machine's
/// owner can set it, so such restrictions are advisory against the owner (docs/SECURITY.md).
pub fn host_domain() -> Option<String> {
    let host = hostname().map(|h| h.trim().to_ascii_lowercase()).unwrap_or_default();
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    domain_from(&host, &resolv)
}

fn domain_from(host: &str, resolv_conf: &str) -> Option<String> {
    let valid = |d: &str| {
        !d.is_empty()
            && d.len() <= 253
            && d.contains('.')
            && d.split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let clean = |d: &str| d.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Some((_, d)) = host.split_once('.') {
        let d = clean(d);
        if valid(&d) {
            return Some(d);
        }
    }
    resolv_conf.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        match words.next() {
            Some("domain" | "search") => words.map(clean).find(|d| valid(d) && d != "local" && !d.ends_with(".local")),
            _ => None,
        }
    })
}

/// One raw component value, for local display only.
#[derive(Debug, Clone, Serialize)]
pub struct RawComponent {
    pub kind: ComponentKind,
    pub raw: String,
}

/// The collected identity: raw values and their salted hashes.
#[derive(Debug, Clone)]
pub struct Collected {
    pub raw: Vec<RawComponent>,
    pub fingerprint: Fingerprint,
}

/// Collects the fingerprint for `mode`, salted with the product id.
pub fn collect(mode: &IdentityMode, product_id: Uuid) -> Result<Collected, AgentError> {
    let raw = match mode {
        IdentityMode::Hardware => hardware_components(),
        IdentityMode::PinnedValue(v) => vec![pinned(v, "the identity value")?],
        IdentityMode::PinnedFile(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                AgentError::Identity(format!(
                    "cannot read the identity file {}: {e}. Mount it (e.g. a Kubernetes secret or the host's /etc/machine-id) or unset {IDENTITY_FILE_ENV}",
                    p.display()
                ))
            })?;
            vec![pinned(&text, &format!("the identity file {}", p.display()))?]
        }
    };
    if !raw.iter().any(|r| matches!(r.kind, ComponentKind::MachineId | ComponentKind::Pinned)) {
        // Without a machine identity the fingerprint is CPU, memory and OS: every similar machine would match it.
        return Err(AgentError::Identity(format!(
            "no machine identity could be read on this machine (no /etc/machine-id, no firmware product UUID or \
             board serial readable by this user). Create one (`systemd-machine-id-setup`), run the agent with \
             access to /sys/class/dmi/id, or, in a container whose license allows a pinned identity, set \
             {IDENTITY_ENV} or {IDENTITY_FILE_ENV}"
        )));
    }
    Ok(hash_components(raw, product_id))
}

/// Hashes raw components with the product salt.
pub fn hash_components(raw: Vec<RawComponent>, product_id: Uuid) -> Collected {
    let salt = product_id.as_bytes();
    let fingerprint = Fingerprint::new(raw.iter().map(|r| Component::hash_raw(r.kind, salt, &r.raw)));
    Collected { raw, fingerprint }
}

fn pinned(value: &str, what: &str) -> Result<RawComponent, AgentError> {
    let v = value.trim();
    if v.len() < 8 {
        return Err(AgentError::Identity(format!(
            "{what} is empty or shorter than 8 characters: use a stable random value, e.g. the output of `uuidgen`"
        )));
    }
    Ok(RawComponent { kind: ComponentKind::Pinned, raw: v.to_string() })
}

fn hardware_components() -> Vec<RawComponent> {
    let mut out = Vec::new();
    let mut push = |kind, raw: Option<String>| {
        if let Some(raw) = raw.map(|r| r.trim().to_string()).filter(|r| !r.is_empty()) {
            out.push(RawComponent { kind, raw });
        }
    };
    push(ComponentKind::MachineId, machine_id());
    push(ComponentKind::Mac, permanent_macs());
    push(ComponentKind::Cpu, cpu());
    push(ComponentKind::Memory, memory_bucket());
    push(ComponentKind::Os, Some(std::env::consts::OS.to_string()));
    push(ComponentKind::Hostname, hostname().map(|h| h.to_lowercase()));
    push(ComponentKind::Disk, root_disk_id());
    out
}

#[cfg(target_os = "linux")]
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| sysinfo::System::host_name().ok())
}

#[cfg(not(target_os = "linux"))]
fn hostname() -> Option<String> {
    sysinfo::System::host_name().ok()
}

#[cfg(target_os = "linux")]
fn machine_id() -> Option<String> {
    machine_identity_under(Path::new("/"))
}

/// Values images and firmware ship in place of a real id: they would make every such machine look the same.
fn is_placeholder_id(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    let hex: String = v.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    v.is_empty()
        || v == "uninitialized"
        || (!hex.is_empty()
            && hex.len() == v.chars().filter(|c| *c != '-').count()
            && hex.chars().all(|c| c == '0' || c == 'f'))
        || v == "03000200-0400-0500-0006-000700080009"
        || [
            "none",
            "default string",
            "to be filled by o.e.m.",
            "not specified",
            "not applicable",
            "0",
            "system serial number",
            "123456789",
        ]
        .contains(&v.as_str())
}

/// The machine identity on Linux, under `root` (tests pass a directory laid out like `/`): the systemd / D-Bus
/// machine id; where an image has none (or a placeholder), the firmware's product UUID, then the board serial.
/// `None` when none of them is there: the caller refuses rather than fingerprint without an identity.
fn machine_identity_under(root: &Path) -> Option<String> {
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).ok().map(|s| s.trim().to_string()).filter(|s| !is_placeholder_id(s))
    };
    read("etc/machine-id")
        .or_else(|| read("var/lib/dbus/machine-id"))
        .or_else(|| read("sys/class/dmi/id/product_uuid").map(|u| format!("dmi-product:{}", u.to_ascii_lowercase())))
        .or_else(|| read("sys/class/dmi/id/board_serial").map(|s| format!("dmi-board:{s}")))
}

#[cfg(target_os = "macos")]
fn machine_id() -> Option<String> {
    let out = std::process::Command::new("ioreg").args(["-rd1", "-c", "IOPlatformExpertDevice"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find(|l| l.contains("IOPlatformUUID")).and_then(|l| l.split('"').nth(3)).map(str::to_string)
}

#[cfg(windows)]
fn machine_id() -> Option<String> {
    let out = std::process::Command::new("reg")
        .args(["query", r"HKLM\SOFTWARE\Microsoft\Cryptography", "/v", "MachineGuid"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find(|l| l.contains("MachineGuid")).and_then(|l| l.split_whitespace().last()).map(str::to_string)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn machine_id() -> Option<String> {
    None
}

/// Interface names that are virtual whatever the platform says.
fn is_virtual_name(name: &str) -> bool {
    const PREFIXES: [&str; 14] = [
        "lo", "docker", "veth", "br-", "virbr", "vmnet", "vboxnet", "tun", "tap", "wg", "zt", "cni", "flannel", "cali",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || name.starts_with("bridge")
}

/// A MAC is usable when it is not all-zero, not multicast and not locally administered (randomised).
pub fn is_permanent_mac(bytes: &[u8; 6]) -> bool {
    bytes != &[0u8; 6] && bytes[0] & 0x01 == 0 && bytes[0] & 0x02 == 0
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn format_macs(mut macs: Vec<[u8; 6]>) -> Option<String> {
    macs.sort_unstable();
    macs.dedup();
    if macs.is_empty() {
        return None;
    }
    Some(
        macs.iter()
            .map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

#[cfg(target_os = "linux")]
fn permanent_macs() -> Option<String> {
    // Physical interfaces have a `device` link in sysfs; addr_assign_type 0 means the burned-in address.
    let mut macs = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if is_virtual_name(&name) || !dir.join("device").exists() {
            continue;
        }
        let assign = std::fs::read_to_string(dir.join("addr_assign_type")).unwrap_or_default();
        if !matches!(assign.trim(), "0" | "") {
            continue;
        }
        if let Some(mac) =
            std::fs::read_to_string(dir.join("address")).ok().and_then(|s| parse_mac(&s)).filter(is_permanent_mac)
        {
            macs.push(mac);
        }
    }
    format_macs(macs)
}

#[cfg(not(target_os = "linux"))]
fn permanent_macs() -> Option<String> {
    let _ = parse_mac;
    let macs = mac_address::MacAddressIterator::new()
        .ok()?
        .filter(|m| mac_address::name_by_mac_address(m).ok().flatten().is_none_or(|n| !is_virtual_name(&n)))
        .map(|m| m.bytes())
        .filter(is_permanent_mac)
        .collect();
    format_macs(macs)
}

/// The machine's processor sockets and physical cores (PER_CPU / PER_CORE licenses); at least 1 of each.
#[cfg(target_os = "linux")]
pub fn cpu_count() -> tessera_core::model::CpuCount {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (mut sockets, mut cores) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    let (mut physical, mut core) = (String::new(), String::new());
    let mut processors = 0u32;
    for line in info.lines().chain(std::iter::once("")) {
        let Some((k, v)) = line.split_once(':') else {
            if !physical.is_empty() || !core.is_empty() {
                sockets.insert(physical.clone());
                cores.insert((std::mem::take(&mut physical), std::mem::take(&mut core)));
            }
            continue;
        };
        match k.trim() {
            "processor" => processors += 1,
            "physical id" => physical = v.trim().to_string(),
            "core id" => core = v.trim().to_string(),
            _ => {}
        }
    }
    // Without topology lines (some VMs and ARM kernels), every processor counts as a core of one socket.
    let cores = if cores.is_empty() { processors } else { cores.len() as u32 };
    tessera_core::model::CpuCount { sockets: (sockets.len() as u32).max(1), cores: cores.max(1) }
}

#[cfg(not(target_os = "linux"))]
pub fn cpu_count() -> tessera_core::model::CpuCount {
    let cores = sysinfo::System::physical_core_count().unwrap_or(1).max(1) as u32;
    tessera_core::model::CpuCount { sockets: 1, cores }
}

#[cfg(target_os = "linux")]
fn cpu() -> Option<String> {
    // /proc/cpuinfo directly: much cheaper than a sysinfo refresh, and this runs in every `check` process.
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut brand = String::new();
    let mut cores = std::collections::BTreeSet::new();
    let (mut physical, mut core) = (String::new(), String::new());
    let mut processors = 0usize;
    for line in info.lines().chain(std::iter::once("")) {
        let Some((k, v)) = line.split_once(':') else {
            if !core.is_empty() {
                cores.insert((std::mem::take(&mut physical), std::mem::take(&mut core)));
            }
            continue;
        };
        match k.trim() {
            "model name" | "Model" | "cpu model" if brand.is_empty() => brand = v.trim().to_string(),
            "processor" => processors += 1,
            "physical id" => physical = v.trim().to_string(),
            "core id" => core = v.trim().to_string(),
            _ => {}
        }
    }
    let count = if cores.is_empty() { processors } else { cores.len() };
    (!brand.is_empty() || count > 0).then(|| format!("{brand}/{count}"))
}

#[cfg(not(target_os = "linux"))]
fn cpu() -> Option<String> {
    let mut sys = sysinfo::System::new().ok()?;
    sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    let brand = sys.cpus().first().map(|c| c.brand().trim().to_string()).unwrap_or_default();
    let cores = sysinfo::System::physical_core_count().ok()?;
    Some(format!("{brand}/{cores}"))
}

/// Total memory rounded up to a power-of-two number of GiB, so small reservations do not change it.
pub fn memory_bucket_of(bytes: u64) -> String {
    let gib = bytes.div_ceil(1 << 30).max(1);
    format!("{}GiB", gib.next_power_of_two())
}

#[cfg(target_os = "linux")]
fn memory_bucket() -> Option<String> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    (kib > 0).then(|| memory_bucket_of(kib * 1024))
}

#[cfg(not(target_os = "linux"))]
fn memory_bucket() -> Option<String> {
    let mut sys = sysinfo::System::new().ok()?;
    sys.refresh_memory();
    let total = sys.total_memory();
    (total > 0).then(|| memory_bucket_of(total))
}

#[cfg(target_os = "linux")]
fn root_disk_id() -> Option<String> {
    // The root filesystem's UUID: the /dev/disk/by-uuid link that points at the device mounted on /.
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let dev = mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let dev = f.next()?;
        (f.next()? == "/" && dev.starts_with("/dev/")).then(|| dev.to_string())
    })?;
    let dev = std::fs::canonicalize(&dev).ok()?;
    std::fs::read_dir("/dev/disk/by-uuid")
        .ok()?
        .flatten()
        .find(|e| std::fs::canonicalize(e.path()).ok().as_deref() == Some(Path::new(&dev)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

#[cfg(not(target_os = "linux"))]
fn root_disk_id() -> Option<String> {
    let _ = Path::new("");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::fingerprint::{match_fingerprint, MatchPolicy};

    #[test]
    fn mac_filter_skips_randomised_and_multicast() {
        assert!(is_permanent_mac(&[0x00, 0x1b, 0x21, 1, 2, 3]));
        assert!(!is_permanent_mac(&[0x02, 0x42, 0xac, 0x11, 0, 2])); // docker, locally administered
        assert!(!is_permanent_mac(&[0x01, 0, 0x5e, 0, 0, 1])); // multicast
        assert!(!is_permanent_mac(&[0; 6]));
        assert!(is_virtual_name("veth12ab") && is_virtual_name("docker0") && !is_virtual_name("eth0"));
        assert_eq!(parse_mac("00:1B:21:01:02:03\n"), Some([0, 0x1b, 0x21, 1, 2, 3]));
    }

    #[test]
    fn memory_buckets_absorb_small_differences() {
        let gib = 1u64 << 30;
        assert_eq!(memory_bucket_of(15 * gib + gib / 2), "16GiB");
        assert_eq!(memory_bucket_of(16 * gib), "16GiB");
        assert_eq!(memory_bucket_of(17 * gib), "32GiB");
    }

    fn raw(v: &[(ComponentKind, &str)]) -> Vec<RawComponent> {
        v.iter().map(|(k, r)| RawComponent { kind: *k, raw: r.to_string() }).collect()
    }

    #[test]
    fn matching_tolerates_minor_changes_but_not_a_new_machine_id() {
        use ComponentKind::*;
        let p = Uuid::from_u128(7);
        let base = [
            (MachineId, "abc"),
            (Mac, "00:11:22:33:44:55"),
            (Cpu, "x/8"),
            (Memory, "16GiB"),
            (Os, "linux"),
            (Hostname, "box"),
        ];
        let bound = hash_components(raw(&base), p).fingerprint;
        let mut upgraded = base;
        upgraded[3] = (Memory, "32GiB");
        upgraded[5] = (Hostname, "renamed");
        let now = hash_components(raw(&upgraded), p).fingerprint;
        assert!(match_fingerprint(&MatchPolicy::default(), &bound, &now).is_match());
        let mut cloned = base;
        cloned[0] = (MachineId, "other");
        let now = hash_components(raw(&cloned), p).fingerprint;
        let out = match_fingerprint(&MatchPolicy::default(), &bound, &now);
        assert!(!out.is_match());
        assert_eq!(out.broken_deal_breaker, Some(MachineId));
    }

    #[test]
    fn a_missing_or_placeholder_machine_id_falls_back_to_firmware_ids() {
        let root = tempfile::tempdir().unwrap();
        let put = |rel: &str, v: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        };
        assert_eq!(machine_identity_under(root.path()), None, "nothing there: no identity");
        put("etc/machine-id", "\n");
        put("sys/class/dmi/id/board_serial", "To be filled by O.E.M.\n");
        assert_eq!(machine_identity_under(root.path()), None, "empty and placeholder values are not identities");
        put("sys/class/dmi/id/product_uuid", "00000000-0000-0000-0000-000000000000\n");
        assert_eq!(machine_identity_under(root.path()), None);
        put("sys/class/dmi/id/board_serial", "PF2XK9QZ\n");
        assert_eq!(machine_identity_under(root.path()).as_deref(), Some("dmi-board:PF2XK9QZ"));
        put("sys/class/dmi/id/product_uuid", "4C4C4544-0042-3510-8052-B4C04F333432\n");
        assert_eq!(
            machine_identity_under(root.path()).as_deref(),
            Some("dmi-product:4c4c4544-0042-3510-8052-b4c04f333432")
        );
        put("etc/machine-id", "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n");
        assert_eq!(machine_identity_under(root.path()).as_deref(), Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0"));
        assert!(is_placeholder_id("uninitialized") && is_placeholder_id("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"));
        assert!(!is_placeholder_id("0f1e2d3c4b5a69788796a5b4c3d2e1f0"));
    }

    #[test]
    fn the_host_domain_comes_from_the_host_name_or_resolv_conf() {
        assert_eq!(domain_from("build01.corp.example.com", "").as_deref(), Some("corp.example.com"));
        assert_eq!(
            domain_from("box", "nameserver 10.0.0.1\nsearch eu.example.com example.com\n").as_deref(),
            Some("eu.example.com")
        );
        assert_eq!(domain_from("box", "domain Example.COM.\n").as_deref(), Some("example.com"));
        assert_eq!(domain_from("box", "search local\n"), None);
        assert_eq!(domain_from("box", ""), None);
        assert_eq!(domain_from("box.", "search bad_domain.com\n"), None);
    }

    #[test]
    fn pinned_identity_is_stable_and_validated() {
        let p = Uuid::from_u128(9);
        let a = collect(&IdentityMode::PinnedValue("pod-identity-0001".into()), p).unwrap();
        let b = collect(&IdentityMode::PinnedValue(" pod-identity-0001\n".into()), p).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.components().len(), 1);
        assert!(collect(&IdentityMode::PinnedValue("short".into()), p).is_err());
        assert!(collect(&IdentityMode::PinnedFile("/nonexistent/id".into()), p).is_err());
    }
}
