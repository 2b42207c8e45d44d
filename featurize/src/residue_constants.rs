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
/// A `const fn`, so other crates name residue types by letter in their constants.
pub const fn restype_index(one_letter: u8) -> u8 {
    let mut i = 0;
    while i < RESTYPES.len() {
        if RESTYPES[i] == one_letter {
            return i as u8;
        }
        i += 1;
    }
    UNKNOWN_RESTYPE
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
    match MSA_ID_TABLE[c as usize] {
        NO_MSA_ID => None,
        id => Some(id),
    }
}

/// Marks bytes with no MSA id in [`MSA_ID_TABLE`].
const NO_MSA_ID: u8 = u8::MAX;

/// [`msa_id`] for every byte, built at compile time (one load per character: MSA parsing
/// calls this for every aligned character of every row).
const MSA_ID_TABLE: [u8; 256] = {
    let mut table = [NO_MSA_ID; 256];
    let mut i = 0;
    while i < MSA_ALPHABET.len() {
        table[MSA_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    let aliases: [(u8, u8); 5] = [
        (b'B', b'D'),
        (b'Z', b'E'),
        (b'U', b'C'),
        (b'J', b'X'),
        (b'O', b'X'),
    ];
    let mut a = 0;
    while a < aliases.len() {
        table[aliases[a].0 as usize] = table[aliases[a].1 as usize];
        a += 1;
    }
    table
};

/// Three-letter name of a residue type index (0..=19), `UNK` for anything else.
pub fn restype_name(restype: usize) -> &'static str {
    RESTYPE_NAMES.get(restype).copied().unwrap_or("UNK")
}

/// Number of atom slots in the compact atom14 layout.
pub const ATOM14_NUM: usize = 14;

/// Number of rigid groups per residue: backbone, pre-omega, phi, psi, chi1..chi4.
pub const NUM_RIGID_GROUPS: usize = 8;

/// Number of torsion angles per residue: omega (pre-omega), phi, psi, chi1..chi4.
pub const NUM_TORSIONS: usize = 7;

/// Atom names of the atom14 layout per residue type (index 20, unknown, has none);
/// `""` marks an empty slot. Slots 0..4 are always N, CA, C, O.
pub const ATOM14_NAMES: [[&str; 14]; 21] = {
    const E: &str = "";
    [
        ["N", "CA", "C", "O", "CB", E, E, E, E, E, E, E, E, E],
        [
            "N", "CA", "C", "O", "CB", "CG", "CD", "NE", "CZ", "NH1", "NH2", E, E, E,
        ],
        [
            "N", "CA", "C", "O", "CB", "CG", "OD1", "ND2", E, E, E, E, E, E,
        ],
        [
            "N", "CA", "C", "O", "CB", "CG", "OD1", "OD2", E, E, E, E, E, E,
        ],
        ["N", "CA", "C", "O", "CB", "SG", E, E, E, E, E, E, E, E],
        [
            "N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "NE2", E, E, E, E, E,
        ],
        [
            "N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "OE2", E, E, E, E, E,
        ],
        ["N", "CA", "C", "O", E, E, E, E, E, E, E, E, E, E],
        [
            "N", "CA", "C", "O", "CB", "CG", "ND1", "CD2", "CE1", "NE2", E, E, E, E,
        ],
        [
            "N", "CA", "C", "O", "CB", "CG1", "CG2", "CD1", E, E, E, E, E, E,
        ],
        [
            "N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", E, E, E, E, E, E,
        ],
        [
            "N", "CA", "C", "O", "CB", "CG", "CD", "CE", "NZ", E, E, E, E, E,
        ],
        [
            "N", "CA", "C", "O", "CB", "CG", "SD", "CE", E, E, E, E, E, E,
        ],
        [
            "N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", E, E, E,
        ],
        ["N", "CA", "C", "O", "CB", "CG", "CD", E, E, E, E, E, E, E],
        ["N", "CA", "C", "O", "CB", "OG", E, E, E, E, E, E, E, E],
        ["N", "CA", "C", "O", "CB", "OG1", "CG2", E, E, E, E, E, E, E],
        [
            "N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2",
        ],
        [
            "N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH", E, E,
        ],
        ["N", "CA", "C", "O", "CB", "CG1", "CG2", E, E, E, E, E, E, E],
        [E; 14],
    ]
};

/// The four atoms defining chi1..chi4 per residue type (only as many as the residue has).
/// Arginine's chi5 is planar and ignored.
pub const CHI_ANGLES_ATOMS: [&[[&str; 4]]; 20] = [
    &[],
    &[
        ["N", "CA", "CB", "CG"],
        ["CA", "CB", "CG", "CD"],
        ["CB", "CG", "CD", "NE"],
        ["CG", "CD", "NE", "CZ"],
    ],
    &[["N", "CA", "CB", "CG"], ["CA", "CB", "CG", "OD1"]],
    &[["N", "CA", "CB", "CG"], ["CA", "CB", "CG", "OD1"]],
    &[["N", "CA", "CB", "SG"]],
    &[
        ["N", "CA", "CB", "CG"],
        ["CA", "CB", "CG", "CD"],
        ["CB", "CG", "CD", "OE1"],
    ],
    &[
        ["N", "CA", "CB", "CG"],
        ["CA", "CB", "CG", "CD"],
        ["CB", "CG", "CD", "OE1"],
    ],
    &[],
    &[["N", "CA", "CB", "CG"], ["CA", "CB", "CG", "ND1"]],
    &[["N", "CA", "CB", "CG1"], ["CA", "CB", "CG1", "CD1"]],
    &[["N", "CA", "CB", "CG"], ["CA", "CB", "CG", "CD1"]],
    &[
        ["N", "CA", "CB", "CG"],
        ["CA", "CB", "CG", "CD"],
        ["CB", "CG", "CD", "CE"],
        ["CG", "CD", "CE", "NZ"],
    ],
    &[
        ["N", "CA", "CB", "CG"],
        ["CA", "CB", "CG", "SD"],
        ["CB", "CG", "SD", "CE"],
    ],
    &[["N", "CA", "CB", "CG"], ["CA", "CB", "CG", "CD1"]],
    &[["N", "CA", "CB", "CG"], ["CA", "CB", "CG", "CD"]],
    &[["N", "CA", "CB", "OG"]],
    &[["N", "CA", "CB", "OG1"]],
    &[["N", "CA", "CB", "CG"], ["CA", "CB", "CG", "CD1"]],
    &[["N", "CA", "CB", "CG"], ["CA", "CB", "CG", "CD1"]],
    &[["N", "CA", "CB", "CG1"]],
];

/// Number of chi angles of a residue type (0 for unknown).
pub fn num_chis(restype: usize) -> usize {
    CHI_ANGLES_ATOMS.get(restype).map_or(0, |c| c.len())
}

/// Whether chi `k` (0-based) of a residue type is pi-periodic: rotating it by pi maps
/// the side chain onto itself up to renaming of symmetric atoms (ASP chi2, GLU chi3,
/// PHE chi2, TYR chi2).
pub fn chi_is_pi_periodic(restype: usize, k: usize) -> bool {
    matches!((restype, k), (3, 1) | (6, 2) | (13, 1) | (18, 1))
}

/// One atom of a residue in ideal geometry: its rigid group and its position in that
/// group's frame (Å). Group ids: 0 backbone, 3 psi, 4..7 chi1..chi4 (1 and 2 hold only
/// hydrogens, which this layout omits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdealAtom {
    /// Atom name (atom37 naming).
    pub name: &'static str,
    /// Rigid group the atom moves with.
    pub group: u8,
    /// Position in the group's local frame.
    pub position: [f32; 3],
}

const fn ia(name: &'static str, group: u8, position: [f32; 3]) -> IdealAtom {
    IdealAtom {
        name,
        group,
        position,
    }
}

/// Ideal atom positions per residue type relative to their rigid group. In each chi frame
/// the x axis runs along the rotation axis (ending at the frame origin) and the atom that
/// defines the dihedral lies in the xy plane with positive y (AlphaFold supplement 1.8).
pub const IDEAL_ATOMS: [&[IdealAtom]; 20] = [
    &[
        ia("N", 0, [-0.525, 1.363, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.526, -0.000, -0.000]),
        ia("CB", 0, [-0.529, -0.774, -1.205]),
        ia("O", 3, [0.627, 1.062, 0.000]),
    ],
    &[
        ia("N", 0, [-0.524, 1.362, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.525, -0.000, -0.000]),
        ia("CB", 0, [-0.524, -0.778, -1.209]),
        ia("O", 3, [0.626, 1.062, 0.000]),
        ia("CG", 4, [0.616, 1.390, -0.000]),
        ia("CD", 5, [0.564, 1.414, 0.000]),
        ia("NE", 6, [0.539, 1.357, -0.000]),
        ia("NH1", 7, [0.206, 2.301, 0.000]),
        ia("NH2", 7, [2.078, 0.978, -0.000]),
        ia("CZ", 7, [0.758, 1.093, -0.000]),
    ],
    &[
        ia("N", 0, [-0.536, 1.357, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.526, -0.000, -0.000]),
        ia("CB", 0, [-0.531, -0.787, -1.200]),
        ia("O", 3, [0.625, 1.062, 0.000]),
        ia("CG", 4, [0.584, 1.399, 0.000]),
        ia("ND2", 5, [0.593, -1.188, 0.001]),
        ia("OD1", 5, [0.633, 1.059, 0.000]),
    ],
    &[
        ia("N", 0, [-0.525, 1.362, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.527, 0.000, -0.000]),
        ia("CB", 0, [-0.526, -0.778, -1.208]),
        ia("O", 3, [0.626, 1.062, -0.000]),
        ia("CG", 4, [0.593, 1.398, -0.000]),
        ia("OD1", 5, [0.610, 1.091, 0.000]),
        ia("OD2", 5, [0.592, -1.101, -0.003]),
    ],
    &[
        ia("N", 0, [-0.522, 1.362, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.524, 0.000, 0.000]),
        ia("CB", 0, [-0.519, -0.773, -1.212]),
        ia("O", 3, [0.625, 1.062, -0.000]),
        ia("SG", 4, [0.728, 1.653, 0.000]),
    ],
    &[
        ia("N", 0, [-0.526, 1.361, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.526, 0.000, 0.000]),
        ia("CB", 0, [-0.525, -0.779, -1.207]),
        ia("O", 3, [0.626, 1.062, -0.000]),
        ia("CG", 4, [0.615, 1.393, 0.000]),
        ia("CD", 5, [0.587, 1.399, -0.000]),
        ia("NE2", 6, [0.593, -1.189, -0.001]),
        ia("OE1", 6, [0.634, 1.060, 0.000]),
    ],
    &[
        ia("N", 0, [-0.528, 1.361, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.526, -0.000, -0.000]),
        ia("CB", 0, [-0.526, -0.781, -1.207]),
        ia("O", 3, [0.626, 1.062, 0.000]),
        ia("CG", 4, [0.615, 1.392, 0.000]),
        ia("CD", 5, [0.600, 1.397, 0.000]),
        ia("OE1", 6, [0.607, 1.095, -0.000]),
        ia("OE2", 6, [0.589, -1.104, -0.001]),
    ],
    &[
        ia("N", 0, [-0.572, 1.337, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.517, -0.000, -0.000]),
        ia("O", 3, [0.626, 1.062, -0.000]),
    ],
    &[
        ia("N", 0, [-0.527, 1.360, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.525, 0.000, 0.000]),
        ia("CB", 0, [-0.525, -0.778, -1.208]),
        ia("O", 3, [0.625, 1.063, 0.000]),
        ia("CG", 4, [0.600, 1.370, -0.000]),
        ia("CD2", 5, [0.889, -1.021, 0.003]),
        ia("ND1", 5, [0.744, 1.160, -0.000]),
        ia("CE1", 5, [2.030, 0.851, 0.002]),
        ia("NE2", 5, [2.145, -0.466, 0.004]),
    ],
    &[
        ia("N", 0, [-0.493, 1.373, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.527, -0.000, -0.000]),
        ia("CB", 0, [-0.536, -0.793, -1.213]),
        ia("O", 3, [0.627, 1.062, -0.000]),
        ia("CG1", 4, [0.534, 1.437, -0.000]),
        ia("CG2", 4, [0.540, -0.785, -1.199]),
        ia("CD1", 5, [0.619, 1.391, 0.000]),
    ],
    &[
        ia("N", 0, [-0.520, 1.363, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.525, -0.000, -0.000]),
        ia("CB", 0, [-0.522, -0.773, -1.214]),
        ia("O", 3, [0.625, 1.063, -0.000]),
        ia("CG", 4, [0.678, 1.371, 0.000]),
        ia("CD1", 5, [0.530, 1.430, -0.000]),
        ia("CD2", 5, [0.535, -0.774, 1.200]),
    ],
    &[
        ia("N", 0, [-0.526, 1.362, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.526, 0.000, 0.000]),
        ia("CB", 0, [-0.524, -0.778, -1.208]),
        ia("O", 3, [0.626, 1.062, -0.000]),
        ia("CG", 4, [0.619, 1.390, 0.000]),
        ia("CD", 5, [0.559, 1.417, 0.000]),
        ia("CE", 6, [0.560, 1.416, 0.000]),
        ia("NZ", 7, [0.554, 1.387, 0.000]),
    ],
    &[
        ia("N", 0, [-0.521, 1.364, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.525, 0.000, 0.000]),
        ia("CB", 0, [-0.523, -0.776, -1.210]),
        ia("O", 3, [0.625, 1.062, -0.000]),
        ia("CG", 4, [0.613, 1.391, -0.000]),
        ia("SD", 5, [0.703, 1.695, 0.000]),
        ia("CE", 6, [0.320, 1.786, -0.000]),
    ],
    &[
        ia("N", 0, [-0.518, 1.363, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.524, 0.000, -0.000]),
        ia("CB", 0, [-0.525, -0.776, -1.212]),
        ia("O", 3, [0.626, 1.062, -0.000]),
        ia("CG", 4, [0.607, 1.377, 0.000]),
        ia("CD1", 5, [0.709, 1.195, -0.000]),
        ia("CD2", 5, [0.706, -1.196, 0.000]),
        ia("CE1", 5, [2.102, 1.198, -0.000]),
        ia("CE2", 5, [2.098, -1.201, -0.000]),
        ia("CZ", 5, [2.794, -0.003, -0.001]),
    ],
    &[
        ia("N", 0, [-0.566, 1.351, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.527, -0.000, 0.000]),
        ia("CB", 0, [-0.546, -0.611, -1.293]),
        ia("O", 3, [0.621, 1.066, 0.000]),
        ia("CG", 4, [0.382, 1.445, 0.0]),
        // The CB-CG-CD angle is opened by 2 degrees against the crystal average so that
        // the ring closes with the ideal N-CD distance.
        ia("CD", 5, [0.477, 1.424, 0.0]),
    ],
    &[
        ia("N", 0, [-0.529, 1.360, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.525, -0.000, -0.000]),
        ia("CB", 0, [-0.518, -0.777, -1.211]),
        ia("O", 3, [0.626, 1.062, -0.000]),
        ia("OG", 4, [0.503, 1.325, 0.000]),
    ],
    &[
        ia("N", 0, [-0.517, 1.364, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.526, 0.000, -0.000]),
        ia("CB", 0, [-0.516, -0.793, -1.215]),
        ia("O", 3, [0.626, 1.062, 0.000]),
        ia("CG2", 4, [0.550, -0.718, -1.228]),
        ia("OG1", 4, [0.472, 1.353, 0.000]),
    ],
    &[
        ia("N", 0, [-0.521, 1.363, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.525, -0.000, 0.000]),
        ia("CB", 0, [-0.523, -0.776, -1.212]),
        ia("O", 3, [0.627, 1.062, 0.000]),
        ia("CG", 4, [0.609, 1.370, -0.000]),
        ia("CD1", 5, [0.824, 1.091, 0.000]),
        ia("CD2", 5, [0.854, -1.148, -0.005]),
        ia("CE2", 5, [2.186, -0.678, -0.007]),
        ia("CE3", 5, [0.622, -2.530, -0.007]),
        ia("NE1", 5, [2.140, 0.690, -0.004]),
        ia("CH2", 5, [3.028, -2.890, -0.013]),
        ia("CZ2", 5, [3.283, -1.543, -0.011]),
        ia("CZ3", 5, [1.715, -3.389, -0.011]),
    ],
    &[
        ia("N", 0, [-0.522, 1.362, 0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.524, -0.000, -0.000]),
        ia("CB", 0, [-0.522, -0.776, -1.213]),
        ia("O", 3, [0.627, 1.062, -0.000]),
        ia("CG", 4, [0.607, 1.382, -0.000]),
        ia("CD1", 5, [0.716, 1.195, -0.000]),
        ia("CD2", 5, [0.713, -1.194, -0.001]),
        ia("CE1", 5, [2.107, 1.200, -0.002]),
        ia("CE2", 5, [2.104, -1.201, -0.003]),
        ia("OH", 5, [4.168, -0.002, -0.005]),
        ia("CZ", 5, [2.791, -0.001, -0.003]),
    ],
    &[
        ia("N", 0, [-0.494, 1.373, -0.000]),
        ia("CA", 0, [0.000, 0.000, 0.000]),
        ia("C", 0, [1.527, -0.000, -0.000]),
        ia("CB", 0, [-0.533, -0.795, -1.213]),
        ia("O", 3, [0.627, 1.062, -0.000]),
        ia("CG1", 4, [0.540, 1.429, -0.000]),
        ia("CG2", 4, [0.533, -0.776, 1.203]),
    ],
];

/// Pairs of atoms whose names swap under the symmetry of a pi-periodic chi, per residue
/// type: ASP OD1/OD2, GLU OE1/OE2, PHE and TYR CD1/CD2 and CE1/CE2.
pub fn ambiguous_atom_pairs(restype: usize) -> &'static [(&'static str, &'static str)] {
    match restype {
        3 => &[("OD1", "OD2")],
        6 => &[("OE1", "OE2")],
        13 | 18 => &[("CD1", "CD2"), ("CE1", "CE2")],
        _ => &[],
    }
}

/// Van der Waals radius in Å of an element given by the first letter of an atom name
/// (C, N, O, S); `None` for any other element.
pub fn van_der_waals_radius(atom_name: &str) -> Option<f32> {
    match atom_name.as_bytes().first()? {
        b'C' => Some(1.7),
        b'N' => Some(1.55),
        b'O' => Some(1.52),
        b'S' => Some(1.8),
        _ => None,
    }
}

/// Ideal C(i)-N(i+1) peptide bond length in Å: `[general, before proline]`.
pub const BETWEEN_RES_BOND_LENGTH_C_N: [f32; 2] = [1.329, 1.341];
/// Standard deviation of [`BETWEEN_RES_BOND_LENGTH_C_N`].
pub const BETWEEN_RES_BOND_LENGTH_STDDEV_C_N: [f32; 2] = [0.014, 0.016];
/// Cosine of the C(i)-N(i+1)-CA(i+1) angle (121.352° ± 2.315°): `[mean, stddev]`.
pub const BETWEEN_RES_COS_ANGLES_C_N_CA: [f32; 2] = [-0.5203, 0.0353];
/// Cosine of the CA(i)-C(i)-N(i+1) angle (116.568° ± 1.995°): `[mean, stddev]`.
pub const BETWEEN_RES_COS_ANGLES_CA_C_N: [f32; 2] = [-0.4473, 0.0311];
/// Ideal CA(i)-CA(i+1) distance for a trans peptide, in Å.
pub const CA_CA_DISTANCE: f32 = 3.802_097_4;

/// A covalent bond (or a virtual bond spanning a bond angle) with its literature length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bond {
    /// First atom name.
    pub atom1: &'static str,
    /// Second atom name.
    pub atom2: &'static str,
    /// Mean length in Å.
    pub length: f32,
    /// Standard deviation in Å.
    pub stddev: f32,
}

/// A bond angle atom1-atom2-atom3 (atom2 the vertex) with its literature value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BondAngle {
    /// Atom names; the middle one is the vertex.
    pub atoms: [&'static str; 3],
    /// Mean angle in radians.
    pub angle: f32,
    /// Standard deviation in radians.
    pub stddev: f32,
}

/// Intra-residue bond lengths (Å, mean and standard deviation; Engh & Huber 1991
/// stereochemistry). Backbone bonds N-CA, CA-C, C-O are the same for all residues except
/// GLY and PRO and are listed under `*` once. One bond per line: `RES A-B mean sd`.
const BOND_TABLE: &str = "\
* N-CA 1.459 0.020
* CA-C 1.525 0.026
* C-O 1.229 0.019
GLY N-CA 1.456 0.015
GLY CA-C 1.514 0.016
GLY C-O 1.232 0.016
PRO N-CA 1.468 0.017
PRO CA-C 1.524 0.020
PRO C-O 1.228 0.020
ALA CA-CB 1.520 0.021
ARG CA-CB 1.535 0.022
ARG CB-CG 1.521 0.027
ARG CG-CD 1.515 0.025
ARG CD-NE 1.460 0.017
ARG NE-CZ 1.326 0.013
ARG CZ-NH1 1.326 0.013
ARG CZ-NH2 1.326 0.013
ASN CA-CB 1.527 0.026
ASN CB-CG 1.506 0.023
ASN CG-OD1 1.235 0.022
ASN CG-ND2 1.324 0.025
ASP CA-CB 1.535 0.022
ASP CB-CG 1.513 0.021
ASP CG-OD1 1.249 0.023
ASP CG-OD2 1.249 0.023
CYS CA-CB 1.526 0.013
CYS CB-SG 1.812 0.016
GLU CA-CB 1.535 0.022
GLU CB-CG 1.517 0.019
GLU CG-CD 1.515 0.015
GLU CD-OE1 1.252 0.011
GLU CD-OE2 1.252 0.011
GLN CA-CB 1.535 0.022
GLN CB-CG 1.521 0.027
GLN CG-CD 1.506 0.023
GLN CD-OE1 1.235 0.022
GLN CD-NE2 1.324 0.025
HIS CA-CB 1.535 0.022
HIS CB-CG 1.492 0.016
HIS CG-ND1 1.369 0.015
HIS CG-CD2 1.353 0.017
HIS ND1-CE1 1.343 0.025
HIS CD2-NE2 1.415 0.021
HIS CE1-NE2 1.322 0.023
ILE CA-CB 1.544 0.023
ILE CB-CG1 1.536 0.028
ILE CB-CG2 1.524 0.031
ILE CG1-CD1 1.500 0.069
LEU CA-CB 1.533 0.023
LEU CB-CG 1.521 0.029
LEU CG-CD1 1.514 0.037
LEU CG-CD2 1.514 0.037
LYS CA-CB 1.535 0.022
LYS CB-CG 1.521 0.027
LYS CG-CD 1.520 0.034
LYS CD-CE 1.508 0.025
LYS CE-NZ 1.486 0.025
MET CA-CB 1.535 0.022
MET CB-CG 1.509 0.032
MET CG-SD 1.807 0.026
MET SD-CE 1.774 0.056
PHE CA-CB 1.535 0.022
PHE CB-CG 1.509 0.017
PHE CG-CD1 1.383 0.015
PHE CG-CD2 1.383 0.015
PHE CD1-CE1 1.388 0.020
PHE CD2-CE2 1.388 0.020
PHE CE1-CZ 1.369 0.019
PHE CE2-CZ 1.369 0.019
PRO CA-CB 1.531 0.020
PRO CB-CG 1.495 0.050
PRO CG-CD 1.502 0.033
PRO CD-N 1.474 0.014
SER CA-CB 1.525 0.015
SER CB-OG 1.418 0.013
THR CA-CB 1.529 0.026
THR CB-OG1 1.428 0.020
THR CB-CG2 1.519 0.033
TRP CA-CB 1.535 0.022
TRP CB-CG 1.498 0.018
TRP CG-CD1 1.363 0.014
TRP CG-CD2 1.432 0.017
TRP CD1-NE1 1.375 0.017
TRP NE1-CE2 1.371 0.013
TRP CD2-CE2 1.409 0.012
TRP CD2-CE3 1.399 0.015
TRP CE2-CZ2 1.393 0.017
TRP CE3-CZ3 1.380 0.017
TRP CZ2-CH2 1.369 0.019
TRP CZ3-CH2 1.396 0.016
TYR CA-CB 1.535 0.022
TYR CB-CG 1.512 0.015
TYR CG-CD1 1.387 0.013
TYR CG-CD2 1.387 0.013
TYR CD1-CE1 1.389 0.015
TYR CD2-CE2 1.389 0.015
TYR CE1-CZ 1.381 0.013
TYR CE2-CZ 1.381 0.013
TYR CZ-OH 1.374 0.017
VAL CA-CB 1.543 0.021
VAL CB-CG1 1.524 0.021
VAL CB-CG2 1.524 0.021
";

/// Intra-residue bond angles (degrees, mean and standard deviation), same source and
/// layout as [`BOND_TABLE`]: `RES A-B-C mean sd`, B the vertex.
const ANGLE_TABLE: &str = "\
* N-CA-C 111.0 2.7
* CA-C-O 120.1 2.1
GLY N-CA-C 113.1 2.5
GLY CA-C-O 120.6 1.8
PRO N-CA-C 112.1 2.6
PRO CA-C-O 120.2 2.4
ALA N-CA-CB 110.1 1.4
ALA CB-CA-C 110.1 1.5
ARG N-CA-CB 110.6 1.8
ARG CB-CA-C 110.4 2.0
ARG CA-CB-CG 113.4 2.2
ARG CB-CG-CD 111.6 2.6
ARG CG-CD-NE 111.8 2.1
ARG CD-NE-CZ 123.6 1.4
ARG NE-CZ-NH1 120.3 0.5
ARG NE-CZ-NH2 120.3 0.5
ARG NH1-CZ-NH2 119.4 1.1
ASN N-CA-CB 110.6 1.8
ASN CB-CA-C 110.4 2.0
ASN CA-CB-CG 113.4 2.2
ASN CB-CG-ND2 116.7 2.4
ASN CB-CG-OD1 121.6 2.0
ASN ND2-CG-OD1 121.9 2.3
ASP N-CA-CB 110.6 1.8
ASP CB-CA-C 110.4 2.0
ASP CA-CB-CG 113.4 2.2
ASP CB-CG-OD1 118.3 0.9
ASP CB-CG-OD2 118.3 0.9
ASP OD1-CG-OD2 123.3 1.9
CYS N-CA-CB 110.8 1.5
CYS CB-CA-C 111.5 1.2
CYS CA-CB-SG 114.2 1.1
GLU N-CA-CB 110.6 1.8
GLU CB-CA-C 110.4 2.0
GLU CA-CB-CG 113.4 2.2
GLU CB-CG-CD 114.2 2.7
GLU CG-CD-OE1 118.3 2.0
GLU CG-CD-OE2 118.3 2.0
GLU OE1-CD-OE2 123.3 1.2
GLN N-CA-CB 110.6 1.8
GLN CB-CA-C 110.4 2.0
GLN CA-CB-CG 113.4 2.2
GLN CB-CG-CD 111.6 2.6
GLN CG-CD-OE1 121.6 2.0
GLN CG-CD-NE2 116.7 2.4
GLN OE1-CD-NE2 121.9 2.3
HIS N-CA-CB 110.6 1.8
HIS CB-CA-C 110.4 2.0
HIS CA-CB-CG 113.6 1.7
HIS CB-CG-ND1 123.2 2.5
HIS CB-CG-CD2 130.8 3.1
HIS CG-ND1-CE1 108.2 1.4
HIS ND1-CE1-NE2 109.9 2.2
HIS CE1-NE2-CD2 106.6 2.5
HIS NE2-CD2-CG 109.2 1.9
HIS CD2-CG-ND1 106.0 1.4
ILE N-CA-CB 110.8 2.3
ILE CB-CA-C 111.6 2.0
ILE CA-CB-CG1 111.0 1.9
ILE CB-CG1-CD1 113.9 2.8
ILE CA-CB-CG2 110.9 2.0
ILE CG1-CB-CG2 111.4 2.2
LEU N-CA-CB 110.4 2.0
LEU CB-CA-C 110.2 1.9
LEU CA-CB-CG 115.3 2.3
LEU CB-CG-CD1 111.0 1.7
LEU CB-CG-CD2 111.0 1.7
LEU CD1-CG-CD2 110.5 3.0
LYS N-CA-CB 110.6 1.8
LYS CB-CA-C 110.4 2.0
LYS CA-CB-CG 113.4 2.2
LYS CB-CG-CD 111.6 2.6
LYS CG-CD-CE 111.9 3.0
LYS CD-CE-NZ 111.7 2.3
MET N-CA-CB 110.6 1.8
MET CB-CA-C 110.4 2.0
MET CA-CB-CG 113.3 1.7
MET CB-CG-SD 112.4 3.0
MET CG-SD-CE 100.2 1.6
PHE N-CA-CB 110.6 1.8
PHE CB-CA-C 110.4 2.0
PHE CA-CB-CG 113.9 2.4
PHE CB-CG-CD1 120.8 0.7
PHE CB-CG-CD2 120.8 0.7
PHE CD1-CG-CD2 118.3 1.3
PHE CG-CD1-CE1 120.8 1.1
PHE CG-CD2-CE2 120.8 1.1
PHE CD1-CE1-CZ 120.1 1.2
PHE CD2-CE2-CZ 120.1 1.2
PHE CE1-CZ-CE2 120.0 1.8
PRO N-CA-CB 103.3 1.2
PRO CB-CA-C 111.7 2.1
PRO CA-CB-CG 104.8 1.9
PRO CB-CG-CD 106.5 3.9
PRO CG-CD-N 103.2 1.5
PRO CA-N-CD 111.7 1.4
SER N-CA-CB 110.5 1.5
SER CB-CA-C 110.1 1.9
SER CA-CB-OG 111.2 2.7
THR N-CA-CB 110.3 1.9
THR CB-CA-C 111.6 2.7
THR CA-CB-OG1 109.0 2.1
THR CA-CB-CG2 112.4 1.4
THR OG1-CB-CG2 110.0 2.3
TRP N-CA-CB 110.6 1.8
TRP CB-CA-C 110.4 2.0
TRP CA-CB-CG 113.7 1.9
TRP CB-CG-CD1 127.0 1.3
TRP CB-CG-CD2 126.6 1.3
TRP CD1-CG-CD2 106.3 0.8
TRP CG-CD1-NE1 110.1 1.0
TRP CD1-NE1-CE2 109.0 0.9
TRP NE1-CE2-CD2 107.3 1.0
TRP CE2-CD2-CG 107.3 0.8
TRP CG-CD2-CE3 133.9 0.9
TRP NE1-CE2-CZ2 130.4 1.1
TRP CE3-CD2-CE2 118.7 1.2
TRP CD2-CE2-CZ2 122.3 1.2
TRP CE2-CZ2-CH2 117.4 1.0
TRP CZ2-CH2-CZ3 121.6 1.2
TRP CH2-CZ3-CE3 121.2 1.1
TRP CZ3-CE3-CD2 118.8 1.3
TYR N-CA-CB 110.6 1.8
TYR CB-CA-C 110.4 2.0
TYR CA-CB-CG 113.4 1.9
TYR CB-CG-CD1 121.0 0.6
TYR CB-CG-CD2 121.0 0.6
TYR CD1-CG-CD2 117.9 1.1
TYR CG-CD1-CE1 121.3 0.8
TYR CG-CD2-CE2 121.3 0.8
TYR CD1-CE1-CZ 119.8 0.9
TYR CD2-CE2-CZ 119.8 0.9
TYR CE1-CZ-CE2 119.8 1.6
TYR CE1-CZ-OH 120.1 2.7
TYR CE2-CZ-OH 120.1 2.7
VAL N-CA-CB 111.5 2.2
VAL CB-CA-C 111.4 1.9
VAL CA-CB-CG1 110.9 1.5
VAL CA-CB-CG2 110.9 1.5
VAL CG1-CB-CG2 110.9 1.6
";

/// Parses one line of [`BOND_TABLE`] or [`ANGLE_TABLE`] into (residue, atoms, mean, sd).
/// The tables are compile-time constants checked by tests, so a malformed line is a bug.
fn parse_table_line(line: &'static str) -> (&'static str, Vec<&'static str>, f32, f32) {
    let mut fields = line.split_whitespace();
    let mut next = || {
        fields
            .next()
            .expect("stereochemistry table line has 4 fields")
    };
    let residue = next();
    let atoms = next().split('-').collect();
    let mean = next().parse().expect("stereochemistry mean is a number");
    let sd = next().parse().expect("stereochemistry stddev is a number");
    (residue, atoms, mean, sd)
}

/// Rows of a stereochemistry table that apply to `resname`: its own lines, plus the `*`
/// defaults for atom sets it does not list itself.
fn table_rows(table: &'static str, resname: &str) -> Vec<(Vec<&'static str>, f32, f32)> {
    let parsed: Vec<_> = table.lines().map(parse_table_line).collect();
    let own: Vec<_> = parsed
        .iter()
        .filter(|(r, ..)| *r == resname)
        .map(|(_, a, m, s)| (a.clone(), *m, *s))
        .collect();
    let mut rows: Vec<_> = parsed
        .iter()
        .filter(|(r, a, ..)| *r == "*" && !own.iter().any(|(oa, ..)| oa == a))
        .map(|(_, a, m, s)| (a.clone(), *m, *s))
        .collect();
    rows.extend(own);
    rows
}

/// Literature bond lengths within one residue type (empty for unknown).
pub fn residue_bonds(restype: usize) -> Vec<Bond> {
    if restype >= 20 {
        return Vec::new();
    }
    table_rows(BOND_TABLE, RESTYPE_NAMES[restype])
        .into_iter()
        .map(|(atoms, length, stddev)| Bond {
            atom1: atoms[0],
            atom2: atoms[1],
            length,
            stddev,
        })
        .collect()
}

/// Literature bond angles within one residue type (empty for unknown).
pub fn residue_bond_angles(restype: usize) -> Vec<BondAngle> {
    if restype >= 20 {
        return Vec::new();
    }
    table_rows(ANGLE_TABLE, RESTYPE_NAMES[restype])
        .into_iter()
        .map(|(atoms, mean, sd)| BondAngle {
            atoms: [atoms[0], atoms[1], atoms[2]],
            angle: mean.to_radians(),
            stddev: sd.to_radians(),
        })
        .collect()
}

/// Bond angles turned into "virtual bonds" between their outer atoms by the law of
/// cosines, with first-order propagation of the (independent) uncertainties.
pub fn residue_virtual_bonds(restype: usize) -> Vec<Bond> {
    let bonds = residue_bonds(restype);
    let find = |a: &str, b: &str| {
        bonds
            .iter()
            .find(|bd| (bd.atom1 == a && bd.atom2 == b) || (bd.atom1 == b && bd.atom2 == a))
            .copied()
    };
    residue_bond_angles(restype)
        .into_iter()
        .filter_map(|ba| {
            let b1 = find(ba.atoms[0], ba.atoms[1])?;
            let b2 = find(ba.atoms[1], ba.atoms[2])?;
            let (l1, l2, g) = (b1.length as f64, b2.length as f64, ba.angle as f64);
            let length = (l1 * l1 + l2 * l2 - 2.0 * l1 * l2 * g.cos()).sqrt();
            let d_gamma = l1 * l2 * g.sin() / length;
            let d_l1 = (l1 - l2 * g.cos()) / length;
            let d_l2 = (l2 - l1 * g.cos()) / length;
            let stddev = ((d_gamma * ba.stddev as f64).powi(2)
                + (d_l1 * b1.stddev as f64).powi(2)
                + (d_l2 * b2.stddev as f64).powi(2))
            .sqrt();
            Some(Bond {
                atom1: ba.atoms[0],
                atom2: ba.atoms[2],
                length: length as f32,
                stddev: stddev as f32,
            })
        })
        .collect()
}

/// Tables derived once from the constants above, indexed by residue type (0..=20).
/// Absent atoms map to index 0 with a false mask, so gathers stay in bounds.
#[derive(Debug, Clone)]
pub struct ResidueTables {
    /// atom37 index of each atom14 slot.
    pub atom14_to_atom37: [[u8; 14]; 21],
    /// atom14 slot of each atom37 atom.
    pub atom37_to_atom14: [[u8; 37]; 21],
    /// Whether the atom14 slot holds an atom of this residue type.
    pub atom14_mask: [[bool; 14]; 21],
    /// Whether the atom37 slot is an atom of this residue type.
    pub atom37_mask: [[bool; 37]; 21],
    /// Rigid group of each atom14 slot.
    pub atom14_rigid_group: [[u8; 14]; 21],
    /// Ideal position of each atom14 slot in its rigid group's frame.
    pub atom14_ideal_positions: [[[f32; 3]; 14]; 21],
    /// Rigid group of each atom37 slot.
    pub atom37_rigid_group: [[u8; 37]; 21],
    /// Ideal position of each atom37 slot in its rigid group's frame.
    pub atom37_ideal_positions: [[[f32; 3]; 37]; 21],
    /// Frame of each rigid group relative to its parent (backbone for groups 1..=4,
    /// chi(k-1) for chi k), before the group's torsion rotation about x.
    pub default_frames: [[crate::rigid::Rigid; 8]; 21],
    /// atom37 indices of (point on negative x, origin, point in xy plane) per group.
    pub rigid_group_base_atoms: [[[u8; 3]; 8]; 21],
    /// Whether the rigid group exists for the residue type.
    pub rigid_group_mask: [[bool; 8]; 21],
    /// Whether the group's frame is ambiguous by a rotation of pi about x.
    pub rigid_group_is_ambiguous: [[bool; 8]; 21],
    /// atom37 indices of the four atoms of each chi (zeros where absent).
    pub chi_atom37: [[[u8; 4]; 4]; 21],
    /// Whether chi k exists for the residue type.
    pub chi_mask: [[bool; 4]; 21],
    /// Whether chi k is pi-periodic.
    pub chi_pi_periodic: [[bool; 4]; 21],
    /// atom14 permutation swapping the ambiguous atoms (identity elsewhere).
    pub atom14_ambiguous_swap: [[u8; 14]; 21],
    /// Whether the atom14 slot is one of a swappable pair.
    pub atom14_is_ambiguous: [[bool; 14]; 21],
    /// Van der Waals radius per atom14 slot (0 for empty slots).
    pub atom14_vdw_radius: [[f32; 14]; 21],
}

/// The derived tables, built on first use.
pub fn tables() -> &'static ResidueTables {
    static TABLES: std::sync::LazyLock<ResidueTables> = std::sync::LazyLock::new(build_tables);
    &TABLES
}

fn build_tables() -> ResidueTables {
    use crate::rigid::Rigid;
    let mut t = ResidueTables {
        atom14_to_atom37: [[0; 14]; 21],
        atom37_to_atom14: [[0; 37]; 21],
        atom14_mask: [[false; 14]; 21],
        atom37_mask: [[false; 37]; 21],
        atom14_rigid_group: [[0; 14]; 21],
        atom14_ideal_positions: [[[0.0; 3]; 14]; 21],
        atom37_rigid_group: [[0; 37]; 21],
        atom37_ideal_positions: [[[0.0; 3]; 37]; 21],
        default_frames: [[Rigid::IDENTITY; 8]; 21],
        rigid_group_base_atoms: [[[0; 3]; 8]; 21],
        rigid_group_mask: [[false; 8]; 21],
        rigid_group_is_ambiguous: [[false; 8]; 21],
        chi_atom37: [[[0; 4]; 4]; 21],
        chi_mask: [[false; 4]; 21],
        chi_pi_periodic: [[false; 4]; 21],
        atom14_ambiguous_swap: [std::array::from_fn(|i| i as u8); 21],
        atom14_is_ambiguous: [[false; 14]; 21],
        atom14_vdw_radius: [[0.0; 14]; 21],
    };
    let a37 = |name: &str| atom_order(name).expect("residue tables name only atom37 atoms") as u8;
    // Backbone and psi groups exist for every type, unknown included (their atoms are N, CA, C, O).
    for r in 0..21 {
        t.rigid_group_base_atoms[r][0] = [a37("C"), a37("CA"), a37("N")];
        t.rigid_group_base_atoms[r][3] = [a37("CA"), a37("C"), a37("O")];
        t.rigid_group_mask[r][0] = true;
        t.rigid_group_mask[r][3] = true;
    }
    for r in 0..20 {
        for (slot, name) in ATOM14_NAMES[r].iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let i37 = a37(name);
            t.atom14_to_atom37[r][slot] = i37;
            t.atom37_to_atom14[r][i37 as usize] = slot as u8;
            t.atom14_mask[r][slot] = true;
            t.atom37_mask[r][i37 as usize] = true;
            t.atom14_vdw_radius[r][slot] =
                van_der_waals_radius(name).expect("atom14 names are C, N, O or S atoms");
        }
        for atom in IDEAL_ATOMS[r] {
            let i37 = a37(atom.name) as usize;
            t.atom37_rigid_group[r][i37] = atom.group;
            t.atom37_ideal_positions[r][i37] = atom.position;
            let slot = t.atom37_to_atom14[r][i37] as usize;
            t.atom14_rigid_group[r][slot] = atom.group;
            t.atom14_ideal_positions[r][slot] = atom.position;
        }
        for (k, chi) in CHI_ANGLES_ATOMS[r].iter().enumerate() {
            t.chi_atom37[r][k] = chi.map(a37);
            t.chi_mask[r][k] = true;
            t.chi_pi_periodic[r][k] = chi_is_pi_periodic(r, k);
            t.rigid_group_mask[r][4 + k] = true;
            t.rigid_group_base_atoms[r][4 + k] = [a37(chi[1]), a37(chi[2]), a37(chi[3])];
            t.rigid_group_is_ambiguous[r][4 + k] = chi_is_pi_periodic(r, k);
        }
        for &(a, b) in ambiguous_atom_pairs(r) {
            let sa = t.atom37_to_atom14[r][a37(a) as usize];
            let sb = t.atom37_to_atom14[r][a37(b) as usize];
            t.atom14_ambiguous_swap[r][sa as usize] = sb;
            t.atom14_ambiguous_swap[r][sb as usize] = sa;
            t.atom14_is_ambiguous[r][sa as usize] = true;
            t.atom14_is_ambiguous[r][sb as usize] = true;
        }
        // Default frames, from the ideal positions (AlphaFold supplement 1.8, Table 2).
        let pos = |name: &str| t.atom37_ideal_positions[r][a37(name) as usize];
        let frames = &mut t.default_frames[r];
        frames[2] = Rigid::from_axes(
            crate::rigid::sub(pos("N"), pos("CA")),
            [1.0, 0.0, 0.0],
            pos("N"),
        );
        frames[3] = Rigid::from_axes(
            crate::rigid::sub(pos("C"), pos("CA")),
            crate::rigid::sub(pos("CA"), pos("N")),
            pos("C"),
        );
        for (k, chi) in CHI_ANGLES_ATOMS[r].iter().enumerate() {
            frames[4 + k] = if k == 0 {
                Rigid::from_axes(
                    crate::rigid::sub(pos(chi[2]), pos(chi[1])),
                    crate::rigid::sub(pos(chi[0]), pos(chi[1])),
                    pos(chi[2]),
                )
            } else {
                // The axis end atom sits in the previous chi frame; the x axis points at it
                // from that frame's origin and y is chosen so the frame is right-handed.
                let axis_end = pos(chi[2]);
                Rigid::from_axes(axis_end, [-1.0, 0.0, 0.0], axis_end)
            };
        }
    }
    t
}

/// Lower and upper bounds of intra-residue atom14 distances used by the violation loss:
/// bonded pairs (and angle-spanning pairs) get `length ± tolerance_factor · stddev`,
/// other pairs a clash bound `r_vdw(a) + r_vdw(b) − overlap_tolerance` with no upper bound.
#[derive(Debug, Clone)]
pub struct Atom14DistanceBounds {
    /// Lower bound per (restype, slot, slot), Å.
    pub lower: Vec<[[f32; 14]; 14]>,
    /// Upper bound per (restype, slot, slot), Å (`1e10` where unbounded).
    pub upper: Vec<[[f32; 14]; 14]>,
    /// Literature standard deviation of bonded pairs, 0 elsewhere.
    pub stddev: Vec<[[f32; 14]; 14]>,
}

/// Builds [`Atom14DistanceBounds`] for all 21 residue types.
pub fn atom14_distance_bounds(
    overlap_tolerance: f32,
    bond_length_tolerance_factor: f32,
) -> Atom14DistanceBounds {
    let t = tables();
    let mut out = Atom14DistanceBounds {
        lower: vec![[[0.0; 14]; 14]; 21],
        upper: vec![[[0.0; 14]; 14]; 21],
        stddev: vec![[[0.0; 14]; 14]; 21],
    };
    for r in 0..20 {
        for i in 0..14 {
            for j in 0..14 {
                if i == j || !t.atom14_mask[r][i] || !t.atom14_mask[r][j] {
                    continue;
                }
                out.lower[r][i][j] =
                    t.atom14_vdw_radius[r][i] + t.atom14_vdw_radius[r][j] - overlap_tolerance;
                out.upper[r][i][j] = 1e10;
            }
        }
        let slot = |name: &str| atom_order(name).map(|i37| t.atom37_to_atom14[r][i37] as usize);
        for b in residue_bonds(r).into_iter().chain(residue_virtual_bonds(r)) {
            let (Some(i), Some(j)) = (slot(b.atom1), slot(b.atom2)) else {
                continue;
            };
            let lo = b.length - bond_length_tolerance_factor * b.stddev;
            let hi = b.length + bond_length_tolerance_factor * b.stddev;
            for (x, y) in [(i, j), (j, i)] {
                out.lower[r][x][y] = lo;
                out.upper[r][x][y] = hi;
                out.stddev[r][x][y] = b.stddev;
            }
        }
    }
    out
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

    /// The table agrees, for every byte, with the definition: ambiguity codes mapped, then
    /// the position in the alphabet.
    #[test]
    fn msa_id_table_matches_the_definition_for_every_byte() {
        for c in 0..=255u8 {
            let mapped = match c {
                b'B' => b'D',
                b'Z' => b'E',
                b'U' => b'C',
                b'J' | b'O' => b'X',
                other => other,
            };
            let expected = MSA_ALPHABET
                .iter()
                .position(|&a| a == mapped)
                .map(|i| i as u8);
            assert_eq!(msa_id(c), expected, "byte {c}");
        }
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
    #[test]
    fn chi_counts_and_periodicity_match_known_chemistry() {
        let counts: Vec<usize> = (0..21).map(num_chis).collect();
        // A R N D C Q E G H I L K M F P S T W Y V X
        assert_eq!(
            counts,
            [
                0, 4, 2, 2, 1, 3, 3, 0, 2, 2, 2, 4, 3, 2, 2, 1, 1, 2, 2, 1, 0
            ]
        );
        let periodic: Vec<(usize, usize)> = (0..20)
            .flat_map(|r| (0..4).map(move |k| (r, k)))
            .filter(|&(r, k)| chi_is_pi_periodic(r, k))
            .collect();
        assert_eq!(periodic, [(3, 1), (6, 2), (13, 1), (18, 1)]);
        for (r, k) in periodic {
            assert!(k < num_chis(r), "a periodic chi exists");
        }
    }

    #[test]
    fn atom14_layouts_match_ideal_atoms_and_atom37() {
        let t = tables();
        let atom_counts: Vec<usize> = (0..21)
            .map(|r| t.atom14_mask[r].iter().filter(|m| **m).count())
            .collect();
        assert_eq!(
            atom_counts,
            [
                5, 11, 8, 8, 6, 9, 9, 4, 10, 8, 8, 9, 8, 11, 7, 6, 7, 14, 12, 7, 0
            ]
        );
        for r in 0..20 {
            let mut ideal: Vec<&str> = IDEAL_ATOMS[r].iter().map(|a| a.name).collect();
            let mut layout: Vec<&str> = ATOM14_NAMES[r]
                .iter()
                .copied()
                .filter(|n| !n.is_empty())
                .collect();
            ideal.sort();
            layout.sort();
            assert_eq!(ideal, layout, "{}", RESTYPE_NAMES[r]);
            assert_eq!(&ATOM14_NAMES[r][..4], &["N", "CA", "C", "O"]);
            for s in 0..14 {
                if t.atom14_mask[r][s] {
                    let a37 = t.atom14_to_atom37[r][s] as usize;
                    assert_eq!(ATOM_TYPES[a37], ATOM14_NAMES[r][s]);
                    assert_eq!(t.atom37_to_atom14[r][a37] as usize, s);
                }
            }
        }
        // Ambiguous swaps are involutions within the same rigid group.
        for r in 0..21 {
            for s in 0..14 {
                let o = t.atom14_ambiguous_swap[r][s] as usize;
                assert_eq!(t.atom14_ambiguous_swap[r][o] as usize, s);
                assert_eq!(t.atom14_rigid_group[r][o], t.atom14_rigid_group[r][s]);
            }
        }
        assert!(t.atom14_is_ambiguous[restype_index(b'F') as usize][6]);
    }

    #[test]
    fn default_frames_are_proper_rotations() {
        let t = tables();
        for r in 0..21 {
            for f in &t.default_frames[r] {
                assert!((f.determinant() - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn virtual_bonds_and_distance_bounds_follow_the_law_of_cosines() {
        let ala = restype_index(b'A') as usize;
        let n_c = residue_virtual_bonds(ala)
            .into_iter()
            .find(|b| (b.atom1, b.atom2) == ("N", "C"))
            .expect("N-CA-C angle gives an N..C virtual bond");
        // √(1.459² + 1.525² − 2·1.459·1.525·cos 111°) = 2.4595 Å.
        assert!((n_c.length - 2.4595).abs() < 1e-3, "{}", n_c.length);
        let bounds = atom14_distance_bounds(1.5, 12.0);
        // CA (slot 1) – CB (slot 4) of ALA: 1.520 ± 12 · 0.021.
        assert!((bounds.lower[ala][1][4] - (1.520 - 0.252)).abs() < 1e-5);
        assert!((bounds.upper[ala][4][1] - (1.520 + 0.252)).abs() < 1e-5);
        // O (slot 3) – CB (slot 4) are not bonded: clash bound 1.52 + 1.7 − 1.5.
        assert!((bounds.lower[ala][3][4] - 1.72).abs() < 1e-5);
        assert_eq!(bounds.upper[ala][3][4], 1e10);
        assert_eq!(van_der_waals_radius("SG"), Some(1.8));
        assert_eq!(residue_bonds(20).len(), 0);
        assert_eq!(residue_bonds(restype_index(b'G') as usize).len(), 3);
    }
}
