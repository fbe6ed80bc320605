//! Sizes written by people: `500M`, `2G`, `512KiB` (powers of 1024).

use crate::error::{Error, Result};

/// Parses a byte count with an optional unit (K, M, G, T; `B`, `iB` allowed).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || Error::invalid(format!("bad size {text:?}: use e.g. 500M or 2G"));
    let text = text.trim();
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(at);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("7").unwrap(), 7);
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
