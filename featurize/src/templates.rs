//! Template features from HHsearch hits and the templates' parsed structures.
//!
//! Selection, per hit in order of decreasing `sum_probs` (stable for ties), stopping
//! after `max_hits` accepted templates:
//! 1. the hit's aligned columns must cover more than `min_align_ratio` of the query;
//! 2. a hit whose ungapped template sequence is a substring of the query and longer than
//!    `max_subsequence_ratio` of it is a duplicate of the query and is dropped;
//! 3. the ungapped template sequence must have at least `min_template_length` residues;
//! 4. the template structure (looked up by its PDB id) and chain must exist;
//! 5. with a release-date cutoff, a template released after it (or with no date) is dropped;
//! 6. the hit's alignment is mapped onto the template chain's full sequence: when the
//!    hit's ungapped sequence occurs in the chain's sequence, by its offset there;
//!    otherwise by realigning the two sequences (see [`realign`]) and dropping the hit if
//!    fewer than half of its residues land on identical residues;
//! 7. the template must have at least 5 resolved atoms on the mapped residues.
//!
//! Every dropped hit is reported with its reason, so the caller can log it.

use crate::error::FeaturizeError;
use crate::inputs::{Structure, TemplateHit};
use crate::residue_constants::{ATOM_TYPE_NUM, GAP_ID, restype_index};

/// Template features of one query chain, flat arrays (`t` templates, `n` residues).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateFeatures {
    /// Number of templates `t`.
    pub num_templates: u32,
    /// Template residue type per query residue `[t][n]`; 21 (gap) where unaligned.
    pub aatype: Vec<i8>,
    /// Template atom37 positions per query residue `[t][n][37][3]`.
    pub all_atom_positions: Vec<f32>,
    /// Template atom37 mask per query residue `[t][n][37]`, 0 or 1.
    pub all_atom_mask: Vec<u8>,
    /// HHsearch `Sum_probs` per template `[t]`.
    pub sum_probs: Vec<f32>,
    /// `{pdb id}_{chain}` per template `[t]`, e.g. `4i6p_A`.
    pub domain_names: Vec<String>,
}

impl TemplateFeatures {
    /// Checks the shapes against `n` query residues.
    pub fn validate(&self, record: &str, n: usize) -> Result<(), FeaturizeError> {
        let t = self.num_templates as usize;
        let checks = [
            ("template_aatype", t * n, self.aatype.len()),
            (
                "template_all_atom_positions",
                t * n * ATOM_TYPE_NUM * 3,
                self.all_atom_positions.len(),
            ),
            (
                "template_all_atom_mask",
                t * n * ATOM_TYPE_NUM,
                self.all_atom_mask.len(),
            ),
            ("template_sum_probs", t, self.sum_probs.len()),
            ("template_domain_names", t, self.domain_names.len()),
        ];
        for (field, expected, actual) in checks {
            if expected != actual {
                return Err(FeaturizeError::LengthMismatch {
                    record: record.to_string(),
                    field,
                    expected,
                    actual,
                });
            }
        }
        if let Some(index) = self
            .aatype
            .iter()
            .position(|&a| !(0..=GAP_ID as i8).contains(&a))
        {
            return Err(FeaturizeError::InvalidValue {
                record: record.to_string(),
                field: "template_aatype",
                index,
                value: self.aatype[index].to_string(),
                expected: "a residue type 0..=21",
            });
        }
        Ok(())
    }
}

/// Template selection settings (the AlphaFold defaults by [`Default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSearchConfig {
    /// Most templates to keep.
    pub max_hits: usize,
    /// A hit must align more than this fraction of the query.
    pub min_align_ratio: f32,
    /// A substring of the query longer than this fraction of it is a duplicate.
    pub max_subsequence_ratio: f32,
    /// Fewest residues of an ungapped template sequence.
    pub min_template_length: usize,
    /// Templates released after this date (`YYYY-MM-DD`) are dropped; at training time
    /// this is the query's own release date, so no template postdates its target.
    pub release_date_cutoff: Option<String>,
}

impl Default for TemplateSearchConfig {
    fn default() -> Self {
        Self {
            max_hits: 20,
            min_align_ratio: 0.1,
            max_subsequence_ratio: 0.95,
            min_template_length: 10,
            release_date_cutoff: None,
        }
    }
}

/// Why a hit was not used.
#[derive(Debug, Clone, PartialEq)]
pub enum SkipReason {
    /// Aligned columns / query length at or below the minimum.
    AlignmentTooShort {
        /// The ratio found.
        ratio: f32,
    },
    /// The template is (nearly) the query itself.
    DuplicateOfQuery,
    /// The ungapped template sequence is too short.
    TemplateTooShort {
        /// Its length.
        length: usize,
    },
    /// The hit name does not start with `PDBID_CHAIN`.
    BadHitName,
    /// The aligned query does not occur in the query sequence.
    QueryNotFound,
    /// No structure with this PDB id was given.
    StructureMissing,
    /// The structure has no chain of this id.
    ChainMissing,
    /// Released after the cutoff.
    ReleasedAfterCutoff {
        /// The template's release date.
        release_date: String,
    },
    /// A cutoff is set but the template has no release date.
    NoReleaseDate,
    /// Realigning the hit onto the chain's sequence matched too few residues.
    RealignmentFailed {
        /// Fraction of hit residues aligned to identical residues.
        identity: f32,
    },
    /// Fewer than 5 atoms resolved on the mapped residues.
    TooFewResolvedAtoms,
}

/// One dropped hit.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedHit {
    /// The hit's name line.
    pub name: String,
    /// Why.
    pub reason: SkipReason,
}

/// The template features of a query plus the hits that were dropped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateSearchResult {
    /// Features of the accepted templates, in acceptance order.
    pub features: TemplateFeatures,
    /// Hits that were not used, with reasons.
    pub skipped: Vec<SkippedHit>,
}

fn ungapped(s: &str) -> String {
    s.bytes()
        .filter(|&c| c != b'-')
        .map(|c| c as char)
        .collect()
}

/// Splits a hit name `4I6P_A description` into (`4i6p`, `A`).
fn pdb_id_and_chain(name: &str) -> Option<(String, String)> {
    let first = name.split_whitespace().next()?;
    let (id, chain) = first.split_once('_')?;
    if id.len() != 4 || chain.is_empty() {
        return None;
    }
    Some((id.to_ascii_lowercase(), chain.to_string()))
}

/// Maps each hit column pair to (query index, index into the ungapped hit sequence),
/// both relative to the first aligned residue of each side.
fn aligned_pairs(hit: &TemplateHit) -> Vec<(usize, usize)> {
    let min_q = hit
        .indices_query
        .iter()
        .copied()
        .filter(|&i| i >= 0)
        .min()
        .unwrap_or(0);
    let min_h = hit
        .indices_hit
        .iter()
        .copied()
        .filter(|&i| i >= 0)
        .min()
        .unwrap_or(0);
    hit.indices_query
        .iter()
        .zip(&hit.indices_hit)
        .filter(|&(&q, &h)| q >= 0 && h >= 0)
        .map(|(&q, &h)| ((q - min_q) as usize, (h - min_h) as usize))
        .collect()
}

/// Semi-global alignment of `short` against `long` (end gaps in `long` are free):
/// match +2, mismatch −1, gap −2. Returns, for each residue of `short`, the index of the
/// residue of `long` it is aligned to (None where it faces a gap).
///
/// This is the realignment used when a hit's template sequence is not found verbatim
/// in the template structure's SEQRES (e.g. the template database held an older
/// sequence version): a plain dynamic program over the two sequences, O(|short|·|long|).
pub fn realign(short: &[u8], long: &[u8]) -> Vec<Option<usize>> {
    const MATCH: i32 = 2;
    const MISMATCH: i32 = -1;
    const GAP: i32 = -2;
    let (a, b) = (short.len(), long.len());
    let w = b + 1;
    let mut score = vec![0i32; (a + 1) * w];
    // 0 diagonal, 1 up (short residue vs gap), 2 left (gap vs long residue)
    let mut trace = vec![0u8; (a + 1) * w];
    for i in 1..=a {
        score[i * w] = GAP * i as i32;
        trace[i * w] = 1;
    }
    // Leading gaps in `short` are free: the first row's score stays 0.
    trace[1..=b].fill(2);
    for i in 1..=a {
        for j in 1..=b {
            let diag = score[(i - 1) * w + j - 1]
                + if short[i - 1] == long[j - 1] {
                    MATCH
                } else {
                    MISMATCH
                };
            let up = score[(i - 1) * w + j] + GAP;
            let left = score[i * w + j - 1] + if i == a { 0 } else { GAP };
            let (best, dir) = if diag >= up && diag >= left {
                (diag, 0)
            } else if up >= left {
                (up, 1)
            } else {
                (left, 2)
            };
            score[i * w + j] = best;
            trace[i * w + j] = dir;
        }
    }
    let mut map = vec![None; a];
    let (mut i, mut j) = (a, b);
    while i > 0 || j > 0 {
        match trace[i * w + j] {
            0 => {
                map[i - 1] = Some(j - 1);
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    map
}

/// Selects templates for `query_sequence` from `hits` and builds their features.
/// `structures(pdb_id, chain_id)` finds a parsed template structure by lowercase PDB id;
/// it must hold chain `chain_id` when the entry has that chain, and may leave the entry's
/// other chains out (so a caller can expand only the chain a hit uses).
pub fn template_features<'a>(
    query_sequence: &str,
    hits: &[TemplateHit],
    structures: impl Fn(&str, &str) -> Option<&'a Structure>,
    config: &TemplateSearchConfig,
) -> TemplateSearchResult {
    let n = query_sequence.len();
    let mut order: Vec<&TemplateHit> = hits.iter().collect();
    order.sort_by(|x, y| y.sum_probs.total_cmp(&x.sum_probs));
    let mut out = TemplateSearchResult::default();
    for hit in order {
        if out.features.num_templates as usize >= config.max_hits {
            break;
        }
        match map_hit(query_sequence, hit, &structures, config) {
            Err(reason) => out.skipped.push(SkippedHit {
                name: hit.name.clone(),
                reason,
            }),
            Ok(mapped) => {
                let f = &mut out.features;
                f.num_templates += 1;
                f.aatype.extend_from_slice(&mapped.aatype);
                f.all_atom_positions.extend_from_slice(&mapped.positions);
                f.all_atom_mask.extend_from_slice(&mapped.mask);
                f.sum_probs.push(hit.sum_probs);
                f.domain_names.push(mapped.domain_name);
                debug_assert_eq!(mapped.aatype.len(), n);
            }
        }
    }
    out
}

struct MappedTemplate {
    aatype: Vec<i8>,
    positions: Vec<f32>,
    mask: Vec<u8>,
    domain_name: String,
}

fn map_hit<'a>(
    query_sequence: &str,
    hit: &TemplateHit,
    structures: &impl Fn(&str, &str) -> Option<&'a Structure>,
    config: &TemplateSearchConfig,
) -> Result<MappedTemplate, SkipReason> {
    let n = query_sequence.len();
    let ratio = hit.aligned_cols as f32 / n.max(1) as f32;
    if ratio <= config.min_align_ratio {
        return Err(SkipReason::AlignmentTooShort { ratio });
    }
    let template_seq = ungapped(&hit.hit_sequence).to_ascii_uppercase();
    let length_ratio = template_seq.len() as f32 / n.max(1) as f32;
    if query_sequence.contains(&template_seq) && length_ratio > config.max_subsequence_ratio {
        return Err(SkipReason::DuplicateOfQuery);
    }
    if template_seq.len() < config.min_template_length {
        return Err(SkipReason::TemplateTooShort {
            length: template_seq.len(),
        });
    }
    let (pdb_id, chain_id) = pdb_id_and_chain(&hit.name).ok_or(SkipReason::BadHitName)?;
    let query_offset = query_sequence
        .find(&ungapped(&hit.query).to_ascii_uppercase())
        .ok_or(SkipReason::QueryNotFound)?;
    let structure = structures(&pdb_id, &chain_id).ok_or(SkipReason::StructureMissing)?;
    if let Some(cutoff) = &config.release_date_cutoff {
        match &structure.header.release_date {
            None => return Err(SkipReason::NoReleaseDate),
            // ISO dates compare correctly as strings.
            Some(date) if date.as_str() > cutoff.as_str() => {
                return Err(SkipReason::ReleasedAfterCutoff {
                    release_date: date.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let chain = structure
        .chains
        .iter()
        .find(|c| c.chain_id == chain_id)
        .ok_or(SkipReason::ChainMissing)?;
    // Index into the ungapped hit sequence -> index into the chain's full sequence.
    let hit_to_chain: Vec<Option<usize>> = match chain.sequence.find(&template_seq) {
        Some(offset) => (0..template_seq.len()).map(|i| Some(i + offset)).collect(),
        None => {
            let map = realign(template_seq.as_bytes(), chain.sequence.as_bytes());
            let identical = map
                .iter()
                .enumerate()
                .filter(|&(i, j)| {
                    j.is_some_and(|j| chain.sequence.as_bytes()[j] == template_seq.as_bytes()[i])
                })
                .count();
            let identity = identical as f32 / template_seq.len().max(1) as f32;
            if identity < 0.5 {
                return Err(SkipReason::RealignmentFailed { identity });
            }
            map
        }
    };
    let mut aatype = vec![GAP_ID as i8; n];
    let mut positions = vec![0.0f32; n * ATOM_TYPE_NUM * 3];
    let mut mask = vec![0u8; n * ATOM_TYPE_NUM];
    let mut resolved_atoms = 0usize;
    let chain_seq = chain.sequence.as_bytes();
    for (q_rel, h_rel) in aligned_pairs(hit) {
        let q = q_rel + query_offset;
        let Some(Some(c)) = hit_to_chain.get(h_rel).copied() else {
            continue;
        };
        if q >= n || c >= chain_seq.len() || c >= chain.atom_positions.len() {
            continue;
        }
        aatype[q] = restype_index(chain_seq[c]) as i8;
        for a in 0..ATOM_TYPE_NUM {
            if chain.atom_mask[c][a] > 0.0 {
                mask[q * ATOM_TYPE_NUM + a] = 1;
                resolved_atoms += 1;
                positions[(q * ATOM_TYPE_NUM + a) * 3..][..3]
                    .copy_from_slice(&chain.atom_positions[c][a]);
            }
        }
    }
    if resolved_atoms < 5 {
        return Err(SkipReason::TooFewResolvedAtoms);
    }
    Ok(MappedTemplate {
        aatype,
        positions,
        mask,
        domain_name: format!("{pdb_id}_{chain_id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::{ChainStructure, StructureHeader};

    const QUERY: &str = "MKTAYIAKQRQISFVKSHFSRQ";

    fn structure(id: &str, date: &str, seq: &str) -> Structure {
        let n = seq.len();
        Structure {
            id: id.into(),
            residue_table_version: 1,
            header: StructureHeader {
                structure_method: "x-ray diffraction".into(),
                release_date: Some(date.into()),
                resolution: 2.0,
            },
            chains: vec![ChainStructure {
                chain_id: "A".into(),
                sequence: seq.into(),
                residue_index: (1..=n as i32).collect(),
                // Atom x coordinate = chain residue index, so the mapping is visible.
                atom_positions: (0..n).map(|i| [[i as f32, 0.0, 0.0]; 37]).collect(),
                atom_mask: vec![
                    {
                        let mut m = [0.0; 37];
                        m[..5].fill(1.0);
                        m
                    };
                    n
                ],
            }],
        }
    }

    /// A hit aligning query[q0..q0+len] to template residues starting at h0, no gaps.
    fn hit(name: &str, sum_probs: f32, q0: usize, h0: usize, template: &str) -> TemplateHit {
        let len = template.len();
        TemplateHit {
            name: name.into(),
            sum_probs,
            aligned_cols: len,
            query: QUERY[q0..q0 + len].into(),
            hit_sequence: template.into(),
            indices_query: (q0 as i32..(q0 + len) as i32).collect(),
            indices_hit: (h0 as i32..(h0 + len) as i32).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn selects_maps_and_skips_hits_with_reasons() {
        let exact = structure("1aaa", "2001-01-01", "GGGGAYIAKQRQISFV");
        // The hit below says "AYIAKQRQISFV" but this chain has one substitution (Q->E)
        // and an extra residue: it must be realigned.
        let changed = structure("2bbb", "2001-01-01", "PPAYIAKERQIWSFV");
        let late = structure("3ccc", "2030-01-01", "AYIAKQRQISFV");
        let lookup =
            |id: &str, _chain: &str| [&exact, &changed, &late].into_iter().find(|s| s.id == id);
        let hits = vec![
            hit("2BBB_A realigned", 30.0, 3, 0, "AYIAKQRQISFV"),
            hit("1AAA_A exact", 50.0, 3, 10, "AYIAKQRQISFV"),
            hit("3CCC_A late", 40.0, 3, 0, "AYIAKQRQISFV"),
            hit("4DDD_A missing", 20.0, 3, 0, "AYIAKQRQISFV"),
            hit("5EEE_A short", 60.0, 7, 0, "KQRQISFVK"),
            hit("7GGG_A tiny", 65.0, 3, 0, "AY"),
            hit("6FFF_A query itself", 70.0, 0, 0, QUERY),
        ];
        let config = TemplateSearchConfig {
            release_date_cutoff: Some("2020-05-01".into()),
            ..Default::default()
        };
        let res = template_features(QUERY, &hits, lookup, &config);
        let f = &res.features;
        assert_eq!(f.domain_names, ["1aaa_A", "2bbb_A"]);
        assert_eq!(f.sum_probs, [50.0, 30.0]);
        f.validate("q", QUERY.len()).unwrap();
        let n = QUERY.len();
        // Exact hit: query residue 3 ('A') -> chain residue 4 (offset of the substring).
        assert_eq!(f.aatype[3], restype_index(b'A') as i8);
        assert_eq!(f.all_atom_positions[3 * 37 * 3], 4.0);
        assert_eq!(f.aatype[2], GAP_ID as i8);
        assert_eq!(f.all_atom_mask[2 * 37], 0);
        // Realigned hit: query residue 3 -> chain residue 2; after the inserted W the
        // mapping shifts by one more (query 13 'S' -> chain 13).
        assert_eq!(f.all_atom_positions[(n + 3) * 37 * 3], 2.0);
        assert_eq!(
            f.aatype[n + 8],
            restype_index(b'E') as i8,
            "template's own residue type"
        );
        assert_eq!(f.all_atom_positions[(n + 13) * 37 * 3], 13.0);
        let reasons: Vec<_> = res
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.clone()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("6FFF_A query itself", SkipReason::DuplicateOfQuery),
                (
                    "7GGG_A tiny",
                    SkipReason::AlignmentTooShort { ratio: 2.0 / 22.0 }
                ),
                ("5EEE_A short", SkipReason::TemplateTooShort { length: 9 }),
                (
                    "3CCC_A late",
                    SkipReason::ReleasedAfterCutoff {
                        release_date: "2030-01-01".into()
                    }
                ),
                ("4DDD_A missing", SkipReason::StructureMissing),
            ]
        );
    }

    #[test]
    fn realign_handles_insertions_and_free_end_gaps() {
        let map = realign(b"ACDEFG", b"XXACDWEFGXX");
        assert_eq!(map, [Some(2), Some(3), Some(4), Some(6), Some(7), Some(8)]);
    }
}
