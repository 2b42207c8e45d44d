//! Synthetic corpora in the real input formats, for demos, tests and benchmarks at scale.
//!
//! [`write_corpus`] writes, under one folder:
//! - `mmcif/<id>.cif` (some gzip-compressed as `<id>.cif.gz`): entries of one to four
//!   protein chains (homomers share an entity), a few waters, header facts (method,
//!   resolution, release date), with ideal-geometry backbones built from
//!   secondary-structure-like phi/psi and side chains from rotamer-like chis, through the
//!   residue constants of `scalefold_featurize`; termini and some internal stretches are
//!   unresolved;
//! - `alignments/<id>_<chain>/a3m/bfd_uniclust_hits.a3m`,
//!   `alignments/<id>_<chain>/uniref90_hits.sto` and
//!   `alignments/<id>_<chain>/hhr/pdb70_hits.hhr` (the OpenProteinSet layout): homologs
//!   with substitutions, deletions and insertions (lowercase in a3m, insert columns in
//!   Stockholm) at depths of tens to thousands of rows, and template hits that point at
//!   other synthetic entries of the same sequence family;
//! - `clusters.txt`: one sequence family per line (chain ids separated by spaces);
//! - `duplicate_chains.txt`: the chains of each homomer (identical sequences), one group
//!   per line, as OpenProteinSet's `duplicate_pdb_chains.txt`.
//!
//! Everything is a pure function of the [`SynthConfig`] (seed included): the corpus plan
//! is drawn first from the seed, then each entry from its own seeded generator, so entries
//! can be generated in parallel and [`generate_entry`] regenerates any entry's files and
//! ground truth on its own (which the tests compare against what the parsers read).

// Residue arrays (atom14 slots, atom37 atoms, query columns) are parallel fixed-size
// arrays indexed together; index loops say that more plainly than zipped iterators.
#![allow(clippy::needless_range_loop)]

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use scalefold_featurize::geometry::{atom14_from_frames, frames_from_torsions};
use scalefold_featurize::inputs::TemplateHit;
use scalefold_featurize::residue_constants::{
    ATOM_TYPE_NUM, ATOM_TYPES, RESTYPES, restype_index, restype_name, tables,
};
use scalefold_featurize::rigid::{Rigid, Vec3, add, cross, norm, normalize, scale, sub};

use crate::job::IngestError;
use crate::msa::Alignment;

/// Settings of a synthetic corpus.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SynthConfig {
    /// Number of protein chains in the corpus (over all entries).
    pub chains: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Shortest chain.
    pub min_length: usize,
    /// Longest chain.
    pub max_length: usize,
    /// Fewest rows of the a3m alignment (depths are log-uniform in the range).
    pub min_msa_depth: usize,
    /// Most rows of the a3m alignment; the Stockholm alignment has at most a quarter.
    pub max_msa_depth: usize,
    /// Fraction of mmCIF files written gzip-compressed.
    pub gzip_fraction: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            chains: 64,
            seed: 0,
            min_length: 40,
            max_length: 400,
            min_msa_depth: 10,
            max_msa_depth: 2000,
            gzip_fraction: 0.2,
        }
    }
}

impl SynthConfig {
    fn check(&self) -> Result<(), IngestError> {
        let bad = |what: &str| Err(IngestError::InvalidArgument(what.to_string()));
        if self.chains == 0 {
            return bad("synth: --chains must be at least 1");
        }
        if self.min_length < 8 || self.min_length > self.max_length {
            return bad("synth: need 8 <= min_length <= max_length");
        }
        if self.min_msa_depth < 1 || self.min_msa_depth > self.max_msa_depth {
            return bad("synth: need 1 <= min_msa_depth <= max_msa_depth");
        }
        if !(0.0..=1.0).contains(&self.gzip_fraction) {
            return bad("synth: gzip_fraction must be within 0..=1");
        }
        Ok(())
    }
}

/// The folder of the mmCIF files inside a corpus.
pub const STRUCTURES_DIR: &str = "mmcif";
/// The folder of the per-chain alignment folders inside a corpus.
pub const ALIGNMENTS_DIR: &str = "alignments";
/// The cluster file inside a corpus.
pub const CLUSTERS_FILE: &str = "clusters.txt";
/// The duplicate-chain file inside a corpus (homomer chains, which share a sequence).
pub const DUPLICATES_FILE: &str = "duplicate_chains.txt";

/// Experimental methods drawn for entries, as `_exptl.method` writes them.
const METHODS: [&str; 3] = ["X-RAY DIFFRACTION", "ELECTRON MICROSCOPY", "SOLUTION NMR"];

/// Background amino-acid frequencies (percent), in [`RESTYPES`] order.
const AA_FREQUENCIES: [f64; 20] = [
    8.25, 5.53, 4.06, 5.45, 1.37, 3.93, 6.75, 7.07, 2.27, 5.96, 9.66, 5.84, 2.42, 3.86, 4.70, 6.56,
    5.34, 1.08, 2.92, 6.87,
];

/// Species codes used in UniProt-style descriptions.
const SPECIES: [&str; 10] = [
    "HUMAN", "MOUSE", "YEAST", "ECOLI", "9BACT", "ARATH", "DROME", "9PSED", "BACSU", "DANRE",
];

/// The plan of one chain: everything other entries need to know about it.
#[derive(Debug, Clone)]
struct ChainPlan {
    /// Author (and label) chain id.
    chain: String,
    /// Entity number (1-based) inside its entry; homomer copies share it.
    entity: usize,
    family: usize,
    /// Offset of the chain's first residue in its family's ancestor.
    offset: usize,
    sequence: String,
}

/// The plan of one entry.
#[derive(Debug, Clone)]
struct EntryPlan {
    id: String,
    chains: Vec<ChainPlan>,
    method: usize,
    resolution: f32,
    release_date: String,
    gzip: bool,
}

/// The whole corpus, drawn from the seed before any file is generated.
#[derive(Debug, Clone)]
pub struct CorpusPlan {
    config: SynthConfig,
    entries: Vec<EntryPlan>,
    /// Per family, the (entry, chain) indices of its members.
    families: Vec<Vec<(usize, usize)>>,
}

impl CorpusPlan {
    /// Draws the plan of a corpus.
    pub fn new(config: &SynthConfig) -> Result<CorpusPlan, IngestError> {
        config.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let aa = WeightedIndex::new(AA_FREQUENCIES).expect("positive weights");
        // Families of about four chains each; a chain takes a window of its family's ancestor.
        let family_count = config.chains.div_ceil(4).max(1);
        let ancestors: Vec<String> = (0..family_count)
            .map(|_| {
                let len = log_uniform(&mut rng, config.min_length, config.max_length) + 10;
                (0..len)
                    .map(|_| RESTYPES[aa.sample(&mut rng)] as char)
                    .collect()
            })
            .collect();
        let mut entries = Vec::new();
        let mut families = vec![Vec::new(); family_count];
        let mut remaining = config.chains;
        while remaining > 0 {
            let want = match rng.random_range(0..10) {
                0..5 => 1,
                5..8 => 2,
                8 => 3,
                _ => 4,
            };
            let count = want.min(remaining);
            remaining -= count;
            let index = entries.len();
            let homomer = count > 1 && rng.random_bool(0.4);
            let mut chains: Vec<ChainPlan> = Vec::with_capacity(count);
            for c in 0..count {
                let chain = chain_name(c);
                if homomer && c > 0 {
                    let first = chains[0].clone();
                    families[first.family].push((index, c));
                    chains.push(ChainPlan { chain, ..first });
                    continue;
                }
                let family = rng.random_range(0..family_count);
                let ancestor = ancestors[family].as_bytes();
                let len = rng
                    .random_range(config.min_length..=config.max_length)
                    .min(ancestor.len());
                let offset = rng.random_range(0..=ancestor.len() - len);
                let sequence = mutate(&mut rng, &aa, &ancestor[offset..offset + len]);
                families[family].push((index, c));
                chains.push(ChainPlan {
                    chain,
                    entity: c + 1,
                    family,
                    offset,
                    sequence,
                });
            }
            let method = match rng.random_range(0..20) {
                0..17 => 0,
                17..19 => 1,
                _ => 2,
            };
            let resolution = match method {
                0 => rng.random_range(0.9f32..4.5),
                1 => rng.random_range(2.0f32..8.0),
                _ => 0.0,
            };
            let resolution = (resolution * 100.0).round() / 100.0;
            let release_date = format!(
                "{}-{:02}-{:02}",
                rng.random_range(1995..2024),
                rng.random_range(1..=12),
                rng.random_range(1..=28)
            );
            entries.push(EntryPlan {
                id: entry_name(index),
                chains,
                method,
                resolution,
                release_date,
                gzip: rng.random_bool(config.gzip_fraction),
            });
        }
        Ok(CorpusPlan {
            config: config.clone(),
            entries,
            families,
        })
    }

    /// Groups of chains with identical sequences (the chains of a homomer), for the
    /// duplicate-chain file.
    pub fn duplicates(&self) -> Vec<Vec<String>> {
        let mut groups = Vec::new();
        for entry in &self.entries {
            let mut by_entity: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
            for chain in &entry.chains {
                by_entity
                    .entry(chain.entity)
                    .or_default()
                    .push(chain_key(entry, chain));
            }
            groups.extend(by_entity.into_values().filter(|g| g.len() > 1));
        }
        groups
    }

    /// Number of entries (mmCIF files).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The lines of the cluster file: each family's chain ids (`{id}_{chain}`).
    pub fn clusters(&self) -> Vec<Vec<String>> {
        self.families
            .iter()
            .filter(|members| !members.is_empty())
            .map(|members| {
                members
                    .iter()
                    .map(|&(e, c)| chain_key(&self.entries[e], &self.entries[e].chains[c]))
                    .collect()
            })
            .collect()
    }
}

/// A generated file: its path relative to the corpus folder and its bytes.
#[derive(Debug, Clone)]
pub struct SynthFile {
    /// Path relative to the corpus root.
    pub path: PathBuf,
    /// File contents (already gzip-compressed for `.gz` names).
    pub bytes: Vec<u8>,
}

/// What synth meant to write for one chain: the ground truth the parsers must recover.
#[derive(Debug, Clone)]
pub struct SynthChain {
    /// `{entry}_{chain}`.
    pub key: String,
    /// Author chain id.
    pub chain_id: String,
    /// Full sequence (one-letter).
    pub sequence: String,
    /// atom37 positions per residue (zeros where unresolved).
    pub atom_positions: Vec<[Vec3; 37]>,
    /// atom37 mask per residue (1.0 resolved).
    pub atom_mask: Vec<[f32; 37]>,
    /// The a3m alignment as the parser must read it.
    pub a3m: Alignment,
    /// The Stockholm alignment as the parser must read it (insert columns removed).
    pub stockholm: Alignment,
    /// The template hits written to the hhr file.
    pub hits: Vec<TemplateHit>,
}

/// One generated entry: its files and the truth of its chains.
#[derive(Debug, Clone)]
pub struct SynthEntry {
    /// Entry id (lowercase, four characters).
    pub id: String,
    /// Method as written (uppercase).
    pub method: String,
    /// Resolution written (0.0 for none).
    pub resolution: f32,
    /// Earliest release date written.
    pub release_date: String,
    /// The chains.
    pub chains: Vec<SynthChain>,
    /// The files: one mmCIF plus three alignment files per chain.
    pub files: Vec<SynthFile>,
}

/// Totals of a written corpus (also written as `synth.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CorpusSummary {
    /// The configuration.
    pub config: SynthConfig,
    /// mmCIF files written.
    pub entries: usize,
    /// Chains written.
    pub chains: usize,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes a corpus under `out` (created if needed), entries in parallel.
pub fn write_corpus(out: &Path, config: &SynthConfig) -> Result<CorpusSummary, IngestError> {
    let plan = CorpusPlan::new(config)?;
    create_dir(out)?;
    let totals = (0..plan.entry_count())
        .into_par_iter()
        .map(|e| -> Result<(usize, usize, u64), IngestError> {
            let entry = generate_entry(&plan, e);
            let mut bytes = 0u64;
            for file in &entry.files {
                let path = out.join(&file.path);
                if let Some(parent) = path.parent() {
                    create_dir(parent)?;
                }
                std::fs::write(&path, &file.bytes).map_err(|source| IngestError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                bytes += file.bytes.len() as u64;
            }
            Ok((entry.chains.len(), entry.files.len(), bytes))
        })
        .try_reduce(|| (0, 0, 0), |a, b| Ok((a.0 + b.0, a.1 + b.1, a.2 + b.2)))?;
    let clusters: String = plan
        .clusters()
        .iter()
        .map(|members| members.join(" ") + "\n")
        .collect();
    write_file(&out.join(CLUSTERS_FILE), clusters.as_bytes())?;
    let duplicates: String = plan
        .duplicates()
        .iter()
        .map(|group| group.join(" ") + "\n")
        .collect();
    write_file(&out.join(DUPLICATES_FILE), duplicates.as_bytes())?;
    let summary = CorpusSummary {
        config: config.clone(),
        entries: plan.entry_count(),
        chains: totals.0,
        files: totals.1 + 2,
        bytes: totals.2 + (clusters.len() + duplicates.len()) as u64,
    };
    let json = serde_json::to_vec_pretty(&summary).expect("a summary serializes");
    write_file(&out.join("synth.json"), &json)?;
    Ok(summary)
}

fn create_dir(path: &Path) -> Result<(), IngestError> {
    std::fs::create_dir_all(path).map_err(|source| IngestError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    std::fs::write(path, bytes).map_err(|source| IngestError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Generates entry `index` of the plan: its files and ground truth.
///
/// # Panics
/// If `index >= plan.entry_count()`.
pub fn generate_entry(plan: &CorpusPlan, index: usize) -> SynthEntry {
    let entry = &plan.entries[index];
    let mut rng = ChaCha8Rng::seed_from_u64(
        plan.config
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(index as u64 + 1),
    );
    let aa = WeightedIndex::new(AA_FREQUENCIES).expect("positive weights");
    let mut chains: Vec<SynthChain> = Vec::with_capacity(entry.chains.len());
    let mut files = Vec::new();
    for (c, chain) in entry.chains.iter().enumerate() {
        let key = chain_key(entry, chain);
        let (atom_positions, atom_mask) = build_chain(&mut rng, &chain.sequence, c);
        let depth = log_uniform(
            &mut rng,
            plan.config.min_msa_depth,
            plan.config.max_msa_depth,
        );
        let sto_depth = log_uniform(
            &mut rng,
            plan.config
                .min_msa_depth
                .min(plan.config.max_msa_depth / 4)
                .max(1),
            (plan.config.max_msa_depth / 4).max(1),
        );
        let (a3m_text, a3m) = a3m_file(&mut rng, &aa, &key, &chain.sequence, depth);
        let (sto_text, stockholm) = stockholm_file(&mut rng, &aa, &key, &chain.sequence, sto_depth);
        let (hits, template_lengths) = template_hits(&mut rng, plan, index, c);
        let hhr_text = hhr_file(&key, &chain.sequence, &hits, &template_lengths);
        let dir = Path::new(ALIGNMENTS_DIR).join(&key);
        files.push(SynthFile {
            path: dir.join("a3m").join("bfd_uniclust_hits.a3m"),
            bytes: a3m_text.into_bytes(),
        });
        files.push(SynthFile {
            path: dir.join("uniref90_hits.sto"),
            bytes: sto_text.into_bytes(),
        });
        files.push(SynthFile {
            path: dir.join("hhr").join("pdb70_hits.hhr"),
            bytes: hhr_text.into_bytes(),
        });
        chains.push(SynthChain {
            key,
            chain_id: chain.chain.clone(),
            sequence: chain.sequence.clone(),
            atom_positions,
            atom_mask,
            a3m,
            stockholm,
            hits,
        });
    }
    let waters = rng.random_range(0..12);
    let cif = mmcif_text(entry, &chains, waters, &mut rng);
    let (name, bytes) = if entry.gzip {
        (format!("{}.cif.gz", entry.id), gzip(cif.as_bytes()))
    } else {
        (format!("{}.cif", entry.id), cif.into_bytes())
    };
    files.insert(
        0,
        SynthFile {
            path: Path::new(STRUCTURES_DIR).join(name),
            bytes,
        },
    );
    SynthEntry {
        id: entry.id.clone(),
        method: METHODS[entry.method].to_string(),
        resolution: entry.resolution,
        release_date: entry.release_date.clone(),
        chains,
        files,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// Entry id of entry `index`: a digit then three base-36 characters (PDB-like).
fn entry_name(index: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let per_lead = 36 * 36 * 36;
    let lead = 1 + (index / per_lead) % 9;
    let mut rest = index % per_lead;
    let mut tail = [b'0'; 3];
    for slot in tail.iter_mut().rev() {
        *slot = DIGITS[rest % 36];
        rest /= 36;
    }
    format!("{lead}{}", std::str::from_utf8(&tail).expect("ascii"))
}

fn chain_name(index: usize) -> String {
    ((b'A' + (index % 26) as u8) as char).to_string()
}

fn chain_key(entry: &EntryPlan, chain: &ChainPlan) -> String {
    format!("{}_{}", entry.id, chain.chain)
}

/// An integer log-uniform in `[low, high]`.
fn log_uniform(rng: &mut impl Rng, low: usize, high: usize) -> usize {
    if low >= high {
        return low;
    }
    let (a, b) = ((low as f64).ln(), (high as f64 + 1.0).ln());
    (rng.random_range(a..b).exp() as usize).clamp(low, high)
}

/// A homolog of `ancestor`: 10–40 % of residues substituted; rarely an unknown residue,
/// and now and then a low-complexity stretch.
fn mutate(rng: &mut impl Rng, aa: &WeightedIndex<f64>, ancestor: &[u8]) -> String {
    let rate = rng.random_range(0.1..0.4);
    let mut out: Vec<u8> = ancestor
        .iter()
        .map(|&a| {
            if rng.random_bool(0.002) {
                b'X'
            } else if rng.random_bool(rate) {
                RESTYPES[aa.sample(rng)]
            } else {
                a
            }
        })
        .collect();
    if rng.random_bool(0.03) {
        // A poly-Q/poly-A tract covering most of the chain (for the composition filter).
        let residue = if rng.random_bool(0.5) { b'Q' } else { b'A' };
        let len = out.len();
        out[len / 10..len - len / 10].fill(residue);
    }
    String::from_utf8(out).expect("ascii")
}

// ---------------------------------------------------------------------------
// Geometry

/// Places atom `d` from `a`, `b`, `c` given the bond `c-d`, the angle `b-c-d` and the
/// dihedral `a-b-c-d` (natural extension reference frame).
fn place(a: Vec3, b: Vec3, c: Vec3, bond: f32, angle: f32, dihedral: f32) -> Vec3 {
    let bc = normalize(sub(c, b));
    let n = normalize(cross(sub(b, a), bc));
    let m = cross(n, bc);
    let local = [
        -bond * angle.cos(),
        bond * angle.sin() * dihedral.cos(),
        bond * angle.sin() * dihedral.sin(),
    ];
    add(
        c,
        add(
            scale(bc, local[0]),
            add(scale(m, local[1]), scale(n, local[2])),
        ),
    )
}

fn angle_between(a: Vec3, b: Vec3) -> f32 {
    (scale(a, 1.0 / norm(a))
        .iter()
        .zip(scale(b, 1.0 / norm(b)))
        .map(|(x, y)| x * y)
        .sum::<f32>())
    .clamp(-1.0, 1.0)
    .acos()
}

/// Backbone torsions (phi, psi) per residue in radians: helix, strand and coil segments.
fn backbone_torsions(rng: &mut impl Rng, n: usize) -> Vec<(f32, f32)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let kind = rng.random_range(0..10);
        let (len, phi, psi, noise) = match kind {
            0..4 => (rng.random_range(8..20), -57.0f32, -47.0f32, 6.0f32),
            4..7 => (rng.random_range(4..10), -120.0, 130.0, 12.0),
            _ => (rng.random_range(2..7), -80.0, 80.0, 60.0),
        };
        for _ in 0..len {
            let jitter = |rng: &mut dyn rand::RngCore| rng.random_range(-noise..=noise);
            out.push((
                (phi + jitter(rng)).to_radians(),
                (psi + jitter(rng)).to_radians(),
            ));
        }
    }
    out.truncate(n);
    out
}

/// Chi angles (radians) of one residue: rotamer-like chi1, free chi2..4; proline's ring
/// puckers.
fn chi_angles(rng: &mut impl Rng, residue: u8) -> [f32; 4] {
    if residue == b'P' {
        let up = rng.random_bool(0.5);
        let (c1, c2) = if up {
            (30.0f32, -35.0f32)
        } else {
            (-30.0, 38.0)
        };
        return [c1.to_radians(), c2.to_radians(), 0.0, 0.0];
    }
    let rotamers = [-60.0f32, 180.0, 60.0];
    let chi1 = rotamers[rng.random_range(0..3)] + rng.random_range(-15.0..15.0);
    let mut chis = [chi1.to_radians(), 0.0, 0.0, 0.0];
    for chi in chis.iter_mut().skip(1) {
        *chi = (rotamers[rng.random_range(0..3)] + rng.random_range(-20.0..20.0)).to_radians();
    }
    chis
}

/// Builds a chain in atom37 with ideal geometry; resolved except the unresolved termini,
/// sometimes an internal stretch, and unknown residues. `chain_index` shifts the chain
/// in space so the chains of an entry do not overlap.
fn build_chain(
    rng: &mut impl Rng,
    sequence: &str,
    chain_index: usize,
) -> (Vec<[Vec3; 37]>, Vec<[f32; 37]>) {
    let t = tables();
    let seq = sequence.as_bytes();
    let n = seq.len();
    let aatype: Vec<u8> = seq.iter().map(|&c| restype_index(c)).collect();
    let torsions = backbone_torsions(rng, n);
    // Ideal backbone of each residue type's frame (CA at the origin, C on +x, N in the
    // xy plane); unknown residues take alanine's.
    let ideal = |i: usize| {
        let r = (aatype[i] as usize).min(19);
        let (ideal_n, ideal_c) = (
            t.atom14_ideal_positions[r][0],
            t.atom14_ideal_positions[r][2],
        );
        (
            ideal_n,
            ideal_c,
            norm(ideal_n),
            norm(ideal_c),
            angle_between(ideal_n, ideal_c),
        )
    };
    let (bond_c_n, angle_ca_c_n, angle_c_n_ca) =
        (1.329f32, 116.2f32.to_radians(), 121.7f32.to_radians());
    let origin = [40.0 * chain_index as f32, 0.0, 0.0];
    let mut backbone = Vec::with_capacity(n);
    let (first_n, first_c, ..) = ideal(0);
    let (mut at_n, mut at_ca, mut at_c) = (add(first_n, origin), origin, add(first_c, origin));
    for i in 0..n {
        if i > 0 {
            let (_, _, bond_n_ca, bond_ca_c, angle_n_ca_c) = ideal(i);
            let next_n = place(at_n, at_ca, at_c, bond_c_n, angle_ca_c_n, torsions[i - 1].1);
            let next_ca = place(
                at_ca,
                at_c,
                next_n,
                bond_n_ca,
                angle_c_n_ca,
                std::f32::consts::PI,
            );
            let next_c = place(
                at_c,
                next_n,
                next_ca,
                bond_ca_c,
                angle_n_ca_c,
                torsions[i].0,
            );
            (at_n, at_ca, at_c) = (next_n, next_ca, next_c);
        }
        backbone.push(Rigid::from_axes(sub(at_c, at_ca), sub(at_n, at_ca), at_ca));
    }
    let sin_cos: Vec<[[f32; 2]; 7]> = (0..n)
        .map(|i| {
            let mut tors = [[0.0f32, 1.0]; 7];
            let psi = torsions[i].1;
            tors[2] = [psi.sin(), psi.cos()];
            for (k, chi) in chi_angles(rng, seq[i]).iter().enumerate() {
                tors[3 + k] = [chi.sin(), chi.cos()];
            }
            tors
        })
        .collect();
    let frames = frames_from_torsions(&aatype, &backbone, &sin_cos);
    let atoms14 = atom14_from_frames(&aatype, &frames);
    // Unresolved: the termini, now and then an internal loop, and every unknown residue.
    let mut resolved = vec![true; n];
    let head = rng.random_range(0..=4.min(n / 4));
    let tail = rng.random_range(0..=4.min(n / 4));
    resolved[..head].fill(false);
    resolved[n - tail..].fill(false);
    if n > 30 && rng.random_bool(0.3) {
        let len = rng.random_range(3..10);
        let start = rng.random_range(n / 4..n / 2);
        resolved[start..start + len].fill(false);
    }
    let mut positions = vec![[[0.0f32; 3]; 37]; n];
    let mut mask = vec![[0.0f32; 37]; n];
    for i in 0..n {
        let r = aatype[i] as usize;
        if r >= 20 || !resolved[i] {
            continue;
        }
        for s in 0..14 {
            if t.atom14_mask[r][s] {
                let a = t.atom14_to_atom37[r][s] as usize;
                positions[i][a] = atoms14[i][s];
                mask[i][a] = 1.0;
            }
        }
    }
    (positions, mask)
}

// ---------------------------------------------------------------------------
// mmCIF

fn quoted(text: &str) -> String {
    if text.contains(' ') {
        format!("'{text}'")
    } else {
        text.to_string()
    }
}

fn three_letter(residue: u8) -> &'static str {
    restype_name(restype_index(residue) as usize)
}

fn mmcif_text(
    entry: &EntryPlan,
    chains: &[SynthChain],
    waters: usize,
    rng: &mut impl Rng,
) -> String {
    use std::fmt::Write as _;
    let id = entry.id.to_uppercase();
    let method = METHODS[entry.method];
    let mut s = String::with_capacity(chains.iter().map(|c| c.sequence.len() * 700).sum());
    let _ = writeln!(s, "data_{id}\n#\n_entry.id {id}\n#");
    let _ = writeln!(
        s,
        "_exptl.entry_id {id}\n_exptl.method {}\n#",
        quoted(method)
    );
    match entry.method {
        0 => {
            let _ = writeln!(
                s,
                "_refine.entry_id {id}\n_refine.ls_d_res_high {:.2}\n#",
                entry.resolution
            );
        }
        1 => {
            let _ = writeln!(
                s,
                "_em_3d_reconstruction.entry_id {id}\n_em_3d_reconstruction.resolution {:.2}\n#",
                entry.resolution
            );
        }
        _ => {}
    }
    let later_year: i32 = entry.release_date[..4].parse::<i32>().expect("a year") + 3;
    let _ = writeln!(
        s,
        "loop_\n_pdbx_audit_revision_history.ordinal\n_pdbx_audit_revision_history.data_content_type\n\
_pdbx_audit_revision_history.major_revision\n_pdbx_audit_revision_history.minor_revision\n\
_pdbx_audit_revision_history.revision_date\n1 'Structure model' 1 1 {later_year}{}\n2 'Structure model' 1 0 {}\n#",
        &entry.release_date[4..],
        entry.release_date
    );
    // Entities: one per distinct entity number, then water.
    let entity_count = entry.chains.iter().map(|c| c.entity).max().unwrap_or(0);
    let water_entity = entity_count + 1;
    s.push_str("loop_\n_entity.id\n_entity.type\n_entity.pdbx_description\n");
    for e in 1..=entity_count {
        let family = entry
            .chains
            .iter()
            .find(|c| c.entity == e)
            .map_or(0, |c| c.family);
        let _ = writeln!(s, "{e} polymer 'Synthetic family {family}'");
    }
    let _ = writeln!(s, "{water_entity} water water\n#");
    s.push_str("loop_\n_entity_poly_seq.entity_id\n_entity_poly_seq.num\n_entity_poly_seq.mon_id\n_entity_poly_seq.hetero\n");
    for e in 1..=entity_count {
        let Some(chain) = entry
            .chains
            .iter()
            .zip(chains)
            .find(|(p, _)| p.entity == e)
            .map(|(_, c)| c)
        else {
            continue;
        };
        for (i, r) in chain.sequence.bytes().enumerate() {
            let _ = writeln!(s, "{e} {} {} n", i + 1, three_letter(r));
        }
    }
    s.push_str("#\nloop_\n_chem_comp.id\n_chem_comp.type\n");
    let mut names: Vec<&str> = chains
        .iter()
        .flat_map(|c| c.sequence.bytes().map(three_letter))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let _ = writeln!(s, "{name} 'L-peptide linking'");
    }
    s.push_str("HOH non-polymer\n#\nloop_\n_struct_asym.id\n_struct_asym.entity_id\n");
    for plan in &entry.chains {
        let _ = writeln!(s, "{} {}", plan.chain, plan.entity);
    }
    let water_asym = chain_name(entry.chains.len());
    if waters > 0 {
        let _ = writeln!(s, "{water_asym} {water_entity}");
    }
    s.push_str(
        "#\nloop_\n_atom_site.group_PDB\n_atom_site.id\n_atom_site.type_symbol\n_atom_site.label_atom_id\n\
_atom_site.label_alt_id\n_atom_site.label_comp_id\n_atom_site.label_asym_id\n_atom_site.label_entity_id\n\
_atom_site.label_seq_id\n_atom_site.pdbx_PDB_ins_code\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n\
_atom_site.Cartn_z\n_atom_site.occupancy\n_atom_site.B_iso_or_equiv\n_atom_site.auth_seq_id\n\
_atom_site.auth_asym_id\n_atom_site.pdbx_PDB_model_num\n",
    );
    let mut serial = 0usize;
    for (plan, chain) in entry.chains.iter().zip(chains) {
        // Author numbering starts at an offset, as deposited files often do.
        let author_offset = (plan.offset % 7) as i64 - 2;
        for (i, r) in chain.sequence.bytes().enumerate() {
            let name = three_letter(r);
            for a in 0..ATOM_TYPE_NUM {
                if chain.atom_mask[i][a] == 0.0 {
                    continue;
                }
                serial += 1;
                let atom = ATOM_TYPES[a];
                let p = chain.atom_positions[i][a];
                let _ = writeln!(
                    s,
                    "ATOM {serial} {} {atom} . {name} {} {} {} ? {:.3} {:.3} {:.3} 1.00 {:.2} {} {} 1",
                    &atom[..1],
                    plan.chain,
                    plan.entity,
                    i + 1,
                    p[0],
                    p[1],
                    p[2],
                    rng.random_range(10.0f32..60.0),
                    i as i64 + 1 + author_offset,
                    plan.chain,
                );
            }
        }
    }
    let first_chain = entry.chains.first().map_or("A", |c| c.chain.as_str());
    for w in 0..waters {
        serial += 1;
        let _ = writeln!(
            s,
            "HETATM {serial} O O . HOH {water_asym} {water_entity} . ? {:.3} {:.3} {:.3} 1.00 30.00 {} {first_chain} 1",
            rng.random_range(-20.0f32..20.0),
            rng.random_range(-20.0f32..20.0),
            rng.random_range(-20.0f32..20.0),
            2001 + w,
        );
    }
    s.push_str("#\n");
    s
}

// ---------------------------------------------------------------------------
// Alignments

/// One homolog row over the query columns: per column the aligned letter (`-` for a
/// deletion or outside the covered range) and the residues inserted before it.
struct HomologRow {
    aligned: Vec<u8>,
    insertions: Vec<Vec<u8>>,
}

fn homolog(rng: &mut impl Rng, aa: &WeightedIndex<f64>, query: &[u8]) -> HomologRow {
    let n = query.len();
    let identity = rng.random_range(0.25..0.95);
    let start = if rng.random_bool(0.5) {
        0
    } else {
        rng.random_range(0..n / 3 + 1)
    };
    let end = if rng.random_bool(0.5) {
        n
    } else {
        rng.random_range((2 * n / 3).max(start + 1)..=n)
    };
    let mut row = HomologRow {
        aligned: vec![b'-'; n],
        insertions: vec![Vec::new(); n],
    };
    for j in start..end {
        if rng.random_bool(0.03) {
            continue;
        }
        row.aligned[j] = if rng.random_bool(identity) && query[j] != b'X' {
            query[j]
        } else {
            RESTYPES[aa.sample(rng)]
        };
        if j > start && rng.random_bool(0.02) {
            let len = rng.random_range(1..6);
            row.insertions[j] = (0..len).map(|_| RESTYPES[aa.sample(rng)]).collect();
        }
    }
    row
}

fn description(rng: &mut impl Rng, row: usize) -> String {
    const ALNUM: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let accession: String = std::iter::once('A')
        .chain((0..9).map(|_| ALNUM[rng.random_range(0..36)] as char))
        .collect();
    if rng.random_bool(0.7) {
        let species = SPECIES[rng.random_range(0..SPECIES.len())];
        format!("tr|{accession}|{accession}_{species} Synthetic homolog {row}")
    } else {
        format!("UniRef100_{accession} Synthetic homolog {row}")
    }
}

/// The deletion counts the parsers must read for a homolog row: its insertion lengths.
fn truth_deletions(row: &HomologRow) -> Vec<u32> {
    row.insertions.iter().map(|i| i.len() as u32).collect()
}

/// An a3m file (query first) and the alignment the parser must read from it.
fn a3m_file(
    rng: &mut impl Rng,
    aa: &WeightedIndex<f64>,
    key: &str,
    query: &str,
    depth: usize,
) -> (String, Alignment) {
    let q = query.as_bytes();
    let mut text = String::with_capacity(depth * (q.len() + 60));
    let mut truth = Alignment::default();
    text.push_str(&format!(">{key}\n{query}\n"));
    truth.push_row(q, &vec![0; q.len()], key);
    for r in 1..depth {
        let row = homolog(rng, aa, q);
        let name = description(rng, r);
        text.push('>');
        text.push_str(&name);
        text.push('\n');
        for (j, &c) in row.aligned.iter().enumerate() {
            text.extend(
                row.insertions[j]
                    .iter()
                    .map(|&i| i.to_ascii_lowercase() as char),
            );
            text.push(c as char);
        }
        text.push('\n');
        truth.push_row(&row.aligned, &truth_deletions(&row), &name);
    }
    (text, truth)
}

/// A Stockholm file with insert columns (query `-`, hits lowercase or `-`) and the
/// alignment the parser must read from it.
fn stockholm_file(
    rng: &mut impl Rng,
    aa: &WeightedIndex<f64>,
    key: &str,
    query: &str,
    depth: usize,
) -> (String, Alignment) {
    let q = query.as_bytes();
    let n = q.len();
    let rows: Vec<HomologRow> = (1..depth).map(|_| homolog(rng, aa, q)).collect();
    let names: Vec<String> = (1..depth)
        .map(|r| {
            format!(
                "UniRef90_S{:06}/{}-{}",
                rng.random_range(0..1_000_000),
                r,
                r + n
            )
        })
        .collect();
    let widths: Vec<usize> = (0..n)
        .map(|j| {
            rows.iter()
                .map(|r| r.insertions[j].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let render = |aligned: &[u8], insertions: Option<&[Vec<u8>]>| -> String {
        let mut line = String::with_capacity(n * 2);
        for j in 0..n {
            let inserted = insertions.map_or(&[][..], |i| i[j].as_slice());
            line.extend(inserted.iter().map(|&c| c.to_ascii_lowercase() as char));
            line.extend(std::iter::repeat_n('-', widths[j] - inserted.len()));
            line.push(aligned[j] as char);
        }
        line
    };
    let name_width = names
        .iter()
        .map(String::len)
        .chain([key.len()])
        .max()
        .unwrap_or(0)
        + 1;
    let mut text = String::with_capacity(depth * (n + name_width + 40));
    text.push_str("# STOCKHOLM 1.0\n\n");
    let mut truth = Alignment::default();
    truth.push_row(q, &vec![0; n], key);
    for (r, name) in names.iter().enumerate() {
        let description = if r % 3 == 0 {
            let de = format!("Synthetic homolog {r}");
            text.push_str(&format!("#=GS {name} DE {de}\n"));
            format!("{name} {de}")
        } else {
            name.clone()
        };
        truth.push_row(&rows[r].aligned, &truth_deletions(&rows[r]), &description);
    }
    text.push('\n');
    text.push_str(&format!("{key:<name_width$}{}\n", render(q, None)));
    for (row, name) in rows.iter().zip(&names) {
        text.push_str(&format!(
            "{name:<name_width$}{}\n",
            render(&row.aligned, Some(&row.insertions))
        ));
    }
    text.push_str(&format!(
        "{:<name_width$}{}\n//\n",
        "#=GC RF",
        "x".repeat(render(q, None).len())
    ));
    (text, truth)
}

/// Template hits of chain `c` of entry `e`: other members of its family (and sometimes
/// itself), aligned over the overlap of their ancestor windows.
/// Also returns each template chain's length.
fn template_hits(
    rng: &mut impl Rng,
    plan: &CorpusPlan,
    e: usize,
    c: usize,
) -> (Vec<TemplateHit>, Vec<usize>) {
    let me = &plan.entries[e].chains[c];
    let mut members: Vec<(usize, usize)> = plan.families[me.family]
        .iter()
        .copied()
        .filter(|&(oe, _)| oe != e || rng.random_bool(0.5))
        .collect();
    members.truncate(8);
    let mut hits = Vec::new();
    let mut lengths = Vec::new();
    for (oe, oc) in members {
        let other = &plan.entries[oe].chains[oc];
        let start = me.offset.max(other.offset);
        let end = (me.offset + me.sequence.len()).min(other.offset + other.sequence.len());
        if end < start + 8 {
            continue;
        }
        let (qs, ts) = (start - me.offset, start - other.offset);
        let len = end - start;
        let query = me.sequence[qs..qs + len].to_string();
        let hit_sequence = other.sequence[ts..ts + len].to_string();
        let identical = query
            .bytes()
            .zip(hit_sequence.bytes())
            .filter(|(a, b)| a == b)
            .count();
        let probability = (50.0 + 50.0 * identical as f32 / len as f32).min(99.9);
        let probability = (probability * 100.0).round() / 100.0;
        lengths.push(other.sequence.len());
        hits.push(TemplateHit {
            index: hits.len() + 1,
            name: format!(
                "{}_{} Synthetic family {}",
                plan.entries[oe].id.to_uppercase(),
                other.chain,
                other.family
            ),
            probability: probability / 100.0,
            e_value: 10f64.powi(-(rng.random_range(3..40))),
            score: ((len as f32 * 1.5) * 10.0).round() / 10.0,
            aligned_cols: len,
            sum_probs: ((identical as f32 * 0.9) * 10.0).round() / 10.0,
            query,
            hit_sequence,
            indices_query: (qs as i32..(qs + len) as i32).collect(),
            indices_hit: (ts as i32..(ts + len) as i32).collect(),
        });
    }
    (hits, lengths)
}

fn hhr_file(key: &str, query: &str, hits: &[TemplateHit], template_lengths: &[usize]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Query         {key}\nMatch_columns {}\nNo_of_seqs    100 out of 120\nNeff          5.0\n\
Searched_HMMs 80799\nDate          synthetic\nCommand       synthetic\n",
        query.len()
    );
    let _ = writeln!(
        s,
        " No Hit                             Prob E-value P-value  Score    SS Cols Query HMM  Template HMM"
    );
    for h in hits {
        let _ = writeln!(
            s,
            "{:>3} {:<30} {:>5.1} {:.1E} {:.1E} {:>6.1}   0.0 {:>4}",
            h.index,
            &h.name[..h.name.len().min(30)],
            h.probability * 100.0,
            h.e_value,
            h.e_value / 1e4,
            h.score,
            h.aligned_cols
        );
    }
    s.push('\n');
    for (h, template_length) in hits.iter().zip(template_lengths) {
        let (q0, t0) = (h.indices_query[0] + 1, h.indices_hit[0] + 1);
        let len = h.query.len() as i32;
        let _ = writeln!(
            s,
            "No {}\n>{}\nProbab={:.2}  E-value={:.1e}  Score={:.2}  Aligned_cols={}  Identities=50%  Similarity=0.500  Sum_probs={:.1}  Template_Neff=5.000\n",
            h.index,
            h.name,
            h.probability * 100.0,
            h.e_value,
            h.score,
            h.aligned_cols,
            h.sum_probs
        );
        // Blocks of 80 columns, as hhsearch writes them.
        for b in (0..len).step_by(80) {
            let e = (b + 80).min(len);
            let q = &h.query[b as usize..e as usize];
            let t = &h.hit_sequence[b as usize..e as usize];
            let hit_id = h.name.split_whitespace().next().unwrap_or("");
            let _ = writeln!(
                s,
                "Q {:<15}{:>4} {q} {:>4} ({})",
                truncate(key, 14),
                q0 + b,
                q0 + e - 1,
                query.len()
            );
            let _ = writeln!(
                s,
                "Q Consensus    {:>4} {} {:>4} ({})",
                q0 + b,
                q.to_lowercase(),
                q0 + e - 1,
                query.len()
            );
            let _ = writeln!(s, "                    {}", "|".repeat(q.len()));
            let _ = writeln!(
                s,
                "T Consensus    {:>4} {} {:>4} ({})",
                t0 + b,
                t.to_lowercase(),
                t0 + e - 1,
                template_length
            );
            let _ = writeln!(
                s,
                "T {:<15}{:>4} {t} {:>4} ({template_length})\n",
                truncate(hit_id, 14),
                t0 + b,
                t0 + e - 1
            );
        }
        s.push('\n');
    }
    s
}

fn truncate(text: &str, max: usize) -> &str {
    &text[..text.len().min(max)]
}
