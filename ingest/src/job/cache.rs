//! The job's shared cache of parsed structure files, kept compact.
//!
//! Every template a chain uses is some entry's structure file, usually one the job also
//! ingests for its own rows, so a file parsed for either use is cached for both. Entries
//! hold each chain's atoms only where they are resolved (a residue fills about 8 of its 37
//! atom37 slots), about a fifth of the memory of a parsed [`Structure`], so the same
//! memory caches five times as many files; a hit expands the entry back to the
//! identical [`Structure`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use scalefold_featurize::inputs::{ChainStructure, Structure, StructureHeader};

/// One chain's atom37 data: the resolved atoms only, or (when the chain's mask is not
/// plain 0.0/1.0 with +0.0 positions under every 0.0, which the parsers never produce)
/// as parsed, so that expansion is exact in every case.
#[derive(Debug)]
enum ChainAtoms {
    /// Bit `a` of `present[r]` is set when atom `a` of residue `r` is resolved (mask 1.0);
    /// `positions` holds the resolved atoms' positions in residue, then atom order.
    Resolved {
        present: Vec<u64>,
        positions: Vec<[f32; 3]>,
    },
    /// The parsed arrays, unchanged.
    AsParsed {
        positions: Vec<[[f32; 3]; 37]>,
        mask: Vec<[f32; 37]>,
    },
}

#[derive(Debug)]
struct CompactChain {
    chain_id: String,
    sequence: String,
    residue_index: Vec<i32>,
    atoms: ChainAtoms,
}

/// A parsed structure with its chains' unresolved atom slots left out.
#[derive(Debug)]
pub struct CompactStructure {
    id: String,
    header: StructureHeader,
    residue_table_version: u32,
    chains: Vec<CompactChain>,
}

fn compact_atoms(chain: &ChainStructure) -> ChainAtoms {
    let plain = chain
        .atom_positions
        .iter()
        .zip(&chain.atom_mask)
        .all(|(xyz, mask)| {
            xyz.iter().zip(mask).all(|(p, &m)| {
                m.to_bits() == 1.0f32.to_bits()
                    || (m.to_bits() == 0 && p.iter().all(|v| v.to_bits() == 0))
            })
        });
    if !plain {
        return ChainAtoms::AsParsed {
            positions: chain.atom_positions.clone(),
            mask: chain.atom_mask.clone(),
        };
    }
    let mut present = Vec::with_capacity(chain.atom_mask.len());
    let mut positions = Vec::new();
    for (xyz, mask) in chain.atom_positions.iter().zip(&chain.atom_mask) {
        let mut bits = 0u64;
        for (a, (p, &m)) in xyz.iter().zip(mask).enumerate() {
            if m != 0.0 {
                bits |= 1 << a;
                positions.push(*p);
            }
        }
        present.push(bits);
    }
    ChainAtoms::Resolved { present, positions }
}

impl CompactStructure {
    /// The compact form of `structure`.
    pub fn new(structure: &Structure) -> Self {
        CompactStructure {
            id: structure.id.clone(),
            header: structure.header.clone(),
            residue_table_version: structure.residue_table_version,
            chains: structure
                .chains
                .iter()
                .map(|c| CompactChain {
                    chain_id: c.chain_id.clone(),
                    sequence: c.sequence.clone(),
                    residue_index: c.residue_index.clone(),
                    atoms: compact_atoms(c),
                })
                .collect(),
        }
    }

    /// The memory it holds, in bytes (its arrays and strings; what the cache's bound counts).
    pub fn heap_bytes(&self) -> usize {
        let header = &self.header;
        let strings = self.id.len()
            + header.structure_method.len()
            + header.release_date.as_ref().map_or(0, String::len);
        let chains: usize = self
            .chains
            .iter()
            .map(|c| {
                let atoms = match &c.atoms {
                    ChainAtoms::Resolved { present, positions } => {
                        size_of_val(present.as_slice()) + size_of_val(positions.as_slice())
                    }
                    ChainAtoms::AsParsed { positions, mask } => {
                        size_of_val(positions.as_slice()) + size_of_val(mask.as_slice())
                    }
                };
                size_of::<CompactChain>()
                    + c.chain_id.len()
                    + c.sequence.len()
                    + size_of_val(c.residue_index.as_slice())
                    + atoms
            })
            .sum();
        size_of::<CompactStructure>() + strings + chains
    }

    /// The ids of its chains, in file order.
    pub fn chain_ids(&self) -> impl Iterator<Item = &str> {
        self.chains.iter().map(|c| c.chain_id.as_str())
    }

    /// The structure it was made from, identical to the bit.
    pub fn expand(&self) -> Structure {
        self.expand_chains(|_| true)
    }

    /// The structure it was made from with only chain `chain_id` (no chain when it has
    /// none of that id): a template lookup needs one chain, and expanding the others
    /// would write their whole atom37 arrays for nothing.
    pub fn expand_chain(&self, chain_id: &str) -> Structure {
        self.expand_chains(|c| c.chain_id == chain_id)
    }

    fn expand_chains(&self, keep: impl Fn(&CompactChain) -> bool) -> Structure {
        let chains = self
            .chains
            .iter()
            .filter(|c| keep(c))
            .map(|c| {
                let (atom_positions, atom_mask) = match &c.atoms {
                    ChainAtoms::AsParsed { positions, mask } => (positions.clone(), mask.clone()),
                    ChainAtoms::Resolved { present, positions } => {
                        let mut xyz = vec![[[0.0f32; 3]; 37]; present.len()];
                        let mut mask = vec![[0.0f32; 37]; present.len()];
                        let mut next = positions.iter();
                        for ((bits, xyz), mask) in present.iter().zip(&mut xyz).zip(&mut mask) {
                            for a in (0..37).filter(|a| bits >> a & 1 == 1) {
                                xyz[a] = next.next().copied().unwrap_or_default();
                                mask[a] = 1.0;
                            }
                        }
                        (xyz, mask)
                    }
                };
                ChainStructure {
                    chain_id: c.chain_id.clone(),
                    sequence: c.sequence.clone(),
                    residue_index: c.residue_index.clone(),
                    atom_positions,
                    atom_mask,
                }
            })
            .collect();
        Structure {
            id: self.id.clone(),
            header: self.header.clone(),
            chains,
            residue_table_version: self.residue_table_version,
        }
    }
}

/// The cache's entries, their insertion order (key, bytes) and the bytes they hold.
#[derive(Default)]
struct CacheState {
    map: HashMap<String, Option<Arc<CompactStructure>>>,
    order: VecDeque<(String, usize)>,
    bytes: usize,
}

/// Parsed structure files shared by all worker threads, keyed by object path, held
/// compact ([`CompactStructure`]) and bounded in bytes (first in, first out). `None`
/// records a file that could not be parsed.
///
/// Invariant: the entries' [`CompactStructure::heap_bytes`] (plus their keys) sum to at
/// most the capacity; an entry larger than the whole capacity is not kept.
pub struct TemplateCache {
    capacity_bytes: usize,
    inner: Mutex<CacheState>,
}

impl std::fmt::Debug for TemplateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateCache")
            .field("capacity_bytes", &self.capacity_bytes)
            .finish_non_exhaustive()
    }
}

impl TemplateCache {
    /// A cache holding at most `capacity_bytes` of parsed structures (0 disables it).
    pub fn new(capacity_bytes: usize) -> Self {
        TemplateCache {
            capacity_bytes,
            inner: Mutex::new(CacheState::default()),
        }
    }

    /// Bytes the cached entries hold now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached structure of the file at `key`, if cached.
    pub fn get(&self, key: &str) -> Option<Option<Arc<CompactStructure>>> {
        self.lock().map.get(key).cloned()
    }

    /// Caches the structure of the file at `key` (`None`: it could not be parsed),
    /// evicting the oldest entries until it fits.
    pub fn insert(&self, key: &str, structure: Option<&Structure>) {
        if self.capacity_bytes == 0 {
            return;
        }
        let compact = structure.map(|s| Arc::new(CompactStructure::new(s)));
        let bytes = key.len() + compact.as_ref().map_or(0, |c| c.heap_bytes());
        if bytes > self.capacity_bytes {
            return;
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.map.contains_key(key) {
            return;
        }
        while state.bytes + bytes > self.capacity_bytes {
            let Some((old, old_bytes)) = state.order.pop_front() else {
                break;
            };
            state.map.remove(&old);
            state.bytes -= old_bytes;
        }
        state.map.insert(key.to_string(), compact);
        state.order.push_back((key.to_string(), bytes));
        state.bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(mask: Vec<[f32; 37]>, positions: Vec<[[f32; 3]; 37]>) -> ChainStructure {
        ChainStructure {
            chain_id: "A".into(),
            sequence: "G".repeat(mask.len()),
            residue_index: (1..=mask.len() as i32).collect(),
            atom_positions: positions,
            atom_mask: mask,
        }
    }

    fn structure(chains: Vec<ChainStructure>) -> Structure {
        Structure {
            id: "1abc".into(),
            header: StructureHeader {
                structure_method: "x-ray diffraction".into(),
                release_date: Some("2001-01-01".into()),
                resolution: 2.0,
            },
            chains,
            residue_table_version: 3,
        }
    }

    #[test]
    fn a_parsed_structure_expands_back_identically() {
        let mut mask = vec![[0.0f32; 37]; 3];
        let mut xyz = vec![[[0.0f32; 3]; 37]; 3];
        for (r, a) in [(0, 0), (0, 1), (0, 36), (2, 5)] {
            mask[r][a] = 1.0;
            xyz[r][a] = [r as f32 + 0.5, -(a as f32), 7.25];
        }
        let s = structure(vec![chain(mask, xyz)]);
        let compact = CompactStructure::new(&s);
        assert!(
            matches!(compact.chains[0].atoms, ChainAtoms::Resolved { ref positions, .. } if positions.len() == 4)
        );
        assert_eq!(compact.expand(), s);
    }

    #[test]
    fn one_chain_expands_alone_and_identically() {
        let mut mask = vec![[0.0f32; 37]; 2];
        let mut xyz = vec![[[0.0f32; 3]; 37]; 2];
        mask[1][2] = 1.0;
        xyz[1][2] = [1.5, 2.5, -3.5];
        let mut b = chain(mask.clone(), xyz.clone());
        b.chain_id = "B".into();
        b.sequence = "AC".into();
        let s = structure(vec![chain(mask, xyz), b.clone()]);
        let compact = CompactStructure::new(&s);
        let only_b = compact.expand_chain("B");
        assert_eq!(only_b.chains, vec![b]);
        assert_eq!((&only_b.id, &only_b.header), (&s.id, &s.header));
        assert!(compact.expand_chain("Z").chains.is_empty());
    }

    #[test]
    fn unusual_masks_and_stray_positions_are_kept_as_parsed() {
        let mut mask = vec![[0.0f32; 37]; 2];
        let mut xyz = vec![[[0.0f32; 3]; 37]; 2];
        mask[0][3] = 0.5;
        xyz[1][4] = [-0.0, 0.0, 0.0];
        let s = structure(vec![chain(mask, xyz)]);
        let compact = CompactStructure::new(&s);
        assert!(matches!(
            compact.chains[0].atoms,
            ChainAtoms::AsParsed { .. }
        ));
        let back = compact.expand();
        assert_eq!(
            back.chains[0].atom_positions[1][4][0].to_bits(),
            (-0.0f32).to_bits()
        );
        assert_eq!(back, s);
    }

    #[test]
    fn the_cache_keeps_the_newest_entries_within_its_bytes() {
        let s = structure(vec![chain(vec![[1.0; 37]; 10], vec![[[2.0; 3]; 37]; 10])]);
        let entry = 1 + CompactStructure::new(&s).heap_bytes();
        // 10 residues × 37 resolved atoms × 12 bytes of positions, at least.
        assert!(entry > 10 * 37 * 12, "{entry}");
        // Room for two entries and a failed parse (its key only), not three entries.
        let cache = TemplateCache::new(2 * entry + 1);
        for key in ["a", "b", "c"] {
            cache.insert(key, Some(&s));
        }
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        assert_eq!(cache.bytes(), 2 * entry);
        cache.insert("d", None);
        assert!(matches!(cache.get("d"), Some(None)));
        assert_eq!(
            cache.get("c").flatten().map(|c| c.expand()),
            Some(s.clone())
        );
        assert_eq!(cache.bytes(), 2 * entry + 1);
        // An entry larger than the whole cache is not kept and evicts nothing.
        let small = TemplateCache::new(entry - 1);
        small.insert("a", Some(&s));
        assert!(small.get("a").is_none() && small.bytes() == 0);
        assert!(TemplateCache::new(0).get("a").is_none());
    }
}
