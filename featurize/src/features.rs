//! Static features: everything about a chain that does not depend on the random seed,
//! computed once at ingest and stored as one Parquet row ([`ChainRecord`]).
//!
//! Arrays are flat, row-major `Vec`s of primitives so a columnar writer can store them
//! without per-element work; the doc of each field gives its logical shape with
//! `n = seq_length`, `m = num_alignments`, `t = num_templates`.

use crate::error::FeaturizeError;
use crate::inputs::{ChainStructure, Msa, StructureHeader};
use crate::residue_constants::{ATOM_TYPE_NUM, GAP_ID, restype_index};
use crate::templates::TemplateFeatures;

/// The static features of one protein chain: one Parquet row.
///
/// Invariant (checked by [`ChainRecord::validate`]): every array has the length its
/// shape says; `aatype` values are 0..=20, `msa` values 0..=21, masks 0 or 1.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChainRecord {
    /// Chain identifier, `{entry}_{chain}` (e.g. `4zey_A`).
    pub chain_id: String,
    /// One-letter sequence of the full chain.
    pub sequence: String,
    /// Residue types `[n]`, 0..=19 standard, 20 unknown.
    pub aatype: Vec<i8>,
    /// Residue numbers `[n]`.
    pub residue_index: Vec<i32>,
    /// Number of residues `n`.
    pub seq_length: u32,
    /// 1 where a residue starts a new segment `[n]` (always 0 for a single chain).
    pub between_segment_residues: Vec<i8>,
    /// atom37 positions in Å `[n][37][3]`.
    pub all_atom_positions: Vec<f32>,
    /// atom37 resolved mask `[n][37]`, 0 or 1.
    pub all_atom_mask: Vec<u8>,
    /// Resolution in Å (0 when the method gives none).
    pub resolution: f32,
    /// Release date `YYYY-MM-DD`, when known.
    pub release_date: Option<String>,
    /// Experimental method, lowercase.
    pub structure_method: String,
    /// Whether the chain comes from self-distillation (predicted, not experimental).
    pub is_distillation: bool,
    /// Merged MSA `[m][n]`, ids in [`crate::residue_constants::MSA_ALPHABET`]; row 0 is the query.
    pub msa: Vec<u8>,
    /// Deletions before each column `[m][n]`, saturated at `u16::MAX`.
    pub deletion_matrix: Vec<u16>,
    /// Number of MSA rows `m`.
    pub num_alignments: u32,
    /// Species identifier per MSA row `[m]`, empty when unknown.
    pub msa_species_ids: Vec<String>,
    /// Template features (already mapped onto this chain's residues).
    pub templates: TemplateFeatures,
}

fn check_len(
    record: &str,
    field: &'static str,
    expected: usize,
    actual: usize,
) -> Result<(), FeaturizeError> {
    if expected == actual {
        Ok(())
    } else {
        Err(FeaturizeError::LengthMismatch {
            record: record.to_string(),
            field,
            expected,
            actual,
        })
    }
}

/// Checks that every value passes `is_valid`; the error names the first that does not.
///
/// Runs at memory speed: each chunk is checked with a fold that has no early exit (so it
/// vectorizes); only a failing chunk is searched for the position.
fn check_values<T: Copy + std::fmt::Display>(
    record: &str,
    field: &'static str,
    values: &[T],
    is_valid: impl Fn(T) -> bool,
    expected: &'static str,
) -> Result<(), FeaturizeError> {
    const CHUNK: usize = 4096;
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        if chunk.iter().fold(true, |ok, &v| ok & is_valid(v)) {
            continue;
        }
        if let Some(offset) = chunk.iter().position(|&v| !is_valid(v)) {
            let index = c * CHUNK + offset;
            return Err(FeaturizeError::InvalidValue {
                record: record.to_string(),
                field,
                index,
                value: values[index].to_string(),
                expected,
            });
        }
    }
    Ok(())
}

/// Checks that every MSA id is in 0..=21.
fn check_msa_ids(record: &str, msa: &[u8]) -> Result<(), FeaturizeError> {
    check_values(record, "msa", msa, |a| a <= GAP_ID, "an MSA id 0..=21")
}

impl ChainRecord {
    /// Builds the record of one chain from its parsed structure, its MSA (row 0 must be
    /// the chain's sequence; `None` gives a single-sequence MSA) and its template features.
    pub fn new(
        entry_id: &str,
        header: &StructureHeader,
        chain: &ChainStructure,
        msa: Option<&Msa>,
        templates: TemplateFeatures,
        is_distillation: bool,
    ) -> Result<ChainRecord, FeaturizeError> {
        let chain_id = format!("{entry_id}_{}", chain.chain_id);
        let n = chain.sequence.len();
        let flat = match msa {
            Some(m) => flatten_msa(&chain_id, m, n)?,
            None => FlatMsa {
                msa: chain.sequence.bytes().map(restype_index).collect(),
                deletion_matrix: vec![0; n],
                species_ids: vec![String::new()],
                num_rows: 1,
            },
        };
        Self::with_chain_id(chain_id, header, chain, flat, templates, is_distillation)
    }

    /// [`ChainRecord::new`] with the MSA already in the record's flat layout (what a
    /// merge that writes straight into flat arrays produces, without one allocation per
    /// row); row 0 must be the chain's sequence.
    pub fn from_flat_msa(
        entry_id: &str,
        header: &StructureHeader,
        chain: &ChainStructure,
        msa: FlatMsa,
        templates: TemplateFeatures,
        is_distillation: bool,
    ) -> Result<ChainRecord, FeaturizeError> {
        let chain_id = format!("{entry_id}_{}", chain.chain_id);
        Self::with_chain_id(chain_id, header, chain, msa, templates, is_distillation)
    }

    fn with_chain_id(
        chain_id: String,
        header: &StructureHeader,
        chain: &ChainStructure,
        flat: FlatMsa,
        templates: TemplateFeatures,
        is_distillation: bool,
    ) -> Result<ChainRecord, FeaturizeError> {
        let n = chain.sequence.len();
        check_len(&chain_id, "residue_index", n, chain.residue_index.len())?;
        check_len(&chain_id, "atom_positions", n, chain.atom_positions.len())?;
        check_len(&chain_id, "atom_mask", n, chain.atom_mask.len())?;
        check_len(&chain_id, "msa", flat.num_rows * n, flat.msa.len())?;
        check_len(
            &chain_id,
            "deletion_matrix",
            flat.num_rows * n,
            flat.deletion_matrix.len(),
        )?;
        check_msa_ids(&chain_id, &flat.msa)?;
        let aatype: Vec<i8> = chain
            .sequence
            .bytes()
            .map(|c| restype_index(c) as i8)
            .collect();
        if flat.num_rows > 0 {
            // Unknown residues may be written as X in one and anything else in the other;
            // every known residue must agree.
            if let Some(column) = flat.msa[..n]
                .iter()
                .zip(&aatype)
                .position(|(&q, &a)| q != a as u8 && q < 20 && a < 20)
            {
                return Err(FeaturizeError::QueryMismatch {
                    record: chain_id,
                    column,
                });
            }
        }
        let record = ChainRecord {
            sequence: chain.sequence.clone(),
            residue_index: chain.residue_index.clone(),
            seq_length: n as u32,
            between_segment_residues: vec![0; n],
            all_atom_positions: chain.atom_positions.as_flattened().as_flattened().to_vec(),
            all_atom_mask: chain
                .atom_mask
                .as_flattened()
                .iter()
                .map(|&m| u8::from(m > 0.0))
                .collect(),
            resolution: header.resolution,
            release_date: header.release_date.clone(),
            structure_method: header.structure_method.clone(),
            is_distillation,
            num_alignments: flat.num_rows as u32,
            msa: flat.msa,
            deletion_matrix: flat.deletion_matrix,
            msa_species_ids: flat.species_ids,
            aatype,
            templates,
            chain_id,
        };
        // The MSA ids were checked above: the largest array is not scanned twice.
        record.validate_with(MsaIds::Checked)?;
        Ok(record)
    }

    /// Checks the shape and value invariants of the record (e.g. after reading it back).
    pub fn validate(&self) -> Result<(), FeaturizeError> {
        self.validate_with(MsaIds::Unchecked)
    }

    /// [`ChainRecord::validate`], leaving out the MSA id scan when `msa_ids` says it was done.
    fn validate_with(&self, msa_ids: MsaIds) -> Result<(), FeaturizeError> {
        let id = self.chain_id.as_str();
        let n = self.seq_length as usize;
        let m = self.num_alignments as usize;
        check_len(id, "sequence", n, self.sequence.len())?;
        check_len(id, "aatype", n, self.aatype.len())?;
        check_len(id, "residue_index", n, self.residue_index.len())?;
        check_len(
            id,
            "between_segment_residues",
            n,
            self.between_segment_residues.len(),
        )?;
        check_len(
            id,
            "all_atom_positions",
            n * ATOM_TYPE_NUM * 3,
            self.all_atom_positions.len(),
        )?;
        check_len(
            id,
            "all_atom_mask",
            n * ATOM_TYPE_NUM,
            self.all_atom_mask.len(),
        )?;
        check_len(id, "msa", m * n, self.msa.len())?;
        check_len(id, "deletion_matrix", m * n, self.deletion_matrix.len())?;
        check_len(id, "msa_species_ids", m, self.msa_species_ids.len())?;
        if m == 0 {
            return Err(FeaturizeError::LengthMismatch {
                record: id.to_string(),
                field: "num_alignments",
                expected: 1,
                actual: 0,
            });
        }
        check_values(
            id,
            "aatype",
            &self.aatype,
            |a| (0..=20).contains(&a),
            "a residue type 0..=20",
        )?;
        if msa_ids == MsaIds::Unchecked {
            check_msa_ids(id, &self.msa)?;
        }
        check_values(
            id,
            "all_atom_mask",
            &self.all_atom_mask,
            |a| a <= 1,
            "0 or 1",
        )?;
        self.templates.validate(id, n)
    }
}

/// Whether a record's MSA ids are already known to be in range (see
/// [`ChainRecord::validate`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum MsaIds {
    /// Checked while the record was built.
    Checked,
    /// Not checked yet.
    Unchecked,
}

/// An MSA in [`ChainRecord`]'s flat layout.
///
/// Invariant (checked when a record is built from it): `msa` and `deletion_matrix`
/// hold `num_rows × n` values row-major, `species_ids` one per row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FlatMsa {
    /// Ids 0..=21 `[m][n]`; row 0 is the query.
    pub msa: Vec<u8>,
    /// Deletions before each column `[m][n]`, saturated at `u16::MAX`.
    pub deletion_matrix: Vec<u16>,
    /// Species identifier per row `[m]`, empty when unknown.
    pub species_ids: Vec<String>,
    /// Number of rows `m`.
    pub num_rows: usize,
}

impl FlatMsa {
    /// An empty MSA with room for `rows` rows of `n` columns.
    pub fn with_capacity(rows: usize, n: usize) -> Self {
        FlatMsa {
            msa: Vec::with_capacity(rows * n),
            deletion_matrix: Vec::with_capacity(rows * n),
            species_ids: Vec::with_capacity(rows),
            num_rows: 0,
        }
    }

    /// Appends one row's deletion counts, saturated at `u16::MAX` (the ids go to `msa`
    /// by the caller, the species id to `species_ids`).
    pub fn push_deletions(&mut self, deletions: &[u32]) {
        self.deletion_matrix
            .extend(deletions.iter().map(|&d| d.min(u16::MAX as u32) as u16));
    }
}

fn flatten_msa(record: &str, msa: &Msa, n: usize) -> Result<FlatMsa, FeaturizeError> {
    let rows = msa.msa.len();
    check_len(
        record,
        "deletion_matrix rows",
        rows,
        msa.deletion_matrix.len(),
    )?;
    let mut out = FlatMsa::with_capacity(rows, n);
    for (i, (row, dels)) in msa.msa.iter().zip(&msa.deletion_matrix).enumerate() {
        check_len(record, "msa row", n, row.len())?;
        check_len(record, "deletion_matrix row", n, dels.len())?;
        out.msa.extend_from_slice(row);
        out.push_deletions(dels);
        out.species_ids
            .push(msa.species_ids.get(i).cloned().unwrap_or_default());
        out.num_rows += 1;
    }
    Ok(out)
}

/// Merges MSAs of the same query in the given order, dropping rows whose aligned
/// sequence already appeared (first occurrence wins; deletions do not count).
///
/// Every row of every MSA must have the width of the first MSA's query.
pub fn merge_msas(msas: &[Msa]) -> Result<Msa, FeaturizeError> {
    let width = msas
        .iter()
        .find_map(|m| m.msa.first())
        .map_or(0, |q| q.len());
    let mut seen = std::collections::HashSet::new();
    let mut out = Msa::default();
    for (k, m) in msas.iter().enumerate() {
        let record = format!("msa #{k}");
        check_len(
            &record,
            "deletion_matrix rows",
            m.msa.len(),
            m.deletion_matrix.len(),
        )?;
        for (i, (row, dels)) in m.msa.iter().zip(&m.deletion_matrix).enumerate() {
            check_len(&record, "msa row", width, row.len())?;
            check_len(&record, "deletion_matrix row", width, dels.len())?;
            if !seen.insert(row.as_slice()) {
                continue;
            }
            out.msa.push(row.clone());
            out.deletion_matrix.push(dels.clone());
            out.descriptions
                .push(m.descriptions.get(i).cloned().unwrap_or_default());
            out.species_ids
                .push(m.species_ids.get(i).cloned().unwrap_or_default());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msa(rows: &[&[u8]]) -> Msa {
        Msa {
            msa: rows.iter().map(|r| r.to_vec()).collect(),
            deletion_matrix: rows.iter().map(|r| vec![1; r.len()]).collect(),
            descriptions: (0..rows.len()).map(|i| format!("r{i}")).collect(),
            species_ids: vec![String::new(); rows.len()],
        }
    }

    #[test]
    fn merge_drops_exact_duplicates_first_wins() {
        let a = msa(&[&[0, 1, 2], &[0, 21, 2]]);
        let b = msa(&[&[0, 1, 2], &[3, 3, 3], &[0, 21, 2]]);
        let merged = merge_msas(&[a, b]).unwrap();
        assert_eq!(
            merged.msa,
            vec![vec![0, 1, 2], vec![0, 21, 2], vec![3, 3, 3]]
        );
        assert_eq!(merged.descriptions, ["r0", "r1", "r1"]);
        let bad = msa(&[&[0, 1]]);
        assert!(matches!(
            merge_msas(&[msa(&[&[0, 1, 2]]), bad]),
            Err(FeaturizeError::LengthMismatch {
                field: "msa row",
                ..
            })
        ));
    }

    fn chain(seq: &str) -> ChainStructure {
        let n = seq.len();
        ChainStructure {
            chain_id: "A".into(),
            sequence: seq.into(),
            residue_index: (1..=n as i32).collect(),
            atom_positions: vec![[[1.0; 3]; 37]; n],
            atom_mask: vec![[1.0; 37]; n],
        }
    }

    #[test]
    fn record_from_chain_has_consistent_shapes_and_rejects_bad_msa() {
        let header = StructureHeader {
            structure_method: "x-ray diffraction".into(),
            release_date: Some("2020-01-01".into()),
            resolution: 1.5,
        };
        let rec = ChainRecord::new(
            "1abc",
            &header,
            &chain("ACDX"),
            None,
            TemplateFeatures::default(),
            false,
        )
        .unwrap();
        assert_eq!(rec.chain_id, "1abc_A");
        assert_eq!(rec.aatype, [0, 4, 3, 20]);
        assert_eq!(rec.num_alignments, 1);
        assert_eq!(rec.msa, [0, 4, 3, 20]);
        assert_eq!(rec.all_atom_positions.len(), 4 * 37 * 3);
        let wrong_query = msa(&[&[1, 4, 3, 20]]);
        assert_eq!(
            ChainRecord::new(
                "1abc",
                &header,
                &chain("ACDX"),
                Some(&wrong_query),
                TemplateFeatures::default(),
                false
            ),
            Err(FeaturizeError::QueryMismatch {
                record: "1abc_A".into(),
                column: 0
            })
        );
        let out_of_range = msa(&[&[0, 4, 3, 22]]);
        assert!(matches!(
            ChainRecord::new(
                "1abc",
                &header,
                &chain("ACDX"),
                Some(&out_of_range),
                TemplateFeatures::default(),
                false
            ),
            Err(FeaturizeError::InvalidValue {
                field: "msa",
                index: 3,
                ..
            })
        ));
        let mut broken = rec.clone();
        broken.deletion_matrix.pop();
        assert!(broken.validate().is_err());
    }

    /// The chunked check names the first bad value wherever it lies (first chunk, across a
    /// chunk boundary, last partial chunk), and `validate` still scans the MSA ids.
    #[test]
    fn value_checks_name_the_first_bad_index() {
        for (len, bad) in [
            (10, vec![3]),
            (9000, vec![4095, 4096]),
            (9000, vec![8999]),
            (4096, vec![]),
        ] {
            let mut values = vec![5u8; len];
            for &b in &bad {
                values[b] = 22;
            }
            let result = check_msa_ids("r", &values);
            match bad.first() {
                None => assert_eq!(result, Ok(())),
                Some(&first) => assert_eq!(
                    result,
                    Err(FeaturizeError::InvalidValue {
                        record: "r".into(),
                        field: "msa",
                        index: first,
                        value: "22".into(),
                        expected: "an MSA id 0..=21",
                    })
                ),
            }
        }
        let mut record = ChainRecord::new(
            "1abc",
            &StructureHeader::default(),
            &chain("ACDX"),
            None,
            TemplateFeatures::default(),
            false,
        )
        .unwrap();
        record.msa[2] = 30;
        assert!(matches!(
            record.validate(),
            Err(FeaturizeError::InvalidValue {
                field: "msa",
                index: 2,
                ..
            })
        ));
    }

    #[test]
    fn record_from_flat_msa_equals_record_from_rows() {
        let header = StructureHeader::default();
        let mut rows = msa(&[&[0, 4, 3, 20], &[21, 4, 3, 0]]);
        rows.deletion_matrix[1] = vec![0, 70_000, 2, 0];
        rows.species_ids[1] = "HUMAN".into();
        let from_rows = ChainRecord::new(
            "1abc",
            &header,
            &chain("ACDX"),
            Some(&rows),
            TemplateFeatures::default(),
            false,
        )
        .unwrap();
        let flat = FlatMsa {
            msa: rows.msa.concat(),
            deletion_matrix: vec![1, 1, 1, 1, 0, u16::MAX, 2, 0],
            species_ids: rows.species_ids.clone(),
            num_rows: 2,
        };
        let from_flat = ChainRecord::from_flat_msa(
            "1abc",
            &header,
            &chain("ACDX"),
            flat.clone(),
            TemplateFeatures::default(),
            false,
        )
        .unwrap();
        assert_eq!(from_flat, from_rows);
        let mut short = flat;
        short.msa.pop();
        assert!(matches!(
            ChainRecord::from_flat_msa(
                "1abc",
                &header,
                &chain("ACDX"),
                short,
                TemplateFeatures::default(),
                false
            ),
            Err(FeaturizeError::LengthMismatch { field: "msa", .. })
        ));
    }
}
