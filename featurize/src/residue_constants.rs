//! Residue constants: the residue types, the atom37 layout and the MSA alphabet.
//!
//! These tables are ours and versioned ([`RESIDUE_CONSTANTS_VERSION`]); the version is
//! stored in every dataset's metadata, so a change of any table must bump it.

/// Version of every table in this module. Bump it when any table changes.
pub const RESIDUE_CONSTANTS_VERSION: u32 = 1;

/// The 20 standard residue types in AlphaFold order (one-letter codes).
/// Index 20 is "unknown" (`X`), index 21 the gap in MSAs.
pub const RESTYPES: [u8; 20] = *b"ARNDCQEGHILKMFPSTWYV";

/// Three-letter names of [`RESTYPES`], in the same order.
pub const RESTYPE_NAMES: [&str; 20] = [
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET",
    "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
];

/// Number of residue types including unknown.
pub const NUM_RESTYPES_WITH_X: usize = 21;

/// Index of the unknown residue type.
pub const UNKNOWN_RESTYPE: u8 = 20;

/// Index of the gap symbol in the MSA alphabet.
pub const GAP_ID: u8 = 21;

/// The MSA alphabet (HHblits order mapped to ours): `ARNDCQEGHILKMFPSTWYVX-`, ids 0..=21.
pub const MSA_ALPHABET: &[u8; 22] = b"ARNDCQEGHILKMFPSTWYVX-";

/// The 37 atom names of the atom37 layout, in AlphaFold order.
pub const ATOM_TYPES: [&str; 37] = [
    "N", "CA", "C", "CB", "O", "CG", "CG1", "CG2", "OG", "OG1", "SG", "CD", "CD1", "CD2", "ND1",
    "ND2", "OD1", "OD2", "SD", "CE", "CE1", "CE2", "CE3", "NE", "NE1", "NE2", "OE1", "OE2", "CH2",
    "NH1", "NH2", "OH", "CZ", "CZ2", "CZ3", "NZ", "OXT",
];

/// Number of atom slots in the atom37 layout.
pub const ATOM_TYPE_NUM: usize = 37;

/// Position of an atom name in the atom37 layout, if it has one.
pub fn atom_order(name: &str) -> Option<usize> {
    ATOM_TYPES.iter().position(|a| *a == name)
}

/// Residue type index (0..=19) of a one-letter code; anything else is unknown (20).
pub fn restype_index(one_letter: u8) -> u8 {
    RESTYPES
        .iter()
        .position(|&r| r == one_letter)
        .map_or(UNKNOWN_RESTYPE, |i| i as u8)
}

/// Residue type index of a standard three-letter name, or `None` for anything else.
pub fn restype_index_of_name(three_letter: &str) -> Option<u8> {
    RESTYPE_NAMES
        .iter()
        .position(|n| *n == three_letter)
        .map(|i| i as u8)
}

/// MSA id (0..=21) of an aligned-sequence character, HHblits conventions:
/// ambiguity codes B→D, Z→E, U→C, J and O→X; `-` is the gap; lowercase is not accepted
/// (insertions are removed before this point). Returns `None` for other bytes.
pub fn msa_id(c: u8) -> Option<u8> {
    let mapped = match c {
        b'B' => b'D',
        b'Z' => b'E',
        b'U' => b'C',
        b'J' | b'O' => b'X',
        other => other,
    };
    MSA_ALPHABET.iter().position(|&a| a == mapped).map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atom37_has_37_unique_names() {
        let mut names = ATOM_TYPES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ATOM_TYPE_NUM);
        assert_eq!(atom_order("CA"), Some(1));
        assert_eq!(atom_order("SD"), Some(18));
        assert_eq!(atom_order("OXT"), Some(36));
        assert_eq!(atom_order("HA"), None);
    }

    #[test]
    fn restype_tables_agree() {
        for (i, name) in RESTYPE_NAMES.iter().enumerate() {
            assert_eq!(restype_index_of_name(name), Some(i as u8));
            assert_eq!(restype_index(RESTYPES[i]), i as u8);
        }
        assert_eq!(restype_index(b'X'), UNKNOWN_RESTYPE);
    }

    #[test]
    fn msa_alphabet_maps_ambiguity_codes() {
        assert_eq!(msa_id(b'A'), Some(0));
        assert_eq!(msa_id(b'-'), Some(GAP_ID));
        assert_eq!(msa_id(b'B'), msa_id(b'D'));
        assert_eq!(msa_id(b'Z'), msa_id(b'E'));
        assert_eq!(msa_id(b'U'), msa_id(b'C'));
        assert_eq!(msa_id(b'O'), Some(20));
        assert_eq!(msa_id(b'a'), None);
    }
}
