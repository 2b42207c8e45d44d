//! The inputs of featurization: what the parsers of the ingest crate produce.
//!
//! These types live here, not in ingest, so that featurize depends on no crate of
//! ours; ingest fills them in.

/// Header facts of one structure entry.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct StructureHeader {
    /// Experimental method, lowercase as in mmCIF `_exptl.method` (e.g. "x-ray diffraction").
    pub structure_method: String,
    /// Earliest release date as `YYYY-MM-DD`, when the file gives one.
    pub release_date: Option<String>,
    /// Resolution in Ångström; 0.0 when the file gives none (e.g. NMR).
    pub resolution: f32,
}

/// One protein chain of a structure, in the atom37 layout.
///
/// Invariant: `sequence`, `residue_index`, `atom_positions` and `atom_mask` all have one
/// entry per residue; unresolved residues have an all-zero mask. From mmCIF the residues
/// are the full sequence (`_entity_poly_seq`); from the PDB format they are the residues
/// that have coordinates (SEQRES is kept separately by the PDB parser).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChainStructure {
    /// Author chain id.
    pub chain_id: String,
    /// One-letter sequence of the full chain (SEQRES), `X` for unknown residues.
    pub sequence: String,
    /// Residue numbers: the `_entity_poly_seq.num` (label_seq_id) numbering for mmCIF,
    /// the author residue numbers (insertion codes dropped) for the PDB format.
    pub residue_index: Vec<i32>,
    /// Atom positions in Å, atom37 order.
    pub atom_positions: Vec<[[f32; 3]; 37]>,
    /// 1.0 where the atom is resolved, 0.0 elsewhere.
    pub atom_mask: Vec<[f32; 37]>,
}

/// A parsed structure entry: its header and protein chains.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Structure {
    /// Entry id (e.g. "1abc"), lowercase.
    pub id: String,
    /// Header facts.
    pub header: StructureHeader,
    /// Protein chains, in file order.
    pub chains: Vec<ChainStructure>,
    /// Version of the three-letter to one-letter residue table that made `sequence`
    /// (recorded with the data so datasets built with different tables can be told apart).
    pub residue_table_version: u32,
}

/// A multiple sequence alignment in the MSA alphabet of
/// [`crate::residue_constants::MSA_ALPHABET`].
///
/// Invariant: every row of `msa` and `deletion_matrix` has the query's length; row 0 is the query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Msa {
    /// Aligned rows, ids 0..=21.
    pub msa: Vec<Vec<u8>>,
    /// Deletions before each aligned column, per row.
    pub deletion_matrix: Vec<Vec<u32>>,
    /// Row descriptions (sequence names), one per row.
    pub descriptions: Vec<String>,
    /// Species identifier per row, empty when unknown.
    pub species_ids: Vec<String>,
}

/// One template hit of an hhr file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateHit {
    /// 1-based rank of the hit in the file.
    pub index: usize,
    /// Hit name line (e.g. "4I6P_A Description").
    pub name: String,
    /// HHsearch probability as a fraction (the `Probab` value / 100, so 0..1).
    pub probability: f32,
    /// E-value.
    pub e_value: f64,
    /// Score.
    pub score: f32,
    /// Number of aligned columns.
    pub aligned_cols: usize,
    /// Sum of per-column probabilities (the `Sum_probs` column).
    pub sum_probs: f32,
    /// Aligned query string (with gaps).
    pub query: String,
    /// Aligned template string (with gaps).
    pub hit_sequence: String,
    /// 0-based query residue index per aligned column, -1 at query gaps.
    pub indices_query: Vec<i32>,
    /// 0-based template residue index per aligned column, -1 at template gaps.
    pub indices_hit: Vec<i32>,
}
