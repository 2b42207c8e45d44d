//! Number parsing for coordinates and ids, with a fast path for plain decimals.

/// Powers of ten for the decimal fast path.
const POW10: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Parses a decimal like `-12.480`; falls back to the standard parser for anything
/// else (exponents, `nan`, long mantissas). `None` when it is not a number.
pub fn parse_f32(text: &str) -> Option<f32> {
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    if !digits.is_empty() && digits.len() <= 15 {
        let mut mantissa: u64 = 0;
        let mut fraction_digits: Option<usize> = None;
        let mut ok = true;
        let mut any_digit = false;
        for &b in digits {
            match b {
                b'0'..=b'9' => {
                    mantissa = mantissa * 10 + (b - b'0') as u64;
                    any_digit = true;
                    if let Some(f) = fraction_digits.as_mut() {
                        *f += 1;
                    }
                }
                b'.' if fraction_digits.is_none() => fraction_digits = Some(0),
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        let scale = fraction_digits.unwrap_or(0);
        if ok && any_digit && scale < POW10.len() {
            let value = mantissa as f64 / POW10[scale];
            return Some(if negative { -value } else { value } as f32);
        }
    }
    text.parse::<f32>().ok()
}

/// Parses a decimal integer (optional sign). Up to nine digits (no overflow possible)
/// take a fast path; anything else goes to the standard parser.
pub fn parse_i32(text: &str) -> Option<i32> {
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    if (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) {
        let value = digits.iter().fold(0i32, |v, &d| v * 10 + (d - b'0') as i32);
        return Some(if negative { -value } else { value });
    }
    text.parse::<i32>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_decimals_and_rejects_garbage() {
        assert_eq!(parse_f32("-12.480"), Some(-12.48));
        assert_eq!(parse_f32("3"), Some(3.0));
        assert_eq!(parse_f32("+.5"), Some(0.5));
        assert_eq!(parse_f32("1e3"), Some(1000.0));
        for bad in ["", ".", "-", "1.2.3", "abc", "?"] {
            assert_eq!(parse_f32(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn integers_match_std(text in "[-+]?[0-9]{0,12}|[-+0-9a]{0,6}") {
            prop_assert_eq!(parse_i32(&text), text.parse::<i32>().ok());
        }

        #[test]
        fn fast_path_matches_std(v in -99999.0f64..99999.0, decimals in 0usize..4) {
            let text = format!("{v:.decimals$}");
            prop_assert_eq!(parse_f32(&text), text.parse::<f32>().ok());
        }
    }
}
