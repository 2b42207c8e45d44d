//! Alignments: a3m and Stockholm parsing, and merging several MSAs into one
//! [`Msa`] (or the record's [`FlatMsa`]) in the MSA alphabet with exact-duplicate removal.
//!
//! Parsers return an [`Alignment`] in one flat layout (all aligned rows in one buffer, the
//! non-zero deletion counts as sparse pairs, all descriptions in one string), written
//! straight from the file's text without an allocation per row; [`merge_alignments_flat`]
//! deduplicates on the aligned text (first occurrence wins, as the AlphaFold reference
//! does) and converts to ids 0..=21.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use scalefold_featurize::FlatMsa;
use scalefold_featurize::inputs::Msa;
use scalefold_featurize::residue_constants::msa_id;

use crate::error::{ParseError, Result, excerpt};
use crate::input::{as_utf8, last_line, read_file};

/// A parsed alignment: every row has the query's width; row 0 is the query.
///
/// Flat layout: the aligned rows one after another in one buffer (row-major, `width`
/// bytes each: uppercase letters and `-`); per row the non-zero deletion counts as
/// (column, count) pairs in ascending column order; the descriptions in one string.
/// The layout of given content is unique, so `==` compares content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alignment {
    /// Columns per row (the query's aligned length).
    width: usize,
    /// `len() × width` aligned characters, row-major.
    residues: Vec<u8>,
    /// Non-zero deletion counts as (column, count), row after row.
    deletions: Vec<(u32, u32)>,
    /// Per row, the end of its pairs in `deletions`.
    deletion_ends: Vec<usize>,
    /// Every row's description, one after another.
    descriptions: String,
    /// Per row, the end of its description in `descriptions`.
    description_ends: Vec<usize>,
}

/// The range of item `i` in a buffer of items laid out back to back, given their ends.
fn span(ends: &[usize], i: usize) -> Range<usize> {
    let start = if i == 0 { 0 } else { ends[i - 1] };
    start..ends[i]
}

impl Alignment {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.description_ends.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.description_ends.is_empty()
    }

    /// The query length (number of columns; 0 without rows).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Aligned row `i`: uppercase letters and `-`, one byte per query column.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn row(&self, i: usize) -> &[u8] {
        assert!(
            i < self.len(),
            "row {i} of an alignment of {} rows",
            self.len()
        );
        &self.residues[i * self.width..(i + 1) * self.width]
    }

    /// The query: row 0, empty without rows.
    pub fn query(&self) -> &[u8] {
        &self.residues[..self.width.min(self.residues.len())]
    }

    /// The non-zero deletion counts of row `i` as (column, count) pairs, columns
    /// ascending: `count` residues were deleted (inserted relative to the query) before
    /// that column. Columns not listed have none.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn deletions(&self, i: usize) -> &[(u32, u32)] {
        &self.deletions[span(&self.deletion_ends, i)]
    }

    /// The deletion counts of row `i` for every column (the dense form of
    /// [`Alignment::deletions`]).
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn deletion_row(&self, i: usize) -> Vec<u32> {
        let mut row = vec![0; self.width];
        for &(column, count) in self.deletions(i) {
            row[column as usize] = count;
        }
        row
    }

    /// Description of row `i`: the a3m header line, or the Stockholm name followed by
    /// its `#=GS ... DE` text when present.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn description(&self, i: usize) -> &str {
        &self.descriptions[span(&self.description_ends, i)]
    }

    /// Appends a row given in the row-wise form: aligned characters, one deletion count
    /// per column, description. The first row sets the width. (For building alignments
    /// in code; the parsers write their rows directly.)
    ///
    /// # Panics
    /// When `row` or `deletions` does not have the width of the rows before it.
    pub fn push_row(&mut self, row: &[u8], deletions: &[u32], description: &str) {
        if self.is_empty() {
            self.width = row.len();
        }
        assert_eq!(row.len(), self.width, "row width");
        assert_eq!(deletions.len(), self.width, "deletion row width");
        self.residues.extend_from_slice(row);
        self.deletions.extend(
            (0..)
                .zip(deletions)
                .filter(|&(_, &count)| count > 0)
                .map(|(column, &count)| (column, count)),
        );
        self.deletion_ends.push(self.deletions.len());
        self.push_description(&[description]);
    }

    /// Ends the current row's description, made of `parts` joined by single spaces.
    fn push_description(&mut self, parts: &[&str]) {
        for (k, part) in parts.iter().enumerate() {
            if k > 0 {
                self.descriptions.push(' ');
            }
            self.descriptions.push_str(part);
        }
        self.description_ends.push(self.descriptions.len());
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

/// Class of a byte in a3m sequence text: not allowed.
const A3M_INVALID: u8 = 0;
/// Class: an aligned column (uppercase letter or `-`), kept as it is.
const A3M_ALIGNED: u8 = 1;
/// Class: an insertion (lowercase letter), counted as a deletion before the next column.
const A3M_INSERTION: u8 = 2;
/// Class: `.` (a gap in an insertion), dropped.
const A3M_DROPPED: u8 = 3;

/// The a3m class of every byte.
const A3M_CLASS: [u8; 256] = {
    let mut table = [A3M_INVALID; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = match b {
            b'A'..=b'Z' | b'-' => A3M_ALIGNED,
            b'a'..=b'z' => A3M_INSERTION,
            b'.' => A3M_DROPPED,
            _ => A3M_INVALID,
        };
        c += 1;
    }
    table
};

/// The a3m record being read: where its row starts and the insertions not yet
/// assigned to a column.
struct A3mRecord {
    /// Line of the `>` header.
    line: usize,
    /// Offset of the row in the residue buffer.
    start: usize,
    /// Insertions since the last aligned column.
    pending: u32,
}

/// Appends one line of a3m sequence text to the record's row: aligned columns to
/// `residues`, insertions counted into `deletions`. False when the line holds a byte
/// other than letters, `-` and `.` (the row is then incomplete).
///
/// Runs of aligned columns (most of a row) are found a chunk at a time and copied whole.
fn push_a3m_line(
    line: &[u8],
    record: &mut A3mRecord,
    residues: &mut Vec<u8>,
    deletions: &mut Vec<(u32, u32)>,
) -> bool {
    let mut rest = line;
    while let Some(&first) = rest.first() {
        let run = aligned_prefix(rest);
        if run > 0 {
            if record.pending > 0 {
                let column = (residues.len() - record.start) as u32;
                deletions.push((column, std::mem::take(&mut record.pending)));
            }
            residues.extend_from_slice(&rest[..run]);
            rest = &rest[run..];
            continue;
        }
        match A3M_CLASS[first as usize] {
            A3M_INSERTION => record.pending += 1,
            A3M_DROPPED => {}
            _ => return false, // not a letter, '-' or '.' (aligned bytes start a run above)
        }
        rest = &rest[1..];
    }
    true
}

/// The number of leading bytes of `bytes` that are aligned a3m columns (uppercase letters
/// and `-`), checked 16 at a time without an early exit (so the check vectorizes).
fn aligned_prefix(bytes: &[u8]) -> usize {
    let aligned = |b: u8| b.wrapping_sub(b'A') < 26 || b == b'-';
    let mut n = 0;
    for chunk in bytes.chunks(16) {
        if !chunk.iter().fold(true, |all, &b| all & aligned(b)) {
            return n + chunk.iter().take_while(|&&b| aligned(b)).count();
        }
        n += chunk.len();
    }
    n
}

/// Parses a3m: lowercase letters are insertions (counted into the deletion count of the
/// next aligned column), `.` is dropped, uppercase letters and `-` are aligned columns.
pub fn parse_a3m(file: &str, bytes: &[u8]) -> Result<Alignment> {
    let text = as_utf8(file, bytes)?;
    let mut out = Alignment::default();
    // The rows never hold more bytes than the file (address space only: pages are
    // touched as rows are written).
    out.residues.reserve(bytes.len());
    let mut width: Option<usize> = None;
    let mut current: Option<A3mRecord> = None;
    let finish = |out: &mut Alignment, width: &mut Option<usize>, record: Option<A3mRecord>| {
        let Some(record) = record else {
            return Ok(());
        };
        let columns = out.residues.len() - record.start;
        match *width {
            Some(width) if columns != width => {
                return Err(ParseError::Syntax {
                    file: file.to_string(),
                    line: record.line,
                    expected: format!(
                        "{width} aligned columns (the query's length) in this record"
                    ),
                    found: format!("{columns} columns"),
                });
            }
            Some(_) => {}
            // The query sets the width.
            None => {
                *width = Some(columns);
                out.width = columns;
            }
        }
        out.deletion_ends.push(out.deletions.len());
        Ok(())
    };
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim_end();
        if let Some(description) = line.strip_prefix('>') {
            finish(&mut out, &mut width, current.take())?;
            out.push_description(&[description]);
            current = Some(A3mRecord {
                line: line_no,
                start: out.residues.len(),
                pending: 0,
            });
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let Some(record) = current.as_mut() else {
            return Err(syntax(
                file,
                line_no,
                "a '>' header line before sequence data",
                line.as_bytes(),
            ));
        };
        if !push_a3m_line(
            line.trim().as_bytes(),
            record,
            &mut out.residues,
            &mut out.deletions,
        ) {
            return Err(syntax(
                file,
                line_no,
                "only letters, '-' and '.' in an a3m sequence",
                line.as_bytes(),
            ));
        }
    }
    finish(&mut out, &mut width, current.take())?;
    if out.is_empty() {
        return Err(ParseError::Missing {
            file: file.to_string(),
            line: last_line(bytes),
            what: "an a3m record ('>' header and sequence)".to_string(),
        });
    }
    Ok(out)
}

/// No row yet (a name seen only on `#=GS` lines).
const NO_ROW: usize = usize::MAX;
/// End of a row's list of segments.
const NO_SEGMENT: usize = usize::MAX;

/// A name of a Stockholm file: its row, if it has sequence lines, and its `DE` text.
struct StockholmName<'a> {
    row: usize,
    description: Cow<'a, str>,
}

/// A Stockholm row: its name, its sequence segments (one per block) as a linked list,
/// the line of its last segment and its `DE` text.
struct StockholmRow<'a> {
    name: &'a str,
    first: usize,
    last: usize,
    line: usize,
    description: Cow<'a, str>,
}

/// One block's piece of a row, and the next piece of the same row.
struct Segment<'a> {
    text: &'a [u8],
    next: usize,
}

/// The whole text of the row whose first segment is `first`: the segment itself when it
/// is the only one (single-block files: no copy), else the segments joined in `scratch`.
fn joined<'t: 's, 's>(
    segments: &[Segment<'t>],
    first: usize,
    scratch: &'s mut Vec<u8>,
) -> &'s [u8] {
    let head = &segments[first];
    if head.next == NO_SEGMENT {
        return head.text;
    }
    scratch.clear();
    let mut at = first;
    while at != NO_SEGMENT {
        scratch.extend_from_slice(segments[at].text);
        at = segments[at].next;
    }
    scratch
}

/// The query's columns of a Stockholm file, and buffers to read rows against them.
///
/// A row is read in two passes that vectorize: every byte converted (uppercase, `.` as
/// `-`, validity, "a residue in an insert column" flag) into row-sized buffers, then the
/// kept columns gathered; deletions are looked up only where a flag is set. (A single
/// pass that moves over kept columns byte by byte was 2.5–3× slower: which columns are
/// kept follows no pattern a branch predictor learns.)
struct StockholmColumns {
    /// Positions of the kept columns (the query's non-gaps) in the raw row.
    kept: Vec<u32>,
    /// For every raw column, the index of the first kept column at or after it (the
    /// column a residue there is a deletion before; `kept.len()` past the last).
    next_kept: Vec<u32>,
    /// 0xFF for insert columns, 0 for kept ones.
    insert_mask: Vec<u8>,
    /// A row's converted bytes.
    converted: Vec<u8>,
    /// A row's "residue in an insert column" flags.
    inserted: Vec<u8>,
}

impl StockholmColumns {
    /// The columns of a query row as written (gaps `-` and `.` mark insert columns).
    fn new(query: &[u8]) -> Self {
        let is_kept = |q: u8| q != b'-' && q != b'.';
        let mut next = 0u32;
        let next_kept = query
            .iter()
            .map(|&q| {
                let at = next;
                next += u32::from(is_kept(q));
                at
            })
            .collect();
        StockholmColumns {
            kept: (0..)
                .zip(query)
                .filter(|&(_, &q)| is_kept(q))
                .map(|(i, _)| i)
                .collect(),
            next_kept,
            insert_mask: query
                .iter()
                .map(|&q| if is_kept(q) { 0 } else { 0xFF })
                .collect(),
            converted: vec![0; query.len()],
            inserted: vec![0; query.len()],
        }
    }

    /// Number of kept columns (the alignment's width).
    fn width(&self) -> usize {
        self.kept.len()
    }

    /// Number of raw columns every row must have.
    fn raw_width(&self) -> usize {
        self.insert_mask.len()
    }

    /// Appends the kept columns of one row (of [`StockholmColumns::raw_width`] bytes) to
    /// `residues` (uppercased, `.` as `-`) and its deletions (residues in insert columns,
    /// counted before the next kept column) to `deletions`. False when the row holds a
    /// byte other than letters, `-` and `.`.
    fn push_row(
        &mut self,
        raw: &[u8],
        residues: &mut Vec<u8>,
        deletions: &mut Vec<(u32, u32)>,
    ) -> bool {
        let n = self.raw_width().min(raw.len());
        let (raw, converted, inserted, mask) = (
            &raw[..n],
            &mut self.converted[..n],
            &mut self.inserted[..n],
            &self.insert_mask[..n],
        );
        let mut invalid = 0u8;
        for i in 0..n {
            let b = raw[i];
            let upper = b & !0x20;
            let letter = upper.wrapping_sub(b'A') < 26;
            let gap = b == b'-' || b == b'.';
            invalid |= u8::from(!(letter | gap));
            converted[i] = if letter { upper } else { b'-' };
            inserted[i] = u8::from(letter) & mask[i];
        }
        residues.extend(self.kept.iter().map(|&k| converted[k as usize]));
        const CHUNK: usize = 32;
        let width = self.kept.len() as u32;
        let row_start = deletions.len();
        for (c, chunk) in inserted.chunks(CHUNK).enumerate() {
            if chunk.iter().fold(0, |any, &f| any | f) == 0 {
                continue;
            }
            for (j, _) in chunk.iter().enumerate().filter(|(_, f)| **f != 0) {
                let column = self.next_kept[c * CHUNK + j];
                if column == width {
                    continue; // after the last kept column: no column to count it for
                }
                let in_this_row = deletions.len() > row_start;
                match deletions.last_mut() {
                    Some((last, count)) if in_this_row && *last == column => {
                        *count += 1;
                    }
                    _ => deletions.push((column, 1)),
                }
            }
        }
        invalid == 0
    }
}

/// The two whitespace-separated fields of a trimmed Stockholm sequence line; `None` when
/// it has another number of fields. (What `split_whitespace` gives, without decoding
/// every character of the long sequence field: that field is usually printable ASCII,
/// checked at once; anything else takes the general path.)
fn name_and_sequence(line: &str) -> Option<(&str, &str)> {
    let name_end = line.find(char::is_whitespace)?;
    let name = &line[..name_end];
    let rest = line[name_end..].trim_start();
    if !rest.is_empty() && rest.bytes().fold(true, |ok, b| ok & b.is_ascii_graphic()) {
        return Some((name, rest));
    }
    let mut fields = rest.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(sequence), None) => Some((name, sequence)),
        _ => None,
    }
}

/// Parses the first alignment of a Stockholm file (jackhmmer output).
///
/// The first sequence is the query; columns where the query has a gap (`-` or `.`) are
/// insert columns: removed, and a residue there counts as a deletion before the next
/// kept column. `#=GS name DE text` lines extend that row's description; `#=GF`, `#=GC`
/// and `#=GR` lines are recognised and skipped. Lowercase letters in kept columns read as
/// uppercase, `.` as `-`. Every row must have the same length (a ragged row is an error).
///
/// A row's pieces are kept as slices of the text; a single-block file (jackhmmer's usual
/// output) copies each row once, straight into the alignment.
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
    // Rows in first-seen order; names (with `DE` text) by name.
    let mut rows: Vec<StockholmRow<'_>> = Vec::new();
    let mut segments: Vec<Segment<'_>> = Vec::new();
    let mut names: HashMap<RowText<'_>, StockholmName<'_>, BuildPrehashed> =
        HashMap::with_hasher(BuildPrehashed);
    // The row a later block's next line most likely belongs to (blocks repeat the order).
    let mut expected_row = 0;
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
                let entry = names
                    .entry(RowText(name.as_bytes()))
                    .or_insert(StockholmName {
                        row: NO_ROW,
                        description: Cow::Borrowed(""),
                    });
                if entry.description.is_empty() {
                    entry.description = Cow::Borrowed(after_de);
                } else {
                    let description = entry.description.to_mut();
                    description.push(' ');
                    description.push_str(after_de);
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, sequence)) = name_and_sequence(line) else {
            return Err(syntax(
                file,
                line_no,
                "a sequence line 'name sequence'",
                line.as_bytes(),
            ));
        };
        let row = match rows.get(expected_row) {
            Some(r) if r.name == name => expected_row,
            _ => {
                let entry = names
                    .entry(RowText(name.as_bytes()))
                    .or_insert(StockholmName {
                        row: NO_ROW,
                        description: Cow::Borrowed(""),
                    });
                if entry.row == NO_ROW {
                    entry.row = rows.len();
                    rows.push(StockholmRow {
                        name,
                        first: NO_SEGMENT,
                        last: NO_SEGMENT,
                        line: line_no,
                        description: Cow::Borrowed(""),
                    });
                }
                entry.row
            }
        };
        let segment = segments.len();
        segments.push(Segment {
            text: sequence.as_bytes(),
            next: NO_SEGMENT,
        });
        let info = &mut rows[row];
        if info.first == NO_SEGMENT {
            info.first = segment;
        } else {
            segments[info.last].next = segment;
        }
        info.last = segment;
        info.line = line_no;
        expected_row = row + 1;
    }
    if !terminated {
        return Err(ParseError::Missing {
            file: file.to_string(),
            line: last_line(bytes),
            what: "the end-of-alignment line '//'".to_string(),
        });
    }
    let Some(query) = rows.first().map(|q| q.first) else {
        return Err(ParseError::Missing {
            file: file.to_string(),
            line: last_line(bytes),
            what: "at least one sequence line".to_string(),
        });
    };
    for entry in names.into_values() {
        if entry.row != NO_ROW {
            rows[entry.row].description = entry.description;
        }
    }
    let mut scratch = Vec::new();
    let mut columns = StockholmColumns::new(joined(&segments, query, &mut scratch));
    let width = columns.width();
    let mut out = Alignment {
        width,
        residues: Vec::with_capacity(rows.len() * width),
        description_ends: Vec::with_capacity(rows.len()),
        deletion_ends: Vec::with_capacity(rows.len()),
        ..Alignment::default()
    };
    for row in &rows {
        let raw = joined(&segments, row.first, &mut scratch);
        if raw.len() != columns.raw_width() {
            return Err(ParseError::Syntax {
                file: file.to_string(),
                line: row.line,
                expected: format!(
                    "{} alignment columns in row {} (the query's width)",
                    columns.raw_width(),
                    row.name
                ),
                found: format!("{} columns (a ragged row)", raw.len()),
            });
        }
        if !columns.push_row(raw, &mut out.residues, &mut out.deletions) {
            return Err(syntax(
                file,
                row.line,
                format!("letters, '-' or '.' in row {}", row.name),
                raw,
            ));
        }
        out.deletion_ends.push(out.deletions.len());
        if row.description.is_empty() {
            out.push_description(&[row.name]);
        } else {
            out.push_description(&[row.name, &row.description]);
        }
    }
    Ok(out)
}

/// The species identifier of a UniProt-style description (`tr|ACCESSION|NAME_SPECIES`
/// or `sp|...`), read from its first word; empty when it has none.
pub fn species_id(description: &str) -> &str {
    // Most descriptions (UniRef, MGnify, plain names) have no '|' at all: one memchr.
    if memchr::memchr(b'|', description.as_bytes()).is_none() {
        return "";
    }
    let word = first_word(description);
    let identifier = &word[..memchr::memchr(b'/', word.as_bytes()).unwrap_or(word.len())];
    let bytes = identifier.as_bytes();
    // Candidates in order: every `tr|` or `sp|`, found through its '|'.
    memchr::memchr_iter(b'|', bytes)
        .filter(|&pipe| pipe >= 2 && matches!(&bytes[pipe - 2..pipe], b"tr" | b"sp"))
        .find_map(|pipe| species_after_prefix(bytes, pipe + 1))
        .map_or("", |range| &identifier[range])
}

/// Where the species code sits in a UniProt identifier whose accession starts at `at` (just
/// after `tr|` or `sp|`): `ACCESSION[_N]|NAME_SPECIES`, the accession 6 to 10 alphanumerics,
/// the species up to 5 of them. `None` when the identifier does not have that form there.
fn species_after_prefix(bytes: &[u8], mut at: usize) -> Option<std::ops::Range<usize>> {
    let alnum_run = |from: usize| {
        bytes[from.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count()
    };
    let accession = alnum_run(at);
    if !(6..=10).contains(&accession) {
        return None;
    }
    at += accession;
    if bytes.get(at) == Some(&b'_') && bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
        at += 2;
    }
    if bytes.get(at) != Some(&b'|') {
        return None;
    }
    at += 1;
    let name = alnum_run(at);
    if name == 0 || bytes.get(at + name) != Some(&b'_') {
        return None;
    }
    at += name + 1;
    let species = alnum_run(at).min(5);
    (species > 0).then_some(at..at + species)
}

/// The first whitespace-separated word of `text` (what `split_whitespace` gives first),
/// found byte by byte while the text is ASCII; other text takes the general path.
fn first_word(text: &str) -> &str {
    let text = text.trim_start();
    let bytes = text.as_bytes();
    // ASCII White_Space is \t, \n, \x0B, \x0C, \r and ' '.
    match bytes
        .iter()
        .position(|&b| matches!(b, b'\t'..=b'\r' | b' ') || !b.is_ascii())
    {
        None => text,
        Some(end) if bytes[end].is_ascii() => &text[..end],
        Some(_) => text.split_whitespace().next().unwrap_or(""),
    }
}

/// Merges alignments in the given order into one [`Msa`]: a row whose aligned text was
/// already seen is dropped (first occurrence wins); species ids come from descriptions.
/// All alignments must have the same width; `names` label them in errors.
pub fn merge_alignments(alignments: &[(&str, &Alignment)]) -> Result<Msa> {
    let kept = kept_rows(alignments)?;
    let width = alignments.first().map_or(0, |(_, a)| a.width());
    let ids = MsaIds::new();
    let mut msa = Msa::default();
    for (k, i) in kept {
        let (name, alignment) = alignments[k];
        let mut row = Vec::with_capacity(width);
        ids.push_row(&mut row, name, i, alignment.row(i))?;
        msa.msa.push(row);
        msa.deletion_matrix.push(alignment.deletion_row(i));
        let description = alignment.description(i);
        msa.species_ids.push(species_id(description).to_string());
        msa.descriptions.push(description.to_string());
    }
    Ok(msa)
}

/// [`merge_alignments`] straight into the record's flat layout (the same rows, ids,
/// deletions saturated at `u16::MAX` and species ids; no descriptions): no allocation
/// per row but a non-empty species id.
pub fn merge_alignments_flat(alignments: &[(&str, &Alignment)]) -> Result<FlatMsa> {
    let kept = kept_rows(alignments)?;
    let width = alignments.first().map_or(0, |(_, a)| a.width());
    let ids = MsaIds::new();
    let mut msa = FlatMsa {
        msa: Vec::with_capacity(kept.len() * width),
        deletion_matrix: vec![0; kept.len() * width],
        species_ids: Vec::with_capacity(kept.len()),
        num_rows: kept.len(),
    };
    for (r, &(k, i)) in kept.iter().enumerate() {
        let (name, alignment) = alignments[k];
        ids.push_row(&mut msa.msa, name, i, alignment.row(i))?;
        let deletions = &mut msa.deletion_matrix[r * width..(r + 1) * width];
        for &(column, count) in alignment.deletions(i) {
            deletions[column as usize] = count.min(u32::from(u16::MAX)) as u16;
        }
        msa.species_ids
            .push(species_id(alignment.description(i)).to_string());
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
        for i in 0..alignment.len() {
            if seen.insert(RowText(alignment.row(i))) {
                kept.push((k, i));
            }
        }
    }
    Ok(kept)
}

/// The MSA id of every byte ([`msa_id`]), [`MsaIds::INVALID`] where there is none.
struct MsaIds([u8; 256]);

impl MsaIds {
    /// Marks a byte outside the MSA alphabet.
    const INVALID: u8 = u8::MAX;

    fn new() -> Self {
        MsaIds(std::array::from_fn(|c| {
            msa_id(c as u8).unwrap_or(Self::INVALID)
        }))
    }

    /// Appends the MSA ids of row `row` (of alignment `name`) to `out`; on a character
    /// outside the MSA alphabet, leaves `out` as it was and names the row.
    fn push_row(&self, out: &mut Vec<u8>, name: &str, row: usize, sequence: &[u8]) -> Result<()> {
        let start = out.len();
        out.extend(sequence.iter().map(|&c| self.0[c as usize]));
        if out[start..].contains(&Self::INVALID) {
            out.truncate(start);
            return Err(ParseError::InvalidValue {
                file: name.to_string(),
                line: 0,
                field: format!("row {row}"),
                expected: "letters of the MSA alphabet".to_string(),
                found: excerpt(sequence),
            });
        }
        Ok(())
    }
}

/// A byte string as a set or map key (an aligned row, a Stockholm name), hashed once with
/// xxh3 over its bytes (the default SipHash fed byte slices piecewise cost more than the
/// rest of the merge).
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
    use proptest::prelude::*;

    fn sequences(a: &Alignment) -> Vec<String> {
        (0..a.len())
            .map(|i| String::from_utf8(a.row(i).to_vec()).unwrap())
            .collect()
    }

    fn descriptions(a: &Alignment) -> Vec<&str> {
        (0..a.len()).map(|i| a.description(i)).collect()
    }

    #[test]
    fn a3m_counts_lowercase_as_deletions_and_drops_dots() {
        let a = parse_a3m("t.a3m", b">q\nACDE\n>hit\nAab.C-\nE\n").unwrap();
        assert_eq!(sequences(&a), vec!["ACDE", "AC-E"]);
        assert_eq!(a.deletion_row(1), vec![0, 2, 0, 0]);
        assert_eq!(a.deletions(1), [(1, 2)]);
        assert_eq!(descriptions(&a), vec!["q", "hit"]);
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
        assert_eq!(sequences(&a), vec!["ACDE", "ACD-"]);
        assert_eq!(a.deletion_row(1), vec![0, 0, 1, 0]);
        assert_eq!(a.description(1), "h some protein");
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

    /// A bad row, however its text is laid out (one block or several, one line or
    /// several), is reported with the file and the line the row was last seen on.
    #[test]
    fn bad_rows_name_file_and_line() {
        let cases: [(&str, &[u8], usize, &str); 5] = [
            // Ragged in the second of two blocks: the row's last line.
            (
                "two_blocks.sto",
                b"# STOCKHOLM 1.0\nq AC\nh AC\n\nq DE\nh D\n//\n",
                6,
                "4 alignment columns in row h (the query's width)",
            ),
            // A byte outside the alphabet in the first block, reported on the last.
            (
                "bad_byte.sto",
                b"# STOCKHOLM 1.0\nq AC\nh A*\n\nq DE\nh DE\n//\n",
                6,
                "letters, '-' or '.' in row h",
            ),
            // An a3m record wrapped over lines, too short: its header line.
            (
                "wrapped.a3m",
                b">q\nACDE\n>h\nAC\nD\n>h2\nACDE\n",
                3,
                "4 aligned columns (the query's length) in this record",
            ),
            // An a3m record too long after insertions are removed.
            (
                "long.a3m",
                b">q\nACDE\n>h\nAaaCDEF\n",
                3,
                "4 aligned columns (the query's length) in this record",
            ),
            // A bad byte in an a3m continuation line: that line.
            (
                "bad.a3m",
                b">q\nACDE\n>h\nAC\nD#\n",
                5,
                "only letters, '-' and '.' in an a3m sequence",
            ),
        ];
        for (file, text, line, expected) in cases {
            let err = if file.ends_with(".sto") {
                parse_stockholm(file, text)
            } else {
                parse_a3m(file, text)
            }
            .unwrap_err();
            assert_eq!(err.file(), file);
            assert_eq!(err.line(), Some(line), "{err}");
            let message = err.to_string();
            assert!(
                message.contains(file) && message.contains(expected),
                "{message}"
            );
        }
    }

    /// The fast split of sequence lines agrees with `split_whitespace` on every kind of
    /// line: one, two or three fields, tabs, Unicode spaces, non-ASCII text.
    #[test]
    fn sequence_lines_split_like_split_whitespace() {
        for line in [
            "q ACDE",
            "q\tAC-.de",
            "q  ACDE  x",
            "q",
            "q ACDE\u{a0}x",
            "q AC\u{2003}DE",
            "q ÄCDE",
            "name\u{85}ACDE",
        ] {
            let mut fields = line.split_whitespace();
            let want = match (fields.next(), fields.next(), fields.next()) {
                (Some(name), Some(sequence), None) => Some((name, sequence)),
                _ => None,
            };
            assert_eq!(name_and_sequence(line), want, "{line:?}");
        }
    }

    #[test]
    fn first_word_is_what_split_whitespace_gives_first() {
        for text in [
            "",
            "   ",
            "word",
            "  tr|A|B_C rest",
            "a\x0Bb",
            "a\x0Cb c",
            "é word",
            "ab\u{a0}cd ef",
            "ab\u{2003}",
            "\u{85}x y",
            "x\ty",
        ] {
            assert_eq!(
                first_word(text),
                text.split_whitespace().next().unwrap_or(""),
                "{text:?}"
            );
        }
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
        let mut bad = Alignment::default();
        bad.push_row(b"ACDE", &[0; 4], "q");
        bad.push_row(b"AC*E", &[0; 4], "x");
        let inputs = [("a.a3m", &good), ("b.sto", &bad)];
        for err in [
            merge_alignments(&inputs).unwrap_err(),
            merge_alignments_flat(&inputs).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.contains("b.sto") && text.contains("row 1"), "{text}");
        }
    }

    #[test]
    fn push_row_builds_what_the_parser_reads() {
        let parsed = parse_a3m("a.a3m", b">q\nACDE\n>h x\nAab.C-\nE\n").unwrap();
        let mut built = Alignment::default();
        built.push_row(b"ACDE", &[0; 4], "q");
        built.push_row(b"AC-E", &[0, 2, 0, 0], "h x");
        assert_eq!(built, parsed);
    }

    /// The row-wise algorithm this module had before the flat layout (one `String`, one
    /// `Vec<u32>` and one description per row), kept as the reference the flat parsers and
    /// merges must reproduce exactly.
    mod reference {
        use super::super::{excerpt, syntax};
        use crate::error::{ParseError, Result};
        use crate::input::{as_utf8, last_line};
        use scalefold_featurize::inputs::Msa;
        use scalefold_featurize::residue_constants::msa_id;
        use std::collections::{HashMap, HashSet};

        #[derive(Debug, Default, PartialEq)]
        pub struct Rows {
            pub sequences: Vec<String>,
            pub deletion_matrix: Vec<Vec<u32>>,
            pub descriptions: Vec<String>,
        }

        pub fn parse_a3m(file: &str, bytes: &[u8]) -> Result<Rows> {
            let text = as_utf8(file, bytes)?;
            let mut out = Rows::default();
            let mut current: Option<(usize, String, Vec<u32>, u32)> = None;
            let finish = |out: &mut Rows, row: Option<(usize, String, Vec<u32>, u32)>| {
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
                    current = Some((line_no, String::new(), Vec::new(), 0));
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
            if out.sequences.is_empty() {
                return Err(ParseError::Missing {
                    file: file.to_string(),
                    line: last_line(bytes),
                    what: "an a3m record ('>' header and sequence)".to_string(),
                });
            }
            Ok(out)
        }

        pub fn parse_stockholm(file: &str, bytes: &[u8]) -> Result<Rows> {
            let text = as_utf8(file, bytes)?;
            let mut lines = text.lines().enumerate();
            match lines.by_ref().find(|(_, l)| !l.trim().is_empty()) {
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
            let mut names: Vec<&str> = Vec::new();
            let mut rows: Vec<(String, usize)> = Vec::new();
            let mut index_of: HashMap<&str, usize> = HashMap::new();
            let mut descriptions: HashMap<&str, String> = HashMap::new();
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
                let (Some(name), Some(sequence), None) =
                    (fields.next(), fields.next(), fields.next())
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
            let mut out = Rows::default();
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
                let mut sequence = String::new();
                let mut deletions = Vec::new();
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

        /// The species id search as it was: both patterns searched from each position (the
        /// part after the prefix is shared with the new search).
        pub fn species_id(description: &str) -> &str {
            let identifier = description.split_whitespace().next().unwrap_or("");
            let identifier = identifier.split('/').next().unwrap_or("");
            let mut search = 0;
            while let Some(found) = ["tr|", "sp|"]
                .iter()
                .filter_map(|p| identifier[search..].find(p).map(|i| search + i))
                .min()
            {
                search = found + 1;
                if let Some(range) =
                    super::super::species_after_prefix(identifier.as_bytes(), found + 3)
                {
                    return &identifier[range];
                }
            }
            ""
        }

        pub fn merge(alignments: &[(&str, &Rows)]) -> Result<Msa> {
            let width = alignments
                .first()
                .and_then(|(_, a)| a.sequences.first())
                .map_or(0, String::len);
            let mut seen = HashSet::new();
            let mut msa = Msa::default();
            for (name, alignment) in alignments {
                let columns = alignment.sequences.first().map_or(0, String::len);
                if alignment.sequences.is_empty() || columns != width {
                    return Err(ParseError::InvalidValue {
                        file: name.to_string(),
                        line: 1,
                        field: "alignment width".to_string(),
                        expected: format!(
                            "at least one row of {width} columns (the first alignment's width)"
                        ),
                        found: format!("{} rows of {columns} columns", alignment.sequences.len()),
                    });
                }
                for (i, sequence) in alignment.sequences.iter().enumerate() {
                    if !seen.insert(sequence.as_str()) {
                        continue;
                    }
                    let ids: Option<Vec<u8>> = sequence.bytes().map(msa_id).collect();
                    let Some(ids) = ids else {
                        return Err(ParseError::InvalidValue {
                            file: name.to_string(),
                            line: 0,
                            field: format!("row {i}"),
                            expected: "letters of the MSA alphabet".to_string(),
                            found: excerpt(sequence.as_bytes()),
                        });
                    };
                    msa.msa.push(ids);
                    msa.deletion_matrix
                        .push(alignment.deletion_matrix[i].clone());
                    let description = &alignment.descriptions[i];
                    msa.species_ids.push(species_id(description).to_string());
                    msa.descriptions.push(description.clone());
                }
            }
            Ok(msa)
        }
    }

    /// The flat alignment in the reference's row-wise form.
    fn as_rows(a: &Alignment) -> reference::Rows {
        reference::Rows {
            sequences: sequences(a),
            deletion_matrix: (0..a.len()).map(|i| a.deletion_row(i)).collect(),
            descriptions: descriptions(a).into_iter().map(String::from).collect(),
        }
    }

    /// Both parses succeed with the same rows, or both fail with the same message.
    fn same_outcome(flat: &Result<Alignment>, rows: &Result<reference::Rows>) {
        match (flat, rows) {
            (Ok(flat), Ok(rows)) => assert_eq!(&as_rows(flat), rows),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (flat, rows) => panic!("flat {flat:?}, reference {rows:?}"),
        }
    }

    const DESCRIPTIONS: [&str; 5] = [
        "tr|Q12345|X_HUMAN homolog",
        "sp|P12345|Y_MOUSE/2-9",
        "UniRef90_A0A345 x",
        "plain",
        "",
    ];

    /// An a3m file: per row, per column an insertion (lowercase, `.`) and an aligned
    /// character from a small alphabet (so rows repeat), wrapped at random points; now
    /// and then a row one column short or a byte outside the grammar.
    fn a3m_text(width: usize, rows: usize) -> impl Strategy<Value = String> {
        let row = (
            prop::collection::vec(("[ab.]{0,2}", "[ACB-]"), width),
            0..DESCRIPTIONS.len(),
            prop::collection::vec(0..width * 3 + 1, 0..3),
            0..40u8,
        );
        prop::collection::vec(row, 1..=rows).prop_map(|rows| {
            let mut text = String::new();
            for (columns, description, breaks, damage) in rows {
                let mut body: String = columns
                    .iter()
                    .map(|(insertion, aligned)| format!("{insertion}{aligned}"))
                    .collect();
                match damage {
                    0 => body.push('A'),
                    1 => body.insert(body.len() / 2, '*'),
                    _ => {}
                }
                let mut breaks: Vec<usize> =
                    breaks.into_iter().filter(|&b| b < body.len()).collect();
                breaks.sort_unstable();
                breaks.dedup();
                for b in breaks.into_iter().rev() {
                    body.insert(b, '\n');
                }
                text.push_str(&format!(">{}\n{body}\n", DESCRIPTIONS[description]));
            }
            text
        })
    }

    /// A Stockholm file: a query whose raw columns are kept or insert columns (also after
    /// the last kept one), rows over
    /// letters (both cases), `-` and `.`, names with and without `DE` lines, split into
    /// one to three blocks; now and then a ragged row or a byte outside the grammar.
    fn stockholm_text(width: usize, rows: usize) -> impl Strategy<Value = String> {
        let columns = prop::collection::vec(("[-.]{0,2}", "[ACB]"), width);
        let hits = prop::collection::vec(
            (
                prop::collection::vec("[ACac.-]", width * 3 + 2),
                0..3usize,
                0..40u8,
            ),
            0..rows,
        );
        (columns, "[-.]{0,2}", hits, 1..4usize).prop_map(move |(columns, tail, hits, blocks)| {
            let query: String = columns.iter().map(|(g, k)| format!("{g}{k}")).collect();
            let query = query + &tail;
            let raw_width = query.len();
            let names = [
                "q",
                "tr|Q12345|X_HUMAN",
                "sp|P12345|Y_MOUSE/1-5",
                "h3",
                "h4",
            ];
            let mut lines: Vec<(String, String)> = vec![(names[0].to_string(), query)];
            let mut text = String::from("# STOCKHOLM 1.0\n#=GF ID test\n");
            for (r, (chars, de_lines, damage)) in hits.into_iter().enumerate() {
                let name = names[(r + 1) % names.len()].to_string();
                let mut row: String = chars.concat().chars().take(raw_width).collect();
                match damage {
                    0 => {
                        row.pop();
                    }
                    1 => row.insert(0, '*'),
                    _ => {}
                }
                for d in 0..de_lines {
                    text.push_str(&format!("#=GS {name} DE text {d}\n"));
                }
                lines.push((name, row));
            }
            let block = raw_width.div_ceil(blocks).max(1);
            for b in 0..blocks {
                text.push('\n');
                for (name, row) in &lines {
                    let piece: String = row.chars().skip(b * block).take(block).collect();
                    if !piece.is_empty() {
                        text.push_str(&format!("{name:<24} {piece}\n"));
                    }
                }
                text.push_str(&format!("{:<24} {}\n", "#=GC RF", "x".repeat(block)));
            }
            text.push_str("//\n");
            text
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The flat a3m parser reads exactly what the row-wise one read (or fails with the
        /// same message).
        #[test]
        fn flat_a3m_matches_the_row_wise_parser(text in (1..8usize, 1..8usize)
            .prop_flat_map(|(w, r)| a3m_text(w, r)))
        {
            same_outcome(
                &parse_a3m("p.a3m", text.as_bytes()),
                &reference::parse_a3m("p.a3m", text.as_bytes()),
            );
        }

        /// The species id found through the '|' bytes is the one both patterns searched
        /// from every position found, on descriptions made of the pieces that matter.
        #[test]
        fn species_id_matches_the_pattern_search(pieces in prop::collection::vec(
            prop::sample::select(vec![
                "tr|", "sp|", "|", "t", "r", "ABC123", "Q12345", "A0A2A6NXF8", "_", "_1",
                "HUMAN", "9BRAD", "/1-50", " ", "x", "é", "tr|Q12345|X_HUMAN",
                "sp|A0A2A6NXF8_1|AB_MOUSE", "|X_", "Q12345|", "\t", "\u{a0}", "\u{0B}",
            ]),
            0..12,
        )) {
            let description = pieces.concat();
            prop_assert_eq!(
                species_id(&description),
                reference::species_id(&description),
                "{:?}",
                description
            );
        }

        /// The same for Stockholm, blocks and `DE` lines included.
        #[test]
        fn flat_stockholm_matches_the_row_wise_parser(text in (1..30usize, 1..8usize)
            .prop_flat_map(|(w, r)| stockholm_text(w, r)))
        {
            same_outcome(
                &parse_stockholm("p.sto", text.as_bytes()),
                &reference::parse_stockholm("p.sto", text.as_bytes()),
            );
        }

        /// Parse + merge of a Stockholm and two a3m files of one query width: the flat
        /// merge equals the row-wise merge of the reference's rows (ids, deletions
        /// saturated at u16::MAX, species ids), and so does the row-wise one.
        #[test]
        fn flat_merge_matches_the_row_wise_merge(files in (1..6usize).prop_flat_map(|w| (
            stockholm_text(w, 6), a3m_text(w, 6), a3m_text(w, 6))))
        {
            let (sto, a, b) = files;
            let flat = [
                parse_stockholm("s.sto", sto.as_bytes()),
                parse_a3m("a.a3m", a.as_bytes()),
                parse_a3m("b.a3m", b.as_bytes()),
            ];
            let rows = [
                reference::parse_stockholm("s.sto", sto.as_bytes()),
                reference::parse_a3m("a.a3m", a.as_bytes()),
                reference::parse_a3m("b.a3m", b.as_bytes()),
            ];
            let names = ["s.sto", "a.a3m", "b.a3m"];
            let flat: Vec<(&str, &Alignment)> = names
                .iter()
                .zip(&flat)
                .filter_map(|(n, r)| r.as_ref().ok().map(|a| (*n, a)))
                .collect();
            let rows: Vec<(&str, &reference::Rows)> = names
                .iter()
                .zip(&rows)
                .filter_map(|(n, r)| r.as_ref().ok().map(|a| (*n, a)))
                .collect();
            prop_assert_eq!(flat.len(), rows.len());
            let want = reference::merge(&rows);
            let got = merge_alignments(&flat);
            let got_flat = merge_alignments_flat(&flat);
            match want {
                Ok(want) => {
                    prop_assert_eq!(got.unwrap(), want.clone());
                    let got_flat = got_flat.unwrap();
                    prop_assert_eq!(got_flat.num_rows, want.msa.len());
                    prop_assert_eq!(got_flat.msa, want.msa.concat());
                    let saturated: Vec<u16> = want.deletion_matrix.concat().iter()
                        .map(|&d| d.min(u32::from(u16::MAX)) as u16).collect();
                    prop_assert_eq!(got_flat.deletion_matrix, saturated);
                    prop_assert_eq!(got_flat.species_ids, want.species_ids);
                }
                Err(e) => {
                    prop_assert_eq!(got.unwrap_err().to_string(), e.to_string());
                    prop_assert_eq!(got_flat.unwrap_err().to_string(), e.to_string());
                }
            }
        }
    }
}
