//! Copy-paste codes for humans: `REQ1-XXXXX-XXXXX-…`.
//!
//! Layout of the symbols after the prefix (Crockford base32, 5 bits each, shown in hyphenated groups of five):
//!
//! ```text
//! L1 L0 | d0 … d(m-1) | C1 | C2a C2b C2c
//! ```
//!
//! `L` is the number of data symbols `m` (10 bits), so a code cut short is reported as truncated. `C2` is a
//! 15-bit syndrome over GF(2^15): `Σ α^(i+OFFSET) · v_i` over the `k = m + 2` symbols before it; `C1` makes the
//! XOR of all symbols zero. A single substitution with error `e` shows as `ΔXOR = e` and `ΔC2 = α^p · e`, where
//! `p` is a position weight unique to each symbol (data `i` → `i + OFFSET`, the C2 symbols → 10, 5, 0, C1 → no
//! C2 change), so every single substitution is detected and placed exactly. An adjacent transposition leaves
//! the XOR unchanged and changes C2 by `(w_j + w_j+1) · e ≠ 0`: always detected, and placed by checking each
//! adjacent pair (a rare second candidate is named too). Six check and length symbols in all, however long
//! the code.

use std::fmt;

use crate::encoding::{crockford_value, CROCKFORD};
use crate::gf::gf32k;

pub const GROUP: usize = 5;
/// Largest data part a code can carry (10-bit length field, minus the symbols the position check needs).
pub const MAX_DATA_SYMBOLS: usize = 1023;
/// Position weights of the covered symbols in C2 are α^((i + OFFSET) · STRIDE). The stride (prime, coprime to
/// 2^15 - 1) spreads neighbouring weights across the field, so a transposition's syndrome does not also match
/// a shifted copy of itself at a nearby position. α^0, α^5 and α^10 belong to the C2 symbols themselves.
const OFFSET: usize = 11;
const STRIDE: usize = 4099;
const CHECKS: usize = 4;
/// Inputs longer than this are refused before any work.
pub const MAX_INPUT_LEN: usize = 4096;

/// The kinds of code, each with its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeKind {
    OfflineRequest,
    OfflineResponse,
    DeactivationReceipt,
    Emergency,
}

impl CodeKind {
    pub const ALL: [CodeKind; 4] =
        [CodeKind::OfflineRequest, CodeKind::OfflineResponse, CodeKind::DeactivationReceipt, CodeKind::Emergency];

    /// Type letters and format version.
    pub fn prefix(self) -> &'static str {
        match self {
            CodeKind::OfflineRequest => "REQ1",
            CodeKind::OfflineResponse => "RSP1",
            CodeKind::DeactivationReceipt => "RCT2",
            CodeKind::Emergency => "EMG1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CodeKind::OfflineRequest => "offline request code",
            CodeKind::OfflineResponse => "offline response code",
            CodeKind::DeactivationReceipt => "deactivation receipt",
            CodeKind::Emergency => "emergency code",
        }
    }

    /// The kind a code text claims to be, from its prefix.
    pub fn detect(text: &str) -> Option<CodeKind> {
        let head: String = text.chars().filter(|c| !c.is_whitespace() && *c != '-').take(4).collect();
        CodeKind::ALL.into_iter().find(|k| head.eq_ignore_ascii_case(k.prefix()))
    }
}

impl fmt::Display for CodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    #[error("the code is empty: paste the whole code, starting with its prefix (e.g. REQ1-)")]
    Empty,
    #[error("the code is too long to be a Tessera code ({0} characters)")]
    Oversized(usize),
    #[error("unknown code prefix {found:?}: Tessera codes start with REQ1-, RSP1-, RCT2- or EMG1-")]
    UnknownPrefix { found: String },
    #[error("this {kind} ({found}) was made by an older agent and is no longer accepted: {what}")]
    Retired { kind: CodeKind, found: &'static str, what: &'static str },
    #[error("this is an {found}, but an {expected} is needed here")]
    WrongKind { expected: CodeKind, found: CodeKind },
    #[error("invalid character {ch:?} in group {group}, position {position}: codes use 0-9 and A-Z except U")]
    InvalidCharacter { ch: char, group: usize, position: usize },
    #[error("the code is cut short: {missing} characters are missing after group {last_group}; copy the whole code")]
    Truncated { missing: usize, last_group: usize },
    #[error("the code has {extra} characters too many after group {last_group}: was something pasted twice?")]
    TooLong { extra: usize, last_group: usize },
    #[error("typo in group {group}: compare that group with the original")]
    Typo { group: usize },
    #[error("two characters are swapped in group {group}{}: compare that group with the original", alternative.map(|g| format!(" (or group {g})")).unwrap_or_default())]
    Swapped { group: usize, alternative: Option<usize> },
    #[error("the code has several typos: compare it with the original group by group")]
    Damaged,
    #[error("the {kind} is not valid: {reason}")]
    Payload { kind: CodeKind, reason: String },
}

/// Encodes data symbols (5-bit values) as a code text with prefix, length, check symbols and groups.
pub fn encode_symbols(kind: CodeKind, data: &[u8]) -> Result<String, CodeError> {
    if data.len() > MAX_DATA_SYMBOLS {
        return Err(CodeError::Payload {
            kind,
            reason: format!("{} characters of data is more than a code can carry ({MAX_DATA_SYMBOLS})", data.len()),
        });
    }
    let m = data.len();
    let mut sym = Vec::with_capacity(m + 2 + CHECKS);
    sym.push(((m >> 5) & 31) as u8);
    sym.push((m & 31) as u8);
    sym.extend(data[..m].iter().map(|v| v & 31));
    let c2 = c2_of(&sym);
    let c2_syms = [(c2 >> 10) as u8 & 31, (c2 >> 5) as u8 & 31, c2 as u8 & 31];
    let c1 = sym.iter().chain(&c2_syms).fold(0u8, |a, v| a ^ v);
    sym.push(c1);
    sym.extend_from_slice(&c2_syms);

    let mut out = String::with_capacity(5 + sym.len() * 6 / 5 + 1);
    out.push_str(kind.prefix());
    for (i, v) in sym.iter().enumerate() {
        if i % GROUP == 0 {
            out.push('-');
        }
        out.push(CROCKFORD[*v as usize] as char);
    }
    Ok(out)
}

/// Encodes bytes as a code.
pub fn encode(kind: CodeKind, bytes: &[u8]) -> Result<String, CodeError> {
    encode_symbols(kind, &crate::encoding::bytes_to_symbols(bytes))
}

/// Decodes a code of the expected kind to its bytes.
pub fn decode(expected: CodeKind, text: &str) -> Result<Vec<u8>, CodeError> {
    let symbols = decode_symbols(expected, text)?;
    crate::encoding::symbols_to_bytes(&symbols)
        .ok_or(CodeError::Payload { kind: expected, reason: "non-canonical padding".into() })
}

fn c2_of(covered: &[u8]) -> u16 {
    covered.iter().enumerate().fold(0u16, |acc, (i, &v)| acc ^ gf32k::mul(data_weight(i), u16::from(v)))
}

fn data_weight(i: usize) -> u16 {
    gf32k::exp((i + OFFSET) * STRIDE)
}

enum Fault {
    Substitution(usize),
    Transposition(usize, Option<usize>),
    /// More than one error: detected, but not placed.
    Unplaced,
}

/// Checks all symbols (length, data, checks); `None` when they are consistent.
fn locate(sym: &[u8]) -> Option<Fault> {
    let n = sym.len();
    let k = n - CHECKS;
    let dx = sym.iter().fold(0u8, |a, v| a ^ v);
    let stored = (u16::from(sym[k + 1]) << 10) | (u16::from(sym[k + 2]) << 5) | u16::from(sym[k + 3]);
    let d2 = c2_of(&sym[..k]) ^ stored;
    // Weight of each position in C2's syndrome (C1 has none).
    let weight = |j: usize| -> u16 {
        match j {
            j if j < k => data_weight(j),
            j if j == k => 0,
            j => gf32k::exp(5 * (n - 1 - j)),
        }
    };
    match (dx != 0, d2 != 0) {
        (false, false) => None,
        (true, false) => Some(Fault::Substitution(k)),
        (true, true) => {
            let w = gf32k::div(d2, u16::from(dx)).unwrap_or(0);
            let at = (0..n).find(|&j| j != k && weight(j) == w);
            Some(at.map_or(Fault::Unplaced, Fault::Substitution))
        }
        (false, true) => {
            let mut found = (0..n - 1).filter(|&j| {
                let e = u16::from(sym[j] ^ sym[j + 1]);
                e != 0 && gf32k::mul(weight(j) ^ weight(j + 1), e) == d2
            });
            match found.next() {
                Some(j) => Some(Fault::Transposition(j, found.next())),
                None => Some(Fault::Unplaced),
            }
        }
    }
}

fn group_of(index: usize) -> usize {
    index / GROUP + 1
}

fn normalize_prefix_char(c: char) -> char {
    match c.to_ascii_uppercase() {
        'I' | 'L' => '1',
        'O' => '0',
        c => c,
    }
}

/// The kind named by the first four characters of a compacted code.
/// Prefixes of code formats that are no longer accepted, with what to do instead.
const RETIRED: &[(&str, CodeKind, &str)] = &[(
    "RCT1",
    CodeKind::DeactivationReceipt,
    "it does not name the grant it ends; update tessera-agent and make a new receipt, or ask the vendor's staff \
     to release the seat",
)];

fn prefix_kind(head: &[char]) -> Result<CodeKind, CodeError> {
    let norm: String = head.iter().take(4).map(|&c| normalize_prefix_char(c)).collect();
    if let Some((found, kind, what)) = RETIRED.iter().find(|(p, _, _)| norm == *p) {
        return Err(CodeError::Retired { kind: *kind, found, what });
    }
    CodeKind::ALL
        .into_iter()
        .find(|k| norm == k.prefix())
        .ok_or_else(|| CodeError::UnknownPrefix { found: head.iter().take(4).collect() })
}

/// Decodes a code of the expected kind to its data symbols.
pub fn decode_symbols(expected: CodeKind, text: &str) -> Result<Vec<u8>, CodeError> {
    if text.len() > MAX_INPUT_LEN {
        return Err(CodeError::Oversized(text.len()));
    }
    let compact: Vec<char> = text.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    if compact.is_empty() {
        return Err(CodeError::Empty);
    }
    let found = prefix_kind(&compact)?;
    if found != expected {
        return Err(CodeError::WrongKind { expected, found });
    }
    let body = &compact[4.min(compact.len())..];
    let mut sym = Vec::with_capacity(body.len());
    for (i, &ch) in body.iter().enumerate() {
        let v = u8::try_from(ch).ok().and_then(crockford_value).ok_or(CodeError::InvalidCharacter {
            ch,
            group: group_of(i),
            position: i % GROUP + 1,
        })?;
        sym.push(v);
    }
    let n = sym.len();
    let last_group = group_of(n.saturating_sub(1));
    let overhead = 2 + CHECKS;
    if n < overhead {
        return Err(CodeError::Truncated { missing: overhead - n, last_group });
    }
    let declared = (usize::from(sym[0]) << 5) | usize::from(sym[1]);
    let actual = n - overhead;
    let fault = locate(&sym);
    if declared != actual {
        // A typo in the length symbols themselves is a typo, not a truncation.
        match fault {
            Some(Fault::Substitution(i @ 0..=1)) => return Err(CodeError::Typo { group: group_of(i) }),
            Some(Fault::Transposition(0..=1, _)) => return Err(CodeError::Swapped { group: 1, alternative: None }),
            _ => {}
        }
        return Err(if declared > actual {
            CodeError::Truncated { missing: declared - actual, last_group }
        } else {
            CodeError::TooLong { extra: actual - declared, last_group }
        });
    }
    match fault {
        None => Ok(sym[2..n - CHECKS].to_vec()),
        Some(Fault::Substitution(i)) => Err(CodeError::Typo { group: group_of(i) }),
        Some(Fault::Transposition(j, alt)) => {
            let group = group_of(j);
            Err(CodeError::Swapped { group, alternative: alt.map(group_of).filter(|g| *g != group) })
        }
        Some(Fault::Unplaced) => Err(CodeError::Damaged),
    }
}

/// Splits a long code over lines of at most `width` characters, breaking only between groups.
pub fn wrap(code: &str, width: usize) -> String {
    let mut out = String::with_capacity(code.len() + code.len() / width.max(1) + 1);
    let mut line = 0usize;
    for (i, part) in code.split('-').enumerate() {
        if i > 0 {
            if line + 1 + part.len() > width {
                out.push_str("-\n");
                line = 0;
            } else {
                out.push('-');
                line += 1;
            }
        }
        out.push_str(part);
        line += part.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + 3) % 32) as u8).collect()
    }

    #[test]
    fn round_trip_and_tolerant_input() {
        assert!(encode_symbols(CodeKind::OfflineRequest, &sample(MAX_DATA_SYMBOLS + 1)).is_err());
        for len in [0, 1, 4, 5, 6, 100, 300, MAX_DATA_SYMBOLS] {
            let data = sample(len);
            let code = encode_symbols(CodeKind::OfflineRequest, &data).expect("fits");
            assert_eq!(decode_symbols(CodeKind::OfflineRequest, &code).expect("decode"), data);
            let sloppy = wrap(&code, 40).to_lowercase().replace('0', "o").replace('1', "l");
            assert_eq!(decode_symbols(CodeKind::OfflineRequest, &format!("  {sloppy}\n")).expect("sloppy"), data);
        }
    }

    #[test]
    fn every_substitution_located() {
        let data = sample(60);
        let code = encode_symbols(CodeKind::Emergency, &data).expect("fits");
        let body_start = 5;
        let chars: Vec<char> = code.chars().collect();
        let mut body_index = 0;
        for pos in body_start..chars.len() {
            if chars[pos] == '-' {
                continue;
            }
            for &c in CROCKFORD {
                let c = c as char;
                if c == chars[pos] {
                    continue;
                }
                let mut t = chars.clone();
                t[pos] = c;
                let t: String = t.into_iter().collect();
                let err = decode_symbols(CodeKind::Emergency, &t).expect_err("must fail");
                assert_eq!(err, CodeError::Typo { group: body_index / GROUP + 1 }, "at {pos} -> {c}");
            }
            body_index += 1;
        }
    }

    #[test]
    fn every_adjacent_transposition_located() {
        let data = sample(60);
        let code = encode_symbols(CodeKind::Emergency, &data).expect("fits");
        let body: Vec<char> = code[5..].chars().filter(|c| *c != '-').collect();
        for i in 0..body.len() - 1 {
            if body[i] == body[i + 1] {
                continue;
            }
            let mut b = body.clone();
            b.swap(i, i + 1);
            let t = format!("EMG1{}", b.into_iter().collect::<String>());
            let err = decode_symbols(CodeKind::Emergency, &t).expect_err("must fail");
            match err {
                CodeError::Swapped { group, alternative } => {
                    let expected = i / GROUP + 1;
                    assert!(group == expected || alternative == Some(expected), "swap at {i}: {err:?}");
                }
                other => panic!("swap at {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn position_weights_are_distinct() {
        let mut seen: std::collections::HashSet<u16> = [1, gf32k::exp(5), gf32k::exp(10)].into();
        for i in 0..MAX_DATA_SYMBOLS + 2 {
            assert!(seen.insert(data_weight(i)), "weight of {i} repeats");
        }
    }

    #[test]
    fn truncation_reported() {
        let code = encode_symbols(CodeKind::OfflineResponse, &sample(100)).expect("fits");
        for cut in [1, 3, 6, 50] {
            let t = &code[..code.len() - cut];
            let err = decode_symbols(CodeKind::OfflineResponse, t).expect_err("truncated");
            assert!(matches!(err, CodeError::Truncated { .. }), "cut {cut}: {err:?}");
        }
        let err = decode_symbols(CodeKind::OfflineResponse, &format!("{code}-ABCDE")).expect_err("long");
        assert!(matches!(err, CodeError::TooLong { extra: 5, .. }));
    }

    #[test]
    fn kind_and_prefix() {
        let code = encode_symbols(CodeKind::OfflineRequest, &sample(10)).expect("fits");
        assert_eq!(
            decode_symbols(CodeKind::Emergency, &code),
            Err(CodeError::WrongKind { expected: CodeKind::Emergency, found: CodeKind::OfflineRequest })
        );
        assert!(matches!(decode_symbols(CodeKind::Emergency, "XYZ1-ABCDE"), Err(CodeError::UnknownPrefix { .. })));
        assert_eq!(CodeKind::detect(" rsp1-abc"), Some(CodeKind::OfflineResponse));
        assert!(matches!(
            decode_symbols(CodeKind::OfflineRequest, "REQ1-ABCDU"),
            Err(CodeError::InvalidCharacter { ch: 'U', group: 1, position: 5 })
        ));
    }
}
