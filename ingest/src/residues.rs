//! Collecting the atoms of one residue into the atom37 layout, with the selection rules
//! both structure parsers share.
//!
//! Rules (those of the AlphaFold reference, which reads files through Biopython):
//! - an atom name seen twice without alternate location keeps its first record;
//! - among alternate locations the highest occupancy wins, the first one on a tie;
//! - selenomethionine's `SE` goes to the `SD` slot of `MSE`;
//! - a residue number carrying two residue names (a point mutation) reads as the name
//!   seen last;
//! - arginine's NH1/NH2 are swapped when NH2 is the one closer to CD (a naming error).

use scalefold_featurize::residue_constants::ATOM_TYPE_NUM;

use crate::atom37;

/// Slot states.
const EMPTY: u8 = 0;
const PLAIN: u8 = 1;
const ALTERNATE: u8 = 2;

/// The atom37 slots of one residue name.
#[derive(Debug, Clone)]
struct Slots {
    position: [[f32; 3]; ATOM_TYPE_NUM],
    occupancy: [f32; ATOM_TYPE_NUM],
    state: [u8; ATOM_TYPE_NUM],
}

impl Slots {
    fn new() -> Box<Self> {
        Box::new(Slots {
            position: [[0.0; 3]; ATOM_TYPE_NUM],
            occupancy: [0.0; ATOM_TYPE_NUM],
            state: [EMPTY; ATOM_TYPE_NUM],
        })
    }
}

/// The atoms of one residue (one residue id of one chain), possibly under several names.
#[derive(Debug, Clone)]
pub(crate) struct ResidueAtoms<'a> {
    variants: Vec<(&'a str, Box<Slots>)>,
    selected: usize,
}

/// One atom record offered to a residue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AtomRecord<'a> {
    /// Atom name, e.g. `CA`.
    pub name: &'a [u8],
    /// Position in Å.
    pub position: [f32; 3],
    /// Occupancy (only compared between alternate locations).
    pub occupancy: f32,
    /// Whether the record has a non-blank alternate location id.
    pub has_altloc: bool,
}

impl<'a> ResidueAtoms<'a> {
    /// An empty residue.
    pub fn new() -> Self {
        ResidueAtoms {
            variants: Vec::with_capacity(1),
            selected: 0,
        }
    }

    /// Adds an atom of residue name `residue_name`; that name becomes the selected one.
    /// Atoms outside the atom37 layout are ignored.
    pub fn add(&mut self, residue_name: &'a str, atom: AtomRecord<'_>) {
        let slot = match atom37::slot(atom.name) {
            Some(s) => s,
            None if residue_name == "MSE" && atom.name == b"SE" => atom37::sd_slot(),
            None => {
                self.select(residue_name);
                return;
            }
        };
        let slots = self.select(residue_name);
        let state = slots.state[slot];
        let take = match state {
            EMPTY => true,
            ALTERNATE => atom.has_altloc && atom.occupancy > slots.occupancy[slot],
            _ => false,
        };
        if take {
            slots.position[slot] = atom.position;
            slots.occupancy[slot] = atom.occupancy;
            slots.state[slot] = if atom.has_altloc { ALTERNATE } else { PLAIN };
        }
    }

    fn select(&mut self, residue_name: &'a str) -> &mut Slots {
        let index = match self.variants.iter().position(|(n, _)| *n == residue_name) {
            Some(i) => i,
            None => {
                self.variants.push((residue_name, Slots::new()));
                self.variants.len() - 1
            }
        };
        self.selected = index;
        &mut self.variants[index].1
    }

    /// The selected residue name, if any atom was added.
    pub fn name(&self) -> Option<&'a str> {
        self.variants.get(self.selected).map(|(n, _)| *n)
    }

    /// Writes the selected variant's atom37 positions and mask, applying the arginine
    /// NH1/NH2 fix. Returns the number of atoms set.
    pub fn write_atom37(
        &self,
        positions: &mut [[f32; 3]; ATOM_TYPE_NUM],
        mask: &mut [f32; ATOM_TYPE_NUM],
    ) -> usize {
        let Some((name, slots)) = self.variants.get(self.selected) else {
            return 0;
        };
        let mut count = 0;
        let filled = slots.state.iter().zip(&slots.position);
        for ((state, position), (out_position, out_mask)) in
            filled.zip(positions.iter_mut().zip(mask.iter_mut()))
        {
            if *state != EMPTY {
                *out_position = *position;
                *out_mask = 1.0;
                count += 1;
            }
        }
        if *name == "ARG" {
            fix_arginine(positions, mask);
        }
        count
    }
}

/// Squared distance between two points.
fn distance2(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|k| (a[k] - b[k]) * (a[k] - b[k])).sum()
}

/// Swaps NH1 and NH2 of an arginine when NH2 is closer to CD than NH1.
fn fix_arginine(positions: &mut [[f32; 3]; ATOM_TYPE_NUM], mask: &mut [f32; ATOM_TYPE_NUM]) {
    let (Some(cd), Some(nh1), Some(nh2)) = (
        atom37::slot(b"CD"),
        atom37::slot(b"NH1"),
        atom37::slot(b"NH2"),
    ) else {
        return;
    };
    if mask[cd] > 0.0
        && mask[nh1] > 0.0
        && mask[nh2] > 0.0
        && distance2(positions[nh1], positions[cd]) > distance2(positions[nh2], positions[cd])
    {
        positions.swap(nh1, nh2);
        mask.swap(nh1, nh2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(name: &str, x: f32, occupancy: f32, has_altloc: bool) -> AtomRecord<'_> {
        AtomRecord {
            name: name.as_bytes(),
            position: [x, 0.0, 0.0],
            occupancy,
            has_altloc,
        }
    }

    fn atom37_of(r: &ResidueAtoms<'_>) -> ([[f32; 3]; 37], [f32; 37]) {
        let mut p = [[0.0; 3]; 37];
        let mut m = [0.0; 37];
        r.write_atom37(&mut p, &mut m);
        (p, m)
    }

    #[test]
    fn altloc_highest_occupancy_first_on_tie_and_duplicates_keep_first() {
        let mut r = ResidueAtoms::new();
        r.add("LYS", atom("CA", 1.0, 0.5, true));
        r.add("LYS", atom("CA", 2.0, 0.5, true));
        r.add("LYS", atom("CB", 1.0, 0.3, true));
        r.add("LYS", atom("CB", 2.0, 0.7, true));
        r.add("LYS", atom("N", 1.0, 1.0, false));
        r.add("LYS", atom("N", 2.0, 1.0, false));
        r.add("LYS", atom("HA", 2.0, 1.0, false));
        let (p, m) = atom37_of(&r);
        assert_eq!(p[1][0], 1.0);
        assert_eq!(p[3][0], 2.0);
        assert_eq!(p[0][0], 1.0);
        assert_eq!(m.iter().sum::<f32>(), 3.0);
    }

    #[test]
    fn selenium_goes_to_sd_and_arginine_is_fixed() {
        let mut r = ResidueAtoms::new();
        r.add("MSE", atom("SE", 3.0, 1.0, false));
        let (p, m) = atom37_of(&r);
        assert_eq!((p[18][0], m[18]), (3.0, 1.0));

        let mut arg = ResidueAtoms::new();
        arg.add("ARG", atom("CD", 0.0, 1.0, false));
        arg.add("ARG", atom("NH1", 5.0, 1.0, false));
        arg.add("ARG", atom("NH2", 2.0, 1.0, false));
        let (p, _) = atom37_of(&arg);
        let (nh1, nh2) = (atom37::slot(b"NH1").unwrap(), atom37::slot(b"NH2").unwrap());
        assert_eq!((p[nh1][0], p[nh2][0]), (2.0, 5.0));
    }

    #[test]
    fn point_mutation_reads_as_last_name() {
        let mut r = ResidueAtoms::new();
        r.add("SER", atom("OG", 1.0, 0.5, true));
        r.add("GLY", atom("CA", 1.0, 0.5, true));
        assert_eq!(r.name(), Some("GLY"));
        let (_, m) = atom37_of(&r);
        assert_eq!(m.iter().sum::<f32>(), 1.0);
    }
}
