//! Small binary Galois fields for the typo-detecting checksums.

/// GF(2^5) with the primitive polynomial x^5 + x^2 + 1.
pub mod gf32 {
    const POLY: u16 = 0b10_0101;
    const ORDER: usize = 31;

    const fn build() -> ([u8; 62], [u8; 32]) {
        let mut exp = [0u8; 62];
        let mut log = [0u8; 32];
        let mut x: u16 = 1;
        let mut i = 0;
        while i < ORDER {
            exp[i] = x as u8;
            exp[i + ORDER] = x as u8;
            log[x as usize] = i as u8;
            x <<= 1;
            if x & 0x20 != 0 {
                x ^= POLY;
            }
            i += 1;
        }
        (exp, log)
    }
    const TABLES: ([u8; 62], [u8; 32]) = build();

    /// α^i.
    pub fn exp(i: usize) -> u8 {
        TABLES.0[i % ORDER]
    }

    pub fn mul(a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            return 0;
        }
        TABLES.0[TABLES.1[a as usize] as usize + TABLES.1[b as usize] as usize]
    }
}

/// GF(2^15) with the primitive polynomial x^15 + x + 1 (tables built once, on first use).
pub mod gf32k {
    use std::sync::OnceLock;

    const POLY: u32 = (1 << 15) | 2 | 1;
    pub const ORDER: usize = 32767;

    struct Tables {
        exp: Vec<u16>,
        log: Vec<u16>,
    }

    fn tables() -> &'static Tables {
        static T: OnceLock<Tables> = OnceLock::new();
        T.get_or_init(|| {
            let mut exp = vec![0u16; 2 * ORDER];
            let mut log = vec![0u16; ORDER + 1];
            let mut x: u32 = 1;
            for i in 0..ORDER {
                exp[i] = x as u16;
                exp[i + ORDER] = x as u16;
                log[x as usize] = i as u16;
                x <<= 1;
                if x & (1 << 15) != 0 {
                    x ^= POLY;
                }
            }
            Tables { exp, log }
        })
    }

    pub fn exp(i: usize) -> u16 {
        tables().exp[i % ORDER]
    }

    #[cfg(test)]
    pub fn log(a: u16) -> Option<usize> {
        if a == 0 || usize::from(a) > ORDER {
            return None;
        }
        Some(usize::from(tables().log[usize::from(a)]))
    }

    pub fn mul(a: u16, b: u16) -> u16 {
        if a == 0 || b == 0 {
            return 0;
        }
        let t = tables();
        t.exp[usize::from(t.log[usize::from(a)]) + usize::from(t.log[usize::from(b)])]
    }

    pub fn div(a: u16, b: u16) -> Option<u16> {
        if b == 0 {
            return None;
        }
        if a == 0 {
            return Some(0);
        }
        let t = tables();
        Some(t.exp[usize::from(t.log[usize::from(a)]) + ORDER - usize::from(t.log[usize::from(b)])])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_primitive() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..31 {
            assert!(seen.insert(gf32::exp(i)), "α^{i} repeats: polynomial not primitive");
        }
        let mut seen = std::collections::HashSet::new();
        for i in 0..gf32k::ORDER {
            assert!(seen.insert(gf32k::exp(i)));
        }
        for a in (1..32768u16).step_by(7) {
            assert_eq!(gf32k::div(gf32k::mul(a, 12345), 12345), Some(a));
            assert_eq!(gf32k::exp(gf32k::log(a).unwrap_or(0)), a);
        }
    }
}
