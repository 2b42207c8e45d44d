//! Alignments: a3m and Stockholm parsing, and merging several MSAs into one
//! [`Msa`] in the MSA alphabet with exact-duplicate removal.
//!
//! Parsers return an [`Alignment`]: aligned rows as text over the query's columns plus
//! the deletion counts; [`merge_alignments`] deduplicates on that text (first occurrence
//! wins, as the AlphaFold reference does) and converts to ids 0..=21.

use std::collections::HashSet;
use std::path::Path;

use scalefold_featurize::FlatMsa;
use scalefold_featurize::inputs::Msa;
use scalefold_featurize::residue_constants::msa_id;

use crate::error::{ParseError, Result, excerpt};
use crate::input::{as_utf8, last_line, read_file};

/// A parsed alignment: every row has the query's length; row 0 is the query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alignment {
    /// Aligned rows: uppercase letters and `-`, one character per query column.
    pub sequences: Vec<String>,
    /// Per row and column, the number of residues deleted (inserted relative to the
    /// query) before that column.
    pub deletion_matrix: Vec<Vec<u32>>,
    /// Row descriptions: the a3m header line, or the Stockholm name followed by its
    /// `#=GS ... DE` text when present.
    pub descriptions: Vec<String>,
}

impl Alignment {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// The query length (number of columns).
    pub fn width(&self) -> usize {
        self.sequences.first().map_or(0, String::len)
    }
}

/// The kinds of alignment file [`read_alignment`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignmentFormat {
    /// HHblits a3m (FASTA with lowercase insertions).
    A3m,
    /// Stockholm 1.0 (jackhmmer output).
    Stockholm,
}

impl AlignmentFormat {
    /// The format a file name implies (`.a3m`, `.sto`/`.stockholm`, possibly `.gz`).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let name = name
            .strip_suffix(".gz")
            .unwrap_or(name)
            .to_ascii_lowercase();
        if name.ends_with(".a3m") {
            Some(AlignmentFormat::A3m)
        } else if name.ends_with(".sto") || name.ends_with(".stockholm") {
            Some(AlignmentFormat::Stockholm)
        } else {
            None
        }
    }
}

/// Reads an a3m or Stockholm file, the format given by its name.
pub fn read_alignment(path: &Path) -> Result<Alignment> {
    let (name, bytes) = read_file(path)?;
    match AlignmentFormat::from_file_name(&name) {
        Some(AlignmentFormat::A3m) => parse_a3m(&name, &bytes),
        Some(AlignmentFormat::Stockholm) => parse_stockholm(&name, &bytes),
        None => Err(ParseError::InvalidValue {
            file: name.clone(),
            line: 0,
            field: "file name".to_string(),
            expected: "a name ending in .a3m, .sto or .stockholm".to_string(),
            found: name,
        }),
    }
}

fn syntax(file: &str, line: usize, expected: impl Into<String>, found: &[u8]) -> ParseError {
    ParseError::Syntax {
        file: file.to_string(),
        line,
        expected: expected.into(),
        found: format!("{:?}", excerpt(found)),
    }
}

/// Parses a3m: lowercase letters are insertions (counted into the deletion count of the
/// next aligned column), `.` is dropped, uppercase letters and `-` are aligned columns.
pub fn parse_a3m(file: &str, bytes: &[u8]) -> Result<Alignment> {
    let text = as_utf8(file, bytes)?;
    let mut out = Alignment::default();
    // (line of the header, aligned row, deletions, pending insertions)
    let mut current: Option<(usize, String, Vec<u32>, u32)> = None;
    let finish = |out: &mut Alignment, row: Option<(usize, String, Vec<u32>, u32)>| -> Result<()> {
        if let Some((line, sequence, deletions, _)) = row {
            if let Some(width) = out.sequences.first().map(String::len)
                && sequence.len() != width
            {
                return Err(ParseError::Syntax {
                    file: file.to_string(),
                    line,
                    expected: format!(
                        "{width} aligned columns (the query's length) in this record"
                    ),
                    found: format!("{} columns", sequence.len()),
                });
            }
            out.sequences.push(sequence);
            out.deletion_matrix.push(deletions);
        }
        Ok(())
    };
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim_end();
        if let Some(description) = line.strip_prefix('>') {
            finish(&mut out, current.take())?;
            out.descriptions.push(description.to_string());
            // Every row has the query's width: allocate it once.
            let width = out.sequences.first().map_or(0, String::len);
            current = Some((
                line_no,
                String::with_capacity(width),
                Vec::with_capacity(width),
                0,
            ));
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let Some((_, sequence, deletions, pending)) = current.as_mut() else {
            return Err(syntax(
                file,
                line_no,
                "a '>' header line before sequence data",
                line.as_bytes(),
            ));
        };
        for &c in line.trim().as_bytes() {
            match c {
                b'a'..=b'z' => *pending += 1,
                b'.' => {}
                b'A'..=b'Z' | b'-' => {
                    sequence.push(c as char);
                    deletions.push(std::mem::take(pending));
                }
                _ => {
                    return Err(syntax(
                        file,
                        line_no,
                        "only letters, '-' and '.' in an a3m sequence",
                        line.as_bytes(),
                    ));
                }
            }
        }
    }
    finish(&mut out, current.take())?;
    if out.is_empty() {
        return Err(ParseError::Missing {
            file: file.to_string(),
            line: last_line(bytes),
            what: "an a3m record ('>' header and sequence)".to_string(),
        });
    }
    Ok(out)
}

/// Parses the first alignment of a Stockholm file (jackhmmer output).
///
/// The first sequence is the query; columns where the query has a gap (`-` or `.`) are
/// insert columns: removed, and a residue there counts as a deletion before the next
/// kept column. `#=GS name DE text` lines extend that row's description; `#=GF`, `#=GC`
/// and `#=GR` lines are recognised and skipped. Lowercase letters in kept columns read as
/// uppercase, `.` as `-`. Every row must have the same length (a ragged row is an error).
pub fn parse_stockholm(file: &str, bytes: &[u8]) -> Result<Alignment> {
    let text = as_utf8(file, bytes)?;
    let mut lines = text.lines().enumerate();
    let header = lines.by_ref().find(|(_, l)| !l.trim().is_empty());
    match header {
        Some((_, l)) if l.trim_start().starts_with("# STOCKHOLM") => {}
        Some((i, l)) => {
            return Err(syntax(
                file,
                i + 1,
                "the header '# STOCKHOLM 1.0'",
                l.as_bytes(),
            ));
        }
        None => {
            return Err(ParseError::Missing {
                file: file.to_string(),
                line: last_line(bytes),
                what: "the header '# STOCKHOLM 1.0'".to_string(),
            });
        }
    }
    // Rows in first-seen order: (name, concatenated row, line of its last block).
    let mut names: Vec<&str> = Vec::new();
    let mut rows: Vec<(String, usize)> = Vec::new();
    let mut index_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut descriptions: std::collections::HashMap<&str, String> =
        std::collections::HashMap::new();
    let mut terminated = false;
    for (index, raw) in lines {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("//") {
            terminated = true;
            break;
        }
        if let Some(rest) = line.strip_prefix("#=GS") {
            let mut fields = rest.split_whitespace();
            if let (Some(name), Some("DE")) = (fields.next(), fields.next()) {
                let after_de = rest.find(" DE").map_or("", |p| rest[p + 3..].trim());
                let entry = descriptions.entry(name).or_default();
                if !entry.is_empty() {
                    entry.push(' ');
                }
                entry.push_str(after_de);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(name), Some(sequence), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(syntax(
                file,
                line_no,
                "a sequence line 'name sequence'",
                line.as_bytes(),
            ));
        };
        let row = *index_of.entry(name).or_insert_with(|| {
            names.push(name);
            rows.push((String::new(), line_no));
            rows.len() - 1
        });
        rows[row].0.push_str(sequence);
        rows[row].1 = line_no;
    }
    if !terminated {
        return Err(ParseError::Missing {
            file: file.to_string(),
            line: last_line(bytes),
            what: "the end-of-alignment line '//'".to_string(),
        });
    }
    let Some((query, _)) = rows.first() else {
        return Err(ParseError::Missing {
            file: file.to_string(),
            line: last_line(bytes),
            what: "at least one sequence line".to_string(),
        });
    };
    let query = query.as_bytes();
    let mut out = Alignment::default();
    for (name, (row, line)) in names.iter().zip(&rows) {
        let row = row.as_bytes();
        if row.len() != query.len() {
            return Err(ParseError::Syntax {
                file: file.to_string(),
                line: *line,
                expected: format!(
                    "{} alignment columns in row {name} (the query's width)",
                    query.len()
                ),
                found: format!("{} columns (a ragged row)", row.len()),
            });
        }
        let mut sequence = String::with_capacity(query.len());
        let mut deletions = Vec::with_capacity(query.len());
        let mut pending = 0;
        for (&q, &r) in query.iter().zip(row) {
            let is_residue = r.is_ascii_alphabetic();
            if !is_residue && r != b'-' && r != b'.' {
                return Err(syntax(
                    file,
                    *line,
                    format!("letters, '-' or '.' in row {name}"),
                    row,
                ));
            }
            if q == b'-' || q == b'.' {
                pending += is_residue as u32;
                continue;
            }
            sequence.push(if is_residue {
                r.to_ascii_uppercase() as char
            } else {
                '-'
            });
            deletions.push(std::mem::take(&mut pending));
        }
        out.sequences.push(sequence);
        out.deletion_matrix.push(deletions);
        out.descriptions.push(match descriptions.get(name) {
            Some(de) if !de.is_empty() => format!("{name} {de}"),
            _ => name.to_string(),
        });
    }
    Ok(out)
}

/// The species identifier of a UniProt-style description (`tr|ACCESSION|NAME_SPECIES`
/// or `sp|...`), read from its first word; empty when it has none.
pub fn species_id(description: &str) -> &str {
    let identifier = description.split_whitespace().next().unwrap_or("");
    let identifier = identifier.split('/').next().unwrap_or("");
    let bytes = identifier.as_bytes();
    let alnum_run = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count()
    };
    let mut search = 0;
    while let Some(found) = ["tr|", "sp|"]
        .iter()
        .filter_map(|p| identifier[search..].find(p).map(|i| search + i))
        .min()
    {
        search = found + 1;
        let mut at = found + 3;
        let accession = alnum_run(at);
        if !(6..=10).contains(&accession) {
            continue;
        }
        at += accession;
        if bytes.get(at) == Some(&b'_') && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
            at += 2;
        }
        if bytes.get(at) != Some(&b'|') {
            continue;
        }
        at += 1;
        let name = alnum_run(at);
        if name == 0 || bytes.get(at + name) != Some(&b'_') {
            continue;
        }
        at += name + 1;
        let species = alnum_run(at).min(5);
        if species == 0 {
            continue;
        }
        return &identifier[at..at + species];
    }
    ""
}

/// Merges alignments in the given order into one [`Msa`]: a row whose aligned text was
/// already seen is dropped (first occurrence wins); species ids come from descriptions.
/// All alignments must have the same width; `names` label them in errors.
pub fn merge_alignments(alignments: &[(&str, &Alignment)]) -> Result<Msa> {
    let kept = kept_rows(alignments)?;
    let width = alignments.first().map_or(0, |(_, a)| a.width());
    let mut msa = Msa::default();
    for (k, i) in kept {
        let (name, alignment) = alignments[k];
        let mut ids = Vec::with_capacity(width);
        push_ids(&mut ids, name, i, &alignment.sequences[i])?;
        msa.msa.push(ids);
        msa.deletion_matrix
            .push(alignment.deletion_matrix[i].clone());
        let description = &alignment.descriptions[i];
        msa.species_ids.push(species_id(description).to_string());
        msa.descriptions.push(description.clone());
    }
    Ok(msa)
}

/// [`merge_alignments`] straight into the record's flat layout (the same rows, ids,
/// deletions and species ids; no descriptions): no allocation per row.
pub fn merge_alignments_flat(alignments: &[(&str, &Alignment)]) -> Result<FlatMsa> {
    let kept = kept_rows(alignments)?;
    let width = alignments.first().map_or(0, |(_, a)| a.width());
    let mut msa = FlatMsa::with_capacity(kept.len(), width);
    for (k, i) in kept {
        let (name, alignment) = alignments[k];
        push_ids(&mut msa.msa, name, i, &alignment.sequences[i])?;
        msa.push_deletions(&alignment.deletion_matrix[i]);
        msa.species_ids
            .push(species_id(&alignment.descriptions[i]).to_string());
        msa.num_rows += 1;
    }
    Ok(msa)
}

/// The rows a merge keeps, in order, as (alignment, row) indices: every row whose
/// aligned text was not seen before. Checks that all alignments have the first one's width.
fn kept_rows(alignments: &[(&str, &Alignment)]) -> Result<Vec<(usize, usize)>> {
    let width = alignments.first().map_or(0, |(_, a)| a.width());
    let rows: usize = alignments.iter().map(|(_, a)| a.len()).sum();
    let mut seen: HashSet<RowText<'_>, BuildPrehashed> =
        HashSet::with_capacity_and_hasher(rows, BuildPrehashed);
    let mut kept = Vec::with_capacity(rows);
    for (k, (name, alignment)) in alignments.iter().enumerate() {
        if alignment.is_empty() || alignment.width() != width {
            return Err(ParseError::InvalidValue {
                file: name.to_string(),
                line: 1,
                field: "alignment width".to_string(),
                expected: format!(
                    "at least one row of {width} columns (the first alignment's width)"
                ),
                found: format!("{} rows of {} columns", alignment.len(), alignment.width()),
            });
        }
        for (i, sequence) in alignment.sequences.iter().enumerate() {
            if seen.insert(RowText(sequence.as_bytes())) {
                kept.push((k, i));
            }
        }
    }
    Ok(kept)
}

/// Appends the MSA ids of row `row` (of alignment `name`) to `out`; on a character
/// outside the MSA alphabet, leaves `out` as it was and names the row.
fn push_ids(out: &mut Vec<u8>, name: &str, row: usize, sequence: &str) -> Result<()> {
    const INVALID: u8 = u8::MAX;
    let start = out.len();
    out.extend(sequence.bytes().map(|c| msa_id(c).unwrap_or(INVALID)));
    if out[start..].contains(&INVALID) {
        out.truncate(start);
        return Err(ParseError::InvalidValue {
            file: name.to_string(),
            line: 0,
            field: format!("row {row}"),
            expected: "letters of the MSA alphabet".to_string(),
            found: excerpt(sequence.as_bytes()),
        });
    }
    Ok(())
}

/// An aligned row as a set key, hashed once with xxh3 over its bytes (the default
/// SipHash fed byte slices piecewise cost more than the rest of the merge).
#[derive(PartialEq, Eq)]
struct RowText<'a>(&'a [u8]);

impl std::hash::Hash for RowText<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(xxhash_rust::xxh3::xxh3_64(self.0));
    }
}

/// Builds [`Prehashed`] hashers.
#[derive(Clone, Copy, Default)]
struct BuildPrehashed;

impl std::hash::BuildHasher for BuildPrehashed {
    type Hasher = Prehashed;
    fn build_hasher(&self) -> Prehashed {
        Prehashed(0)
    }
}

/// A hasher for keys that hash themselves into one `u64` ([`RowText`]): passes it on.
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is expected; fold anything else in so hashing stays correct.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a3m_counts_lowercase_as_deletions_and_drops_dots() {
        let a = parse_a3m("t.a3m", b">q\nACDE\n>hit\nAab.C-\nE\n").unwrap();
        assert_eq!(a.sequences, vec!["ACDE", "AC-E"]);
        assert_eq!(a.deletion_matrix[1], vec![0, 2, 0, 0]);
        assert_eq!(a.descriptions, vec!["q", "hit"]);
    }

    #[test]
    fn a3m_rejects_rows_of_other_width_and_data_before_header() {
        let err = parse_a3m("t.a3m", b">q\nACDE\n>hit\nAC\n").unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert!(parse_a3m("t.a3m", b"ACDE\n").is_err());
        assert!(parse_a3m("t.a3m", b"").is_err());
        assert!(parse_a3m("t.a3m", b">q\nAC1E\n").is_err());
    }

    #[test]
    fn stockholm_removes_query_insert_columns() {
        let text = b"# STOCKHOLM 1.0\n#=GS h DE some protein\nq  AC-D\nh  AcgD\n#=GC RF xx.x\n\nq  E\nh  -\n//\n";
        let a = parse_stockholm("t.sto", text).unwrap();
        assert_eq!(a.sequences, vec!["ACDE", "ACD-"]);
        assert_eq!(a.deletion_matrix[1], vec![0, 0, 1, 0]);
        assert_eq!(a.descriptions[1], "h some protein");
    }

    #[test]
    fn stockholm_ragged_row_is_an_error_naming_its_line() {
        let text = b"# STOCKHOLM 1.0\nq  ACDE\nh  ACD\n//\n";
        let err = parse_stockholm("t.sto", text).unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().contains("ragged"), "{err}");
        assert!(parse_stockholm("t.sto", b"q ACDE\n//\n").is_err());
        assert!(parse_stockholm("t.sto", b"# STOCKHOLM 1.0\nq ACDE\n").is_err());
        assert!(parse_stockholm("t.sto", b"# STOCKHOLM 1.0\nq AC DE\n//\n").is_err());
    }

    #[test]
    fn species_ids_follow_uniprot_names() {
        assert_eq!(
            species_id("tr|A0A2A6NXF8|A0A2A6NXF8_9BRAD Uncharacterized"),
            "9BRAD"
        );
        assert_eq!(species_id("sp|P12345|ABC_HUMAN/1-50"), "HUMAN");
        assert_eq!(species_id("sp|P12345_1|ABC_MOUSE"), "MOUSE");
        assert_eq!(species_id("UniRef90_A0A345WS72/1-69"), "");
        assert_eq!(species_id("tr|P1|X_HUMAN"), "");
        assert_eq!(species_id(""), "");
    }

    #[test]
    fn merge_removes_exact_duplicates_first_wins() {
        let a = parse_a3m("a.a3m", b">q\nAC\n>tr|Q12345|X_HUMAN\nA-\n").unwrap();
        let b = parse_a3m("b.a3m", b">q\nAC\n>other\nAbc-\n>new\nCC\n").unwrap();
        let msa = merge_alignments(&[("a.a3m", &a), ("b.a3m", &b)]).unwrap();
        assert_eq!(msa.msa, vec![vec![0, 4], vec![0, 21], vec![4, 4]]);
        assert_eq!(msa.deletion_matrix[1], vec![0, 0]);
        assert_eq!(msa.species_ids, vec!["", "HUMAN", ""]);
        let narrow = parse_a3m("c.a3m", b">q\nA\n").unwrap();
        assert!(merge_alignments(&[("a.a3m", &a), ("c.a3m", &narrow)]).is_err());
        assert!(merge_alignments_flat(&[("a.a3m", &a), ("c.a3m", &narrow)]).is_err());
    }

    #[test]
    fn flat_merge_is_the_row_merge_flattened() {
        let insertion = "abcdefghijklmnopqrstuvwxyz".repeat(3000);
        let a3m =
            format!(">q\nACDE\n>tr|Q12345|X_HUMAN\nA-DE\n>dup\nACDE\n>big\nA{insertion}C-E\n");
        let a = parse_a3m("a.a3m", a3m.as_bytes()).unwrap();
        let b = parse_a3m(
            "b.a3m",
            b">q\nACDE\n>sp|P12345|Y_MOUSE\nBZUO\n>again\nA-DE\n",
        )
        .unwrap();
        let inputs = [("a.a3m", &a), ("b.a3m", &b)];
        let rows = merge_alignments(&inputs).unwrap();
        let flat = merge_alignments_flat(&inputs).unwrap();
        assert_eq!(flat.num_rows, 4);
        assert_eq!(rows.msa.len(), 4);
        assert_eq!(flat.msa, rows.msa.concat());
        assert_eq!(flat.species_ids, rows.species_ids);
        assert_eq!(flat.species_ids, ["", "HUMAN", "", "MOUSE"]);
        // The flat layout saturates deletions at u16::MAX (the "big" row has 78,000).
        assert_eq!(rows.deletion_matrix[2], [0, 78_000, 0, 0]);
        let saturated: Vec<u16> = rows
            .deletion_matrix
            .concat()
            .iter()
            .map(|&d| d.min(u16::MAX as u32) as u16)
            .collect();
        assert_eq!(flat.deletion_matrix, saturated);
        assert_eq!(flat.deletion_matrix[9], u16::MAX);
    }

    #[test]
    fn merge_rejects_characters_outside_the_msa_alphabet_naming_the_row() {
        let good = parse_a3m("a.a3m", b">q\nACDE\n").unwrap();
        let bad = Alignment {
            sequences: vec!["ACDE".into(), "AC*E".into()],
            deletion_matrix: vec![vec![0; 4]; 2],
            descriptions: vec!["q".into(), "x".into()],
        };
        let inputs = [("a.a3m", &good), ("b.sto", &bad)];
        for err in [
            merge_alignments(&inputs).unwrap_err(),
            merge_alignments_flat(&inputs).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.contains("b.sto") && text.contains("row 1"), "{text}");
        }
    }
}
