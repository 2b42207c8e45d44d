//! Legacy PDB format → [`Structure`].
//!
//! Reads ATOM/HETATM records of the first model (MODEL/ENDMDL), SEQRES, and the header
//! records EXPDTA, REVDAT and `REMARK   2 RESOLUTION`. Residues are identified like the
//! reference (Biopython) does: chain id, hetero flag, residue number and insertion code;
//! unlike the reference, insertion codes and blank chain ids are accepted (a blank chain
//! id reads as the empty string). A chain's residues are those with at least one atom in
//! the atom37 layout, in file order; TER records do not split chains (a chain id seen
//! again continues its chain, as in the reference). Atoms are selected as for mmCIF
//! (first record per name, highest-occupancy alternate location, SE of MSE in SD).

use std::collections::HashMap;
use std::path::Path;

use scalefold_featurize::inputs::{ChainStructure, Structure, StructureHeader};
use scalefold_featurize::residue_constants::ATOM_TYPE_NUM;

use crate::error::{ParseError, Result, excerpt};
use crate::input::{as_utf8, read_file};
use crate::mmcif::entry_id_from_file_name;
use crate::number::{parse_f32, parse_i32};
use crate::residue_names::{RESIDUE_NAME_TABLE_VERSION, one_letter_code};
use crate::residues::{AtomRecord, ResidueAtoms};

/// A parsed PDB-format file: the structure and the SEQRES sequences it declares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PdbEntry {
    /// Header and the chains with coordinates.
    pub structure: Structure,
    /// SEQRES sequences in one-letter code, per chain id in file order (empty when the
    /// file has no SEQRES records).
    pub seqres: Vec<(String, String)>,
}

/// Reads a PDB-format file (plain or gzip-compressed).
pub fn read_pdb(path: &Path) -> Result<PdbEntry> {
    let (name, bytes) = read_file(path)?;
    parse_pdb(&name, &bytes)
}

/// The residue identity inside one chain: hetero flag, number, insertion code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ResidueId<'a> {
    hetero: &'a str,
    number: i32,
    insertion_code: u8,
}

/// A chain while it is read.
struct ChainBuilder<'a> {
    id: &'a str,
    residues: Vec<(ResidueId<'a>, i32, ResidueAtoms<'a>)>,
    /// Position of each residue id in `residues`.
    index: HashMap<ResidueId<'a>, usize>,
}

/// Columns of a fixed-width record, or "" past the end of the line.
fn columns(line: &str, from: usize, to: usize) -> &str {
    line.get(from..to.min(line.len())).unwrap_or("")
}

/// Parses PDB-format bytes. `file` names the input in errors and gives the entry id.
pub fn parse_pdb(file: &str, bytes: &[u8]) -> Result<PdbEntry> {
    let text = as_utf8(file, bytes)?;
    let mut header = StructureHeader::default();
    let mut release_dates: Vec<String> = Vec::new();
    let mut seqres: Vec<(String, String)> = Vec::new();
    let mut chains: Vec<ChainBuilder<'_>> = Vec::new();
    let mut models_started = 0;
    let mut atoms_seen = false;

    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let invalid = |field: &str, expected: &str, found: &str| ParseError::InvalidValue {
            file: file.to_string(),
            line: line_no,
            field: field.to_string(),
            expected: expected.to_string(),
            found: excerpt(found.as_bytes()),
        };
        if !line.is_ascii() {
            return Err(ParseError::Syntax {
                file: file.to_string(),
                line: line_no,
                expected: "an ASCII record".to_string(),
                found: format!("{:?}", excerpt(line.as_bytes())),
            });
        }
        let record = columns(line, 0, 6).trim_end();
        match record {
            "ATOM" | "HETATM" => {
                if line.len() < 54 {
                    return Err(ParseError::Syntax {
                        file: file.to_string(),
                        line: line_no,
                        expected: "an ATOM/HETATM record of at least 54 columns".to_string(),
                        found: format!("{} columns", line.len()),
                    });
                }
                atoms_seen = true;
                let atom_name = columns(line, 12, 16).trim();
                let altloc = columns(line, 16, 17);
                let residue_name = columns(line, 17, 20).trim();
                let chain_id = columns(line, 21, 22).trim();
                let number_text = columns(line, 22, 26).trim();
                let number = parse_i32(number_text).ok_or_else(|| {
                    invalid("residue number (columns 23-26)", "an integer", number_text)
                })?;
                let insertion_code = line.as_bytes()[26];
                let coordinate = |from: usize, field: &str| {
                    let t = columns(line, from, from + 8).trim();
                    parse_f32(t).ok_or_else(|| invalid(field, "a number", t))
                };
                let position = [
                    coordinate(30, "x (columns 31-38)")?,
                    coordinate(38, "y (columns 39-46)")?,
                    coordinate(46, "z (columns 47-54)")?,
                ];
                let occupancy_text = columns(line, 54, 60).trim();
                let occupancy = if occupancy_text.is_empty() {
                    1.0
                } else {
                    parse_f32(occupancy_text).ok_or_else(|| {
                        invalid("occupancy (columns 55-60)", "a number", occupancy_text)
                    })?
                };
                let hetero = match (record, residue_name) {
                    ("HETATM", "HOH" | "WAT") => "W",
                    ("HETATM", _) => residue_name,
                    _ => "",
                };
                let id = ResidueId {
                    hetero,
                    number,
                    insertion_code: if insertion_code == b' ' {
                        b' '
                    } else {
                        insertion_code
                    },
                };
                let chain_index = match chains.iter().position(|c| c.id == chain_id) {
                    Some(i) => i,
                    None => {
                        chains.push(ChainBuilder {
                            id: chain_id,
                            residues: Vec::new(),
                            index: HashMap::new(),
                        });
                        chains.len() - 1
                    }
                };
                let chain = &mut chains[chain_index];
                let residue = match chain.residues.last() {
                    Some((last, _, _)) if *last == id => chain.residues.len() - 1,
                    _ => *chain.index.entry(id).or_insert_with(|| {
                        chain.residues.push((id, number, ResidueAtoms::new()));
                        chain.residues.len() - 1
                    }),
                };
                chain.residues[residue].2.add(
                    residue_name,
                    AtomRecord {
                        name: atom_name.as_bytes(),
                        position,
                        occupancy,
                        has_altloc: altloc != " " && !altloc.is_empty(),
                    },
                );
            }
            "MODEL" => {
                models_started += 1;
                if models_started > 1 && atoms_seen {
                    break;
                }
            }
            "ENDMDL" if atoms_seen => break,
            "SEQRES" => {
                let chain_id = columns(line, 11, 12).trim();
                let names = columns(line, 19, 70);
                let index = match seqres.iter().position(|(c, _)| c == chain_id) {
                    Some(i) => i,
                    None => {
                        seqres.push((chain_id.to_string(), String::new()));
                        seqres.len() - 1
                    }
                };
                let entry = &mut seqres[index].1;
                entry.extend(names.split_whitespace().map(|n| one_letter_code(n) as char));
            }
            "EXPDTA" => {
                let method = columns(line, 10, line.len()).trim().to_lowercase();
                if !header.structure_method.is_empty() {
                    header.structure_method.push(',');
                }
                header.structure_method.push_str(&method);
            }
            "REVDAT" => {
                let date = columns(line, 13, 22).trim();
                release_dates.push(pdb_date(date).ok_or_else(|| {
                    invalid("REVDAT date (columns 14-22)", "a date DD-MMM-YY", date)
                })?);
            }
            "REMARK" if columns(line, 6, 10).trim() == "2" => {
                if let Some(rest) = columns(line, 10, line.len())
                    .trim()
                    .strip_prefix("RESOLUTION.")
                {
                    header.resolution = rest
                        .split_whitespace()
                        .next()
                        .and_then(parse_f32)
                        .unwrap_or(0.0);
                }
            }
            _ => {}
        }
    }
    header.release_date = release_dates.into_iter().min();

    let chains = chains
        .into_iter()
        .filter_map(|chain| {
            let mut out = ChainStructure {
                chain_id: chain.id.to_string(),
                ..Default::default()
            };
            for (_, number, atoms) in &chain.residues {
                let mut positions = [[0.0; 3]; ATOM_TYPE_NUM];
                let mut mask = [0.0; ATOM_TYPE_NUM];
                if atoms.write_atom37(&mut positions, &mut mask) == 0 {
                    continue;
                }
                out.sequence
                    .push(one_letter_code(atoms.name().unwrap_or("")) as char);
                out.residue_index.push(*number);
                out.atom_positions.push(positions);
                out.atom_mask.push(mask);
            }
            (!out.sequence.is_empty()).then_some(out)
        })
        .collect();
    Ok(PdbEntry {
        structure: Structure {
            id: entry_id_from_file_name(file),
            header,
            chains,
            residue_table_version: RESIDUE_NAME_TABLE_VERSION,
        },
        seqres,
    })
}

/// Converts a PDB date `DD-MMM-YY` to `YYYY-MM-DD` (years before 70 are 20xx: the PDB
/// started in 1971).
fn pdb_date(date: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let mut parts = date.split('-');
    let day: u32 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? + 1;
    let year: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=31).contains(&day) || year > 99 {
        return None;
    }
    let year = if year < 70 { 2000 + year } else { 1900 + year };
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_MODELS: &str = "\
HEADER    TEST
EXPDTA    SOLUTION NMR
REVDAT   2   01-FEB-05 1ABC    1       REMARK
REVDAT   1   15-JAN-99 1ABC    0
SEQRES   1 A    2  GLY MSE
MODEL        1
ATOM      1  N   GLY A   1      11.000  12.000  13.000  1.00 10.00           N
ATOM      2  CA  GLY A   1A     11.500  12.000  13.000  1.00 10.00           C
HETATM    3 SE   MSE A   2      14.000  12.000  13.000  1.00 10.00          SE
ATOM      4  CA  ALA     7       1.000   2.000   3.000
ENDMDL
MODEL        2
ATOM      1  N   GLY A   1      99.000  12.000  13.000  1.00 10.00           N
ENDMDL
";

    #[test]
    fn first_model_insertion_codes_blank_chains_and_header() {
        let entry = parse_pdb("1abc.pdb", TWO_MODELS.as_bytes()).unwrap();
        let s = &entry.structure;
        assert_eq!(s.id, "1abc");
        assert_eq!(s.header.structure_method, "solution nmr");
        assert_eq!(s.header.release_date.as_deref(), Some("1999-01-15"));
        assert_eq!(entry.seqres, vec![("A".to_string(), "GM".to_string())]);
        let a = &s.chains[0];
        assert_eq!(a.sequence, "GGM");
        assert_eq!(a.residue_index, vec![1, 1, 2]);
        assert_eq!(a.atom_positions[0][0], [11.0, 12.0, 13.0]);
        assert_eq!(a.atom_mask[2][18], 1.0);
        let blank = &s.chains[1];
        assert_eq!(blank.chain_id, "");
        assert_eq!(blank.sequence, "A");
    }

    #[test]
    fn short_and_bad_records_name_the_line() {
        let err =
            parse_pdb("x.pdb", b"HEADER\nATOM      1  N   GLY A   1      11.000\n").unwrap_err();
        assert_eq!(err.line(), Some(2));
        let err = parse_pdb(
            "x.pdb",
            b"ATOM      1  N   GLY A   X      11.000  12.000  13.000  1.00 10.00\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("residue number"), "{err}");
    }
}
