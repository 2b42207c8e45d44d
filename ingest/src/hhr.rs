//! HHsearch/HHblits `.hhr` result files → [`TemplateHit`]s.
//!
//! Every `No N` block becomes one hit: the `>` name line, the `Probab=… E-value=… Score=…
//! Aligned_cols=… Sum_probs=…` line, and the `Q`/`T` alignment lines (consensus and
//! secondary-structure lines skipped), concatenated over blocks with 0-based residue
//! indices (-1 at gaps).

use std::path::Path;

use scalefold_featurize::inputs::TemplateHit;

use crate::error::{ParseError, Result, excerpt};
use crate::input::{as_utf8, read_file};

/// Reads an hhr file.
pub fn read_hhr(path: &Path) -> Result<Vec<TemplateHit>> {
    let (name, bytes) = read_file(path)?;
    parse_hhr(&name, &bytes)
}

/// Parses hhr bytes. `file` names the input in errors.
pub fn parse_hhr(file: &str, bytes: &[u8]) -> Result<Vec<TemplateHit>> {
    let text = as_utf8(file, bytes)?;
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("No "))
        .collect();
    let mut hits = Vec::with_capacity(starts.len());
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        hits.push(parse_hit(file, start, &lines[start..end])?);
    }
    Ok(hits)
}

fn syntax(file: &str, line: usize, expected: &str, found: &str) -> ParseError {
    ParseError::Syntax {
        file: file.to_string(),
        line,
        expected: expected.to_string(),
        found: format!("{:?}", excerpt(found.as_bytes())),
    }
}

/// Parses one hit block; `first` is the 0-based line index of its `No N` line.
fn parse_hit(file: &str, first: usize, block: &[&str]) -> Result<TemplateHit> {
    let line_no = |i: usize| first + i + 1;
    let index = block[0][3..]
        .trim()
        .parse::<usize>()
        .map_err(|_| syntax(file, line_no(0), "'No <hit number>'", block[0]))?;
    let name = block
        .get(1)
        .and_then(|l| l.strip_prefix('>'))
        .ok_or_else(|| {
            syntax(
                file,
                line_no(1),
                "a '>' hit name line",
                block.get(1).unwrap_or(&""),
            )
        })?;
    let stats_line = block.get(2).copied().unwrap_or("");
    let stat = |key: &str| -> Result<f64> {
        let value = stats_line
            .split_whitespace()
            .find_map(|field| field.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| {
                syntax(
                    file,
                    line_no(2),
                    &format!("{key}=<number> in the statistics line"),
                    stats_line,
                )
            })?;
        value
            .trim_end_matches('%')
            .parse::<f64>()
            .map_err(|_| ParseError::InvalidValue {
                file: file.to_string(),
                line: line_no(2),
                field: key.to_string(),
                expected: "a number".to_string(),
                found: excerpt(value.as_bytes()),
            })
    };
    let mut hit = TemplateHit {
        index,
        name: name.to_string(),
        probability: (stat("Probab")? / 100.0) as f32,
        e_value: stat("E-value")?,
        score: stat("Score")? as f32,
        aligned_cols: stat("Aligned_cols")? as usize,
        sum_probs: stat("Sum_probs")? as f32,
        ..Default::default()
    };
    let mut block_length: Option<usize> = None;
    for (i, line) in block.iter().enumerate().skip(3) {
        let is_query = line.starts_with("Q ");
        let is_template = line.starts_with("T ");
        if !(is_query || is_template) {
            continue;
        }
        let label = line.get(2..).unwrap_or("");
        if ["ss_dssp", "ss_pred", "Consensus"]
            .iter()
            .any(|s| label.starts_with(s))
        {
            continue;
        }
        let expected = "'<name> <start> <aligned residues> <end> (<length>)'";
        let fields: Vec<&str> = line.get(17..).unwrap_or("").split_whitespace().collect();
        let [start, residues, end, total] = fields[..] else {
            return Err(syntax(file, line_no(i), expected, line));
        };
        let start: i32 = start
            .parse()
            .map_err(|_| syntax(file, line_no(i), expected, line))?;
        let end: i32 = end
            .parse()
            .map_err(|_| syntax(file, line_no(i), expected, line))?;
        if !(total.starts_with('(') && total.ends_with(')')) || start < 1 {
            return Err(syntax(file, line_no(i), expected, line));
        }
        let gaps = residues.bytes().filter(|&b| b == b'-').count() as i32;
        let mut counter = start - 1;
        let indices: Vec<i32> = residues
            .bytes()
            .map(|b| {
                if b == b'-' {
                    -1
                } else {
                    counter += 1;
                    counter - 1
                }
            })
            .collect();
        if is_query {
            if end - start + 1 + gaps != residues.len() as i32 {
                return Err(syntax(
                    file,
                    line_no(i),
                    "a query block whose residue range matches its aligned residues",
                    line,
                ));
            }
            block_length = Some(residues.len());
            hit.query.push_str(residues);
            hit.indices_query.extend(indices);
        } else {
            if block_length != Some(residues.len()) {
                return Err(syntax(
                    file,
                    line_no(i),
                    "a template block as long as the query block before it",
                    line,
                ));
            }
            hit.hit_sequence.push_str(residues);
            hit.indices_hit.extend(indices);
        }
    }
    Ok(hit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_blocks_name_the_line() {
        let err = parse_hhr("x.hhr", b"No 1\n>A\nProbab=1 E-value=2\n").unwrap_err();
        assert_eq!(err.line(), Some(3));
        let text = b"No 1\n>A b\nProbab=50 E-value=1e-3 Score=3 Aligned_cols=2 Sum_probs=1.5\n\
Q q               1 AC   2 (2)\nT t               1 A    1 (5)\n";
        let err = parse_hhr("x.hhr", text).unwrap_err();
        assert_eq!(err.line(), Some(5));
        assert!(parse_hhr("x.hhr", b"No x\n").is_err());
        assert!(parse_hhr("x.hhr", b"no hits here\n").unwrap().is_empty());
    }
}
