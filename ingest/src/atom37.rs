//! Fast lookup of atom37 slots by atom name, built once from the residue constants.

use std::sync::OnceLock;

use scalefold_featurize::residue_constants::{ATOM_TYPES, atom_order};

/// Packs an atom name of at most four bytes into a `u32` key; longer names have none.
fn pack(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 4 {
        return None;
    }
    let mut key = 0u32;
    for &b in name {
        key = (key << 8) | b as u32;
    }
    Some(key)
}

/// Sorted (packed name, slot) pairs of the 37 atom names.
fn table() -> &'static [(u32, u8)] {
    static TABLE: OnceLock<Vec<(u32, u8)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: Vec<(u32, u8)> = ATOM_TYPES
            .iter()
            .enumerate()
            .filter_map(|(i, n)| pack(n.as_bytes()).map(|k| (k, i as u8)))
            .collect();
        t.sort_unstable();
        t
    })
}

/// The atom37 slot of an atom name, or `None` for names outside the layout.
pub fn slot(name: &[u8]) -> Option<usize> {
    let key = pack(name)?;
    let t = table();
    t.binary_search_by_key(&key, |&(k, _)| k)
        .ok()
        .map(|i| t[i].1 as usize)
}

/// Slot of the sulphur of methionine, where selenomethionine's selenium goes.
pub fn sd_slot() -> usize {
    static SD: OnceLock<usize> = OnceLock::new();
    // SD is one of the 37 names (checked by the test below); 18 is its AlphaFold slot.
    *SD.get_or_init(|| atom_order("SD").unwrap_or(18))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_residue_constants() {
        for (i, name) in ATOM_TYPES.iter().enumerate() {
            assert_eq!(slot(name.as_bytes()), Some(i));
        }
        assert_eq!(Some(sd_slot()), atom_order("SD"));
        for other in ["", "H", "HA", "SE", "OXTT", "CA1"] {
            assert_eq!(slot(other.as_bytes()), None);
        }
    }
}
