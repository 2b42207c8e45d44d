//! Our pinned table from three-letter residue names to one-letter codes.
//!
//! It covers the 20 standard amino acids and common modified residues, each mapped to
//! its parent amino acid as in the PDB chemical component dictionary; anything else
//! reads as `X`. D-amino acids are deliberately absent (they read as `X`, as the
//! AlphaFold reference table has them). The table is versioned: the version is
//! recorded with every parsed structure, so datasets built with different tables can
//! be told apart. Change the table only together with [`RESIDUE_NAME_TABLE_VERSION`].

/// Version of [`one_letter_code`]'s table. Bump it with any change of the table.
pub const RESIDUE_NAME_TABLE_VERSION: u32 = 1;

/// The table, sorted by name for binary search.
const TABLE: &[(&str, u8)] = &[
    ("4BF", b'F'),
    ("ABA", b'A'),
    ("AGM", b'R'),
    ("AIB", b'A'),
    ("ALA", b'A'),
    ("ALY", b'K'),
    ("ARG", b'R'),
    ("ASN", b'N'),
    ("ASP", b'D'),
    ("BMT", b'T'),
    ("CAS", b'C'),
    ("CGU", b'E'),
    ("CME", b'C'),
    ("CMT", b'C'),
    ("CSD", b'C'),
    ("CSO", b'C'),
    ("CSS", b'C'),
    ("CSX", b'C'),
    ("CYS", b'C'),
    ("FME", b'M'),
    ("GLN", b'Q'),
    ("GLU", b'E'),
    ("GLY", b'G'),
    ("HIC", b'H'),
    ("HIS", b'H'),
    ("HTR", b'W'),
    ("HYP", b'P'),
    ("ILE", b'I'),
    ("IYR", b'Y'),
    ("KCX", b'K'),
    ("LEU", b'L'),
    ("LLP", b'K'),
    ("LYS", b'K'),
    ("M3L", b'K'),
    ("MET", b'M'),
    ("MHO", b'M'),
    ("MLY", b'K'),
    ("MLZ", b'K'),
    ("MSE", b'M'),
    ("MVA", b'V'),
    ("NEP", b'H'),
    ("NLE", b'L'),
    ("OCS", b'C'),
    ("PCA", b'Q'),
    ("PHE", b'F'),
    ("PRO", b'P'),
    ("PTR", b'Y'),
    ("SAR", b'G'),
    ("SCH", b'C'),
    ("SCY", b'C'),
    ("SEP", b'S'),
    ("SER", b'S'),
    ("SMC", b'C'),
    ("SNC", b'C'),
    ("THR", b'T'),
    ("TPO", b'T'),
    ("TPQ", b'Y'),
    ("TRP", b'W'),
    ("TRQ", b'W'),
    ("TYR", b'Y'),
    ("TYS", b'Y'),
    ("VAL", b'V'),
];

/// One-letter code of a residue name; `X` for names outside the table.
pub fn one_letter_code(name: &str) -> u8 {
    TABLE
        .binary_search_by(|(n, _)| n.cmp(&name))
        .map_or(b'X', |i| TABLE[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalefold_featurize::residue_constants::{RESTYPE_NAMES, RESTYPES};

    #[test]
    fn table_is_sorted_and_maps_standard_residues() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        for (name, code) in RESTYPE_NAMES.iter().zip(RESTYPES) {
            assert_eq!(one_letter_code(name), code);
        }
        assert_eq!(one_letter_code("MSE"), b'M');
        assert_eq!(one_letter_code("DSN"), b'X');
        assert_eq!(one_letter_code("HOH"), b'X');
        assert_eq!(one_letter_code(""), b'X');
    }
}
