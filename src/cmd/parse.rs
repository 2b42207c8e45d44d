//! `scalefold parse FILE [--json]`: shows what the parsers read from an mmCIF, PDB, a3m,
//! Stockholm or hhr file.
//!
//! For structures the JSON has the field names of the reference goldens:
//! `{ID: {header: {structure_method, release_date, resolution}, chains: {AUTHOR_ID:
//! {sequence, n_res, resolved_residues, atoms, all_atom_positions, all_atom_mask}}}}`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use scalefold_featurize::inputs::{ChainStructure, Structure, TemplateHit};
use scalefold_ingest::msa::{Alignment, AlignmentFormat};
use scalefold_ingest::{
    Heterogeneity, MmcifOptions, read_alignment, read_hhr, read_mmcif, read_pdb,
};
use serde_json::{Map, Value, json};

/// Arguments of `scalefold parse`.
#[derive(Args, Debug)]
pub struct ParseArgs {
    /// The file: .cif/.cif.gz (mmCIF), .pdb/.ent (PDB format), .a3m, .sto, .hhr (also gzipped).
    pub file: PathBuf,
    /// Print everything as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// mmCIF: keep every residue listed at a heterogeneous position, as the AlphaFold
    /// reference does (default: the first one).
    #[arg(long)]
    pub every_heterogeneous_residue: bool,
}

/// What kind of file a path names.
enum Kind {
    Mmcif,
    Pdb,
    Alignment,
    Hhr,
}

fn kind_of(path: &Path) -> anyhow::Result<Kind> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".cif") || name.ends_with(".mmcif") {
        Ok(Kind::Mmcif)
    } else if name.ends_with(".pdb") || name.ends_with(".ent") {
        Ok(Kind::Pdb)
    } else if AlignmentFormat::from_file_name(name).is_some() {
        Ok(Kind::Alignment)
    } else if name.ends_with(".hhr") {
        Ok(Kind::Hhr)
    } else {
        bail!(
            "{}: unknown file kind (expected .cif, .cif.gz, .pdb, .ent, .a3m, .sto or .hhr)",
            path.display()
        )
    }
}

/// Runs `scalefold parse`.
pub fn run(args: ParseArgs) -> anyhow::Result<()> {
    let path = &args.file;
    let mut out = String::new();
    let output = match kind_of(path)? {
        Kind::Mmcif => {
            let options = MmcifOptions {
                heterogeneity: if args.every_heterogeneous_residue {
                    Heterogeneity::EveryEntry
                } else {
                    Heterogeneity::FirstChoice
                },
            };
            let structure = read_mmcif(path, &options)?;
            if args.json {
                structure_json(&structure, None)
            } else {
                print_structure_summary(&mut out, &structure)?;
                return emit(&out);
            }
        }
        Kind::Pdb => {
            let entry = read_pdb(path)?;
            if args.json {
                structure_json(&entry.structure, Some(&entry.seqres))
            } else {
                for (chain, sequence) in &entry.seqres {
                    writeln!(out, "SEQRES {chain:?}: {sequence}")?;
                }
                print_structure_summary(&mut out, &entry.structure)?;
                return emit(&out);
            }
        }
        Kind::Alignment => {
            let alignment = read_alignment(path)?;
            if args.json {
                alignment_json(&alignment)
            } else {
                writeln!(
                    out,
                    "{}: {} rows × {} columns",
                    path.display(),
                    alignment.len(),
                    alignment.width()
                )?;
                for i in 0..alignment.len().min(10) {
                    let sequence = String::from_utf8_lossy(alignment.row(i));
                    writeln!(out, "{sequence}  {}", alignment.description(i))?;
                }
                return emit(&out);
            }
        }
        Kind::Hhr => {
            let hits = read_hhr(path)?;
            if args.json {
                Value::Array(hits.iter().map(hit_json).collect())
            } else {
                writeln!(out, "{}: {} hits", path.display(), hits.len())?;
                for hit in &hits {
                    writeln!(
                        out,
                        "{:>3} prob {:.3} e {:.2e} sum_probs {:.1} cols {:>3}  {}",
                        hit.index,
                        hit.probability,
                        hit.e_value,
                        hit.sum_probs,
                        hit.aligned_cols,
                        hit.name
                    )?;
                }
                return emit(&out);
            }
        }
    };
    writeln!(
        out,
        "{}",
        serde_json::to_string(&output).context("serialising JSON")?
    )?;
    emit(&out)
}

/// Writes the output; a closed pipe (e.g. `| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Rounds to three decimals, as the goldens store positions.
fn round3(x: f32) -> f64 {
    (x as f64 * 1000.0).round() / 1000.0
}

fn chain_json(chain: &ChainStructure) -> Value {
    let resolved = chain
        .atom_mask
        .iter()
        .filter(|m| m.iter().any(|&v| v > 0.0))
        .count();
    let atoms: f32 = chain.atom_mask.iter().flatten().sum();
    json!({
        "sequence": chain.sequence,
        "n_res": chain.sequence.len(),
        "resolved_residues": resolved,
        "atoms": atoms as u64,
        "residue_index": chain.residue_index,
        "all_atom_positions": chain.atom_positions.iter().map(|r| {
            r.iter().map(|p| p.iter().map(|&c| round3(c)).collect::<Vec<_>>()).collect::<Vec<_>>()
        }).collect::<Vec<_>>(),
        "all_atom_mask": chain.atom_mask.iter().map(|m| m.iter().map(|&v| v as u8).collect::<Vec<_>>()).collect::<Vec<_>>(),
    })
}

fn structure_json(structure: &Structure, seqres: Option<&[(String, String)]>) -> Value {
    let mut header = Map::new();
    header.insert(
        "structure_method".into(),
        json!(structure.header.structure_method),
    );
    if let Some(date) = &structure.header.release_date {
        header.insert("release_date".into(), json!(date));
    }
    header.insert(
        "resolution".into(),
        json!(round3(structure.header.resolution)),
    );
    let chains: Map<String, Value> = structure
        .chains
        .iter()
        .map(|c| (c.chain_id.clone(), chain_json(c)))
        .collect();
    let mut entry = Map::new();
    entry.insert("header".into(), Value::Object(header));
    entry.insert("chains".into(), Value::Object(chains));
    entry.insert(
        "residue_table_version".into(),
        json!(structure.residue_table_version),
    );
    if let Some(seqres) = seqres {
        let seqres: Map<String, Value> =
            seqres.iter().map(|(c, s)| (c.clone(), json!(s))).collect();
        entry.insert("seqres".into(), Value::Object(seqres));
    }
    let mut out = Map::new();
    out.insert(structure.id.clone(), Value::Object(entry));
    Value::Object(out)
}

fn print_structure_summary(out: &mut String, structure: &Structure) -> anyhow::Result<()> {
    let h = &structure.header;
    writeln!(
        out,
        "{}: {} | released {} | resolution {:.2} Å | residue table v{}",
        structure.id,
        h.structure_method,
        h.release_date.as_deref().unwrap_or("(none)"),
        h.resolution,
        structure.residue_table_version
    )?;
    for chain in &structure.chains {
        let resolved = chain
            .atom_mask
            .iter()
            .filter(|m| m.iter().any(|&v| v > 0.0))
            .count();
        let atoms: f32 = chain.atom_mask.iter().flatten().sum();
        writeln!(
            out,
            "chain {:?}: {} residues, {} resolved, {} atoms\n  {}",
            chain.chain_id,
            chain.sequence.len(),
            resolved,
            atoms,
            chain.sequence
        )?;
    }
    Ok(())
}

fn alignment_json(alignment: &Alignment) -> Value {
    let rows = 0..alignment.len();
    json!({
        "rows": alignment.len(),
        "width": alignment.width(),
        "sequences": rows.clone().map(|i| String::from_utf8_lossy(alignment.row(i))).collect::<Vec<_>>(),
        "deletion_matrix": rows.clone().map(|i| alignment.deletion_row(i)).collect::<Vec<_>>(),
        "descriptions": rows.clone().map(|i| alignment.description(i)).collect::<Vec<_>>(),
        "species_ids": rows.map(|i| scalefold_ingest::msa::species_id(alignment.description(i))).collect::<Vec<_>>(),
    })
}

fn hit_json(hit: &TemplateHit) -> Value {
    json!({
        "index": hit.index,
        "name": hit.name,
        "probability": hit.probability,
        "e_value": hit.e_value,
        "score": hit.score,
        "aligned_cols": hit.aligned_cols,
        "sum_probs": hit.sum_probs,
        "query": hit.query,
        "hit_sequence": hit.hit_sequence,
        "indices_query": hit.indices_query,
        "indices_hit": hit.indices_hit,
    })
}
